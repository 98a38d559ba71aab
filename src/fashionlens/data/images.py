"""Safe image decoding: EXIF orientation, RGB conversion, box crops, and one-line errors for bad files.

Catalogue images come in many flavours (CMYK JPEGs, palette PNGs with transparency, 16-bit PNGs, phone photos stored
sideways with an EXIF rotation flag). :func:`load_image` turns all of them into an upright 8-bit RGB
:class:`PIL.Image.Image`, and turns every way a file can be broken into an :class:`ImageError`.

Decoding is bounded, because uploads are hostile input (a 1 MB PNG can claim 16000 x 16000 RGBA pixels):

* only the formats in :data:`ACCEPTED_FORMATS` are decoded (JPEG, PNG, WebP, GIF's first frame); TIFF, BMP and the
  rest of what PIL knows are refused with an error naming the format;
* the pixels about to be decoded are counted from the header before any decoding and refused above
  :data:`MAX_IMAGE_PIXELS` (40 MP). For a JPEG that is the size after draft mode, so a 50 MP phone photo needed at
  1024 pixels (``max_side``) is decoded at 1/4 or 1/8 scale and accepted;
* conversion to RGB never makes full-size float or four-channel copies: 16-bit data is scaled down in row blocks,
  and transparency is composited by pasting onto one white RGB canvas. At the cap, one decode peaks at about
  7 bytes per pixel (280 MB); a service bounds how many run at once (see :mod:`fashionlens.service.app`).

Both limits can be changed per call (:class:`DecodeLimits`) or for a process with the ``FASHIONLENS_MAX_IMAGE_PIXELS``
and ``FASHIONLENS_IMAGE_FORMATS`` environment variables.
"""

from __future__ import annotations

import io
import math
import os
import struct
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from fashionlens.errors import ConfigError, ImageError

MAX_IMAGE_PIXELS = 40_000_000
"""Most pixels one decode may produce (header size, or JPEG draft size): about 8000 x 5000."""

ACCEPTED_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "GIF"})
"""PIL format names decoded by default. ``MPO`` (the multi-picture JPEG some cameras write) counts as ``JPEG``."""

MAX_PIXELS_ENV = "FASHIONLENS_MAX_IMAGE_PIXELS"
FORMATS_ENV = "FASHIONLENS_IMAGE_FORMATS"

#: Largest header PIL itself opens (its decompression-bomb check, raised from its 89 MP default): a JPEG this large
#: can still be decoded in draft mode within :data:`MAX_IMAGE_PIXELS`; anything larger is refused outright.
_HEADER_PIXELS_CEILING = 16_384 * 16_384
Image.MAX_IMAGE_PIXELS = _HEADER_PIXELS_CEILING

#: Changes whenever decoding changes the pixels it returns, so that caches of features computed from decoded
#: images (see :mod:`fashionlens.features`) are not reused across decoders.
DECODER_ID = "pil-rgb-jpeg-draft-v1"

DECODE_MAX_SIDE = 1024
"""Long side every image is shrunk to right after decoding, before any model transform (:func:`decode_for_model`):
catalogue files, manifest rows, uploads and ONNX inputs alike, so that one photo gets identical features on every
path. Part of the decode policy that :data:`DECODER_ID` names."""

_JPEG_FORMATS = frozenset({"JPEG", "MPO"})
_EXIF_ORIENTATION = 0x0112
#: EXIF orientation -> the transpose that makes the stored pixels upright (as :func:`PIL.ImageOps.exif_transpose`).
_UPRIGHT = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
            5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
            8: Image.Transpose.ROTATE_90}
_SWAPPED_ORIENTATIONS = frozenset({5, 6, 7, 8})
_BLOCK_PIXELS = 1 << 20
"""Pixels per block when 16-bit or float data is scaled to 8 bits: bounds the temporaries to a few MB."""
_WHITE = (255, 255, 255)
#: What PIL raises on malformed data, from its decoders or its Python-level parsers (headers, EXIF, palettes).
_DECODE_FAILURES = (OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError, TypeError, struct.error)


