"""Safe image decoding: EXIF orientation, RGB conversion, box crops, and one-line errors for bad files.

Catalogue images come in every flavour (CMYK JPEGs, palette PNGs with transparency, 16-bit TIFFs, phone
photos stored sideways with an EXIF rotation flag). :func:`load_image` turns all of them into an upright
8-bit RGB :class:`PIL.Image.Image`, and turns every way a file can be broken into an :class:`ImageError`.
"""

from __future__ import annotations

import io
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from fashionlens.errors import ImageError

#: Largest image (in pixels) decoded without complaint: ~ 16k x 16k. Bigger files are treated as
#: decompression bombs; PIL's own limit is raised to this so that the error comes from us, with a clear text.
MAX_IMAGE_PIXELS = 16_384 * 16_384
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS

#: Changes whenever decoding changes the pixels it returns, so that caches of features computed from decoded
#: images (see :mod:`fashionlens.features`) are not reused across decoders.
DECODER_ID = "pil-rgb-jpeg-draft-v1"

#: EXIF orientations that rotate by 90 or 270 degrees, i.e. swap width and height.
_SWAPPED_ORIENTATIONS = frozenset({5, 6, 7, 8})
_EXIF_ORIENTATION = 0x0112


def _to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB; transparent areas become white (the usual catalogue background)."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float64)
        # 16-bit data spans 0..65535; 8-bit data stored in an integer mode is kept as is.
        divisor = 257.0 if array.size and array.max() > 255 else 1.0
        scaled = (array / divisor).clip(0, 255).astype(np.uint8)
        return Image.fromarray(scaled, mode="L").convert("RGB")
    if image.mode == "F":
        array = np.asarray(image, dtype=np.float64)
        low, high = float(array.min()), float(array.max())
        scaled = ((array - low) / ((high - low) or 1.0) * 255.0).astype(np.uint8)
        return Image.fromarray(scaled, mode="L").convert("RGB")
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, image).convert("RGB")
    return image.convert("RGB")


@dataclass(frozen=True)
class DecodedImage:
    """An upright RGB image and the upright size of the file it came from (larger when JPEG draft mode shrank it)."""

    image: Image.Image
    full_size: tuple[int, int]

    @property
    def scale(self) -> float:
        """Decoded width over the file's width: multiply file coordinates (e.g. boxes) by this."""
        return self.image.width / self.full_size[0]


def decode_image(data: bytes | Path | str, source: str | None = None) -> Image.Image:
    """Decode an image from bytes or a path into upright 8-bit RGB at full size.

    Args:
        data: Raw bytes, or a path to an image file.
        source: Name used in error messages (defaults to the path, or ``"<upload>"`` for bytes).

    Raises:
        ImageError: The file is missing, empty, truncated, not an image, or a decompression bomb.
    """
    return decode_reduced(data, source).image


def decode_reduced(data: bytes | Path | str, source: str | None = None, max_side: int | None = None,
                   bbox: tuple[float, float, float, float] | None = None) -> DecodedImage:
    """Like :func:`decode_image`, but a large JPEG is decoded straight at 1/2, 1/4 or 1/8 scale when that still
    leaves the long side of ``bbox`` (file coordinates; the whole image without one) at least ``max_side``.

    JPEG's DCT-domain downscaling (PIL's draft mode) skips most of the decoding work, so an 1800x2400 catalogue
    original needed at 1024 pixels decodes several times faster than in full and is then shrunk far less.

    Raises:
        ImageError: As :func:`decode_image`.
    """
    if isinstance(data, (str, os.PathLike)):
        path = Path(data)
        source = source or str(path)
        if not path.is_file():
            raise ImageError(f"image not found: {source}")
        if path.stat().st_size == 0:
            raise ImageError(f"image file is empty (0 bytes): {source}")
        payload = path.read_bytes()
    else:
        payload = bytes(data)
        source = source or "<upload>"
        if not payload:
            raise ImageError(f"image is empty (0 bytes): {source}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(payload))
            width, height = image.size
            if width * height > MAX_IMAGE_PIXELS:
                raise ImageError(f"image too large ({width}x{height} pixels, limit {MAX_IMAGE_PIXELS}); "
                                 f"refusing possible decompression bomb: {source}")
            swapped = image.getexif().get(_EXIF_ORIENTATION, 1) in _SWAPPED_ORIENTATIONS
            full_size = (height, width) if swapped else (width, height)
            if max_side is not None and image.format == "JPEG":
                _request_draft(image, full_size, max_side, bbox)
            image.load()
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageError(f"refusing possible decompression bomb ({error}): {source}") from error
    except UnidentifiedImageError as error:
        raise ImageError(f"not an image file (unrecognised format): {source}") from error
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageError(f"corrupt or truncated image ({error}): {source}") from error
    upright: Image.Image = ImageOps.exif_transpose(image) or image
    return DecodedImage(_to_rgb(upright), full_size)


def _request_draft(image: Image.Image, full_size: tuple[int, int], max_side: int,
                   bbox: tuple[float, float, float, float] | None) -> None:
    """Ask the JPEG decoder for the smallest DCT scale that keeps the region's long side >= ``max_side``."""
    region: float = max(full_size)
    if bbox is not None and bbox[2] > bbox[0] and bbox[3] > bbox[1]:
        region = min(region, max(bbox[2] - bbox[0], bbox[3] - bbox[1]))
    if region < 2 * max_side:
        return  # draft can at best halve: nothing to gain
    scale = max_side / region
    # PIL picks the largest reduction whose result is still at least this size (stored, not upright, orientation).
    image.draft("RGB", (math.ceil(image.width * scale), math.ceil(image.height * scale)))


def crop_box(image: Image.Image, bbox: tuple[float, float, float, float] | None,
             margin: float = 0.0) -> Image.Image:
    """Crop ``image`` to ``bbox`` (x0, y0, x1, y1), widened by ``margin`` (fraction of the box), clipped to the image.

    A missing or degenerate box returns the image unchanged.
    """
    if bbox is None:
        return image
    x0, y0, x1, y1 = bbox
    if not (x1 > x0 and y1 > y0):
        return image
    dx, dy = (x1 - x0) * margin, (y1 - y0) * margin
    left, top = max(0, int(round(x0 - dx))), max(0, int(round(y0 - dy)))
    right, bottom = min(image.width, int(round(x1 + dx))), min(image.height, int(round(y1 + dy)))
    if right <= left or bottom <= top:
        return image
    return image.crop((left, top, right, bottom))


def load_image(path: str | Path, bbox: tuple[float, float, float, float] | None = None,
               max_side: int | None = None) -> Image.Image:
    """Load ``path`` as upright RGB, optionally cropped to ``bbox`` and shrunk so its long side is ``max_side``.

    Shrinking right after decoding keeps later transforms cheap on 2400-pixel catalogue originals; JPEGs are decoded
    at a reduced scale when that still leaves ``max_side`` pixels (see :func:`decode_reduced`).
    """
    decoded = decode_reduced(path, max_side=max_side, bbox=bbox)
    image = decoded.image
    if bbox is not None and decoded.scale != 1.0:
        bbox = (bbox[0] * decoded.scale, bbox[1] * decoded.scale, bbox[2] * decoded.scale, bbox[3] * decoded.scale)
    image = crop_box(image, bbox)
    if max_side is not None and max(image.size) > max_side:
        image.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
    return image
