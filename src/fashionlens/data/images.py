"""Safe image decoding: EXIF orientation, RGB conversion, box crops, and one-line errors for bad files.

Catalogue images come in every flavour (CMYK JPEGs, palette PNGs with transparency, 16-bit TIFFs, phone
photos stored sideways with an EXIF rotation flag). :func:`load_image` turns all of them into an upright
8-bit RGB :class:`PIL.Image.Image`, and turns every way a file can be broken into an :class:`ImageError`.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from fashionlens.errors import ImageError

#: Largest image (in pixels) decoded without complaint: ~ 16k x 16k. Bigger files are treated as
#: decompression bombs; PIL's own limit is raised to this so that the error comes from us, with a clear text.
MAX_IMAGE_PIXELS = 16_384 * 16_384
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS


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


def decode_image(data: bytes | Path | str, source: str | None = None) -> Image.Image:
    """Decode an image from bytes or a path into upright 8-bit RGB.

    Args:
        data: Raw bytes, or a path to an image file.
        source: Name used in error messages (defaults to the path, or ``"<upload>"`` for bytes).

    Raises:
        ImageError: The file is missing, empty, truncated, not an image, or a decompression bomb.
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
    return _to_rgb(upright)


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

    Shrinking right after decoding keeps later transforms cheap on 2400-pixel catalogue originals.
    """
    image = decode_image(path)
    image = crop_box(image, bbox)
    if max_side is not None and max(image.size) > max_side:
        image.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
    return image