@dataclass(frozen=True)
class DecodeLimits:
    """What one decode may cost: the most decoded pixels, and the accepted PIL formats.

    Attributes:
        max_pixels: Refuse images that would decode to more pixels than this.
        formats: Upper-case PIL format names to decode (``MPO`` passes with ``JPEG``).
    """

    max_pixels: int = MAX_IMAGE_PIXELS
    formats: frozenset[str] = field(default=ACCEPTED_FORMATS)

    def __post_init__(self) -> None:
        if self.max_pixels < 1:
            raise ConfigError(f"the image pixel limit must be >= 1, got {self.max_pixels}")
        Image.init()  # registers every plugin, so that names can be checked
        unknown = sorted(set(self.formats) - set(Image.OPEN))
        if unknown or not self.formats:
            raise ConfigError(f"unknown image format(s) {', '.join(unknown) or '(none given)'}; PIL knows "
                              f"{', '.join(sorted(Image.OPEN))}")

    @classmethod
    def from_env(cls) -> DecodeLimits:
        """The defaults, overridden by ``FASHIONLENS_MAX_IMAGE_PIXELS`` and ``FASHIONLENS_IMAGE_FORMATS`` (comma list).

        Raises:
            ConfigError: A variable is not a positive integer, or names a format PIL does not know.
        """
        pixels, formats = os.environ.get(MAX_PIXELS_ENV, "").strip(), os.environ.get(FORMATS_ENV, "").strip()
        if not pixels and not formats:
            return _DEFAULT_LIMITS
        if pixels and not pixels.isdigit():
            raise ConfigError(f"{MAX_PIXELS_ENV} must be a whole number of pixels, got {pixels!r}")
        return cls(int(pixels) if pixels else MAX_IMAGE_PIXELS,
                   frozenset(f.strip().upper() for f in formats.split(",") if f.strip()) if formats
                   else ACCEPTED_FORMATS)

    def accepts(self, image_format: str | None) -> bool:
        """Whether a file PIL identified as ``image_format`` may be decoded."""
        return ("JPEG" if image_format == "MPO" else image_format) in self.formats


_DEFAULT_LIMITS = DecodeLimits()


def _to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB; transparent areas become white (the usual catalogue background).

    At most one RGB-sized copy is made beside the input (plus an 8-bit grey one for 16-bit and float data).
    """
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        return _to_grey(image).convert("RGB")
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif image.mode == "PA":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA"):
        # Pasting through the alpha band onto white equals compositing over opaque white, pixel for pixel,
        # without the two extra four-channel copies alpha_composite makes.
        canvas = Image.new("RGB", image.size, _WHITE)
        canvas.paste(image, mask=image)
        return canvas
    return image.convert("RGB")


def _to_grey(image: Image.Image) -> Image.Image:
    """16-bit (or 32-bit integer) data divided by 257, or float data stretched over 0..255, as 8-bit grey.

    Integer data whose maximum is <= 255 is 8-bit data stored in a wide mode and kept as is. The work is done in row
    blocks, so the temporaries stay small whatever the image size.
    """
    low, high = (float(v) for v in image.getextrema())  # type: ignore[arg-type]
    divisor = 257.0 if high > 255 else 1.0
    width, height = image.size
    grey = np.empty((height, width), dtype=np.uint8)
    rows = max(1, _BLOCK_PIXELS // max(width, 1))
    for top in range(0, height, rows):
        block = np.asarray(image.crop((0, top, width, min(height, top + rows))), dtype=np.float64)
        if image.mode == "F":
            grey[top : top + rows] = ((block - low) / ((high - low) or 1.0) * 255.0).astype(np.uint8)
        else:
            grey[top : top + rows] = (block / divisor).clip(0, 255).astype(np.uint8)
    return Image.fromarray(grey)


@dataclass(frozen=True)
class DecodedImage:
    """An upright RGB image and the upright size of the file it came from (larger when JPEG draft mode shrank it)."""

    image: Image.Image
    full_size: tuple[int, int]

    @property
    def scale(self) -> float:
        """Decoded width over the file's width: multiply file coordinates (e.g. boxes) by this."""
        return self.image.width / self.full_size[0]


def decode_image(data: bytes | Path | str, source: str | None = None,
                 limits: DecodeLimits | None = None) -> Image.Image:
    """Decode an image from bytes or a path into upright 8-bit RGB at full size.

    Args:
        data: Raw bytes, or a path to an image file.
        source: Name used in error messages (defaults to the path, or ``"<upload>"`` for bytes).
        limits: Pixel cap and accepted formats (default: :meth:`DecodeLimits.from_env`).

    Raises:
        ImageError: The file is missing, empty, truncated, not an image, of a format not accepted, or larger than
            the pixel cap.
    """
    return decode_reduced(data, source, limits=limits).image


def decode_reduced(data: bytes | Path | str, source: str | None = None, max_side: int | None = None,
                   bbox: tuple[float, float, float, float] | None = None,
                   limits: DecodeLimits | None = None) -> DecodedImage:
    """Like :func:`decode_image`, but a large JPEG is decoded straight at 1/2, 1/4 or 1/8 scale when that still
    leaves the long side of ``bbox`` (file coordinates; the whole image without one) at least ``max_side``.

    JPEG's DCT-domain downscaling (PIL's draft mode) skips most of the decoding work, so an 1800x2400 catalogue
    original needed at 1024 pixels decodes several times faster than in full and is then shrunk far less. The pixel
    cap applies to the pixels actually decoded, i.e. after that reduction.

    Raises:
        ImageError: As :func:`decode_image`.
        ConfigError: ``limits`` come from the environment and it is malformed.
    """
    limits = limits or DecodeLimits.from_env()
    payload, source = _read(data, source)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(payload))
            if not limits.accepts(image.format):
                raise ImageError(f"image format {image.format} is not accepted (accepted: "
                                 f"{', '.join(sorted(limits.formats))}): {source}")
            width, height = image.size
            if max_side is not None and image.format in _JPEG_FORMATS:
                swapped = _orientation(image) in _SWAPPED_ORIENTATIONS  # a JPEG's EXIF is in its header
                _request_draft(image, (height, width) if swapped else (width, height), max_side, bbox)
            pixels = image.width * image.height  # what will be decoded: the draft size for a JPEG
            if pixels > limits.max_pixels:
                raise ImageError(f"image too large to decode ({width}x{height}: {pixels:,} pixels to decode, limit "
                                 f"{limits.max_pixels:,}): {source}")
            image.load()
            orientation = _orientation(image)  # only now: a PNG may keep its EXIF after the pixels
            rgb = _to_rgb(image)  # before turning upright: transposing three channels is cheaper than four
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageError(f"refusing possible decompression bomb ({error}): {source}") from error
    except UnidentifiedImageError as error:
        raise ImageError(f"not an image file (unrecognised format): {source}") from error
    except _DECODE_FAILURES as error:
        raise ImageError(f"corrupt or truncated image ({type(error).__name__}: {error}): {source}") from error
    del image  # the full-size original is not needed beside its RGB copy while that is turned upright
    full_size = (height, width) if orientation in _SWAPPED_ORIENTATIONS else (width, height)
    return DecodedImage(rgb.transpose(_UPRIGHT[orientation]) if orientation in _UPRIGHT else rgb, full_size)


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation tag (1, upright, when absent).

    Reading it makes PIL load a PNG's pixels, so sizes must be checked first.
    """
    return int(image.getexif().get(_EXIF_ORIENTATION, 1))


def _read(data: bytes | Path | str, source: str | None) -> tuple[bytes, str]:
    """The bytes to decode and the name errors use; missing and empty inputs are errors."""
    if isinstance(data, (str, os.PathLike)):
        path = Path(data)
        source = source or str(path)
        if not path.is_file():
            raise ImageError(f"image not found: {source}")
        if path.stat().st_size == 0:
            raise ImageError(f"image file is empty (0 bytes): {source}")
        return path.read_bytes(), source
    source = source or "<upload>"
    if not data:
        raise ImageError(f"image is empty (0 bytes): {source}")
    return bytes(data), source
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
    at a reduced scale when that still leaves ``max_side`` pixels (see :func:`decode_reduced`). Model inputs use
    :func:`decode_for_model`, which fixes ``max_side``.
    """
    return _reduce(decode_reduced(path, max_side=max_side, bbox=bbox), bbox, max_side).image


def decode_for_model(data: bytes | Path | str, bbox: tuple[float, float, float, float] | None = None,
                     source: str | None = None, limits: DecodeLimits | None = None) -> DecodedImage:
    """The one decode policy of every model input: bytes or a file in, the same upright RGB pixels out.

    Decodes (bounded by ``limits``), crops to ``bbox`` (file coordinates) and shrinks the long side to
    :data:`DECODE_MAX_SIDE`. The result's ``full_size`` is the upright size of the whole file.

    Raises:
        ImageError: As :func:`decode_image`.
    """
    return _reduce(decode_reduced(data, source, max_side=DECODE_MAX_SIDE, bbox=bbox, limits=limits), bbox,
                   DECODE_MAX_SIDE)


def _reduce(decoded: DecodedImage, bbox: tuple[float, float, float, float] | None,
            max_side: int | None) -> DecodedImage:
    """Crop a decoded image to ``bbox`` (file coordinates, rescaled to a draft decode) and shrink it to ``max_side``."""
    image = decoded.image
    if bbox is not None and decoded.scale != 1.0:
        bbox = (bbox[0] * decoded.scale, bbox[1] * decoded.scale, bbox[2] * decoded.scale, bbox[3] * decoded.scale)
    image = crop_box(image, bbox)
    if max_side is not None and max(image.size) > max_side:
        image.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
    return DecodedImage(image, decoded.full_size)
