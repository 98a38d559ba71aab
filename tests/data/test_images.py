"""Image decoding: every flavour becomes upright 8-bit RGB, every broken file a one-line ImageError."""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from fashionlens.data.images import (
    ACCEPTED_FORMATS,
    FORMATS_ENV,
    MAX_IMAGE_PIXELS,
    MAX_PIXELS_ENV,
    DecodeLimits,
    crop_box,
    decode_image,
    decode_reduced,
    load_image,
)
from fashionlens.errors import ConfigError, ImageError


def jpeg_bytes(size: tuple[int, int] = (16, 12), colour: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def png_with_size(width: int, height: int) -> bytes:
    """A 1x1 PNG whose IHDR (with a matching CRC) claims ``width`` x ``height``: a decompression bomb header."""
    buffer = io.BytesIO()
    Image.new("L", (1, 1)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


# Each maker writes a broken file at the given path; the expected words of the error follow.
BAD_FILES: dict[str, tuple[Callable[[Path], object], str]] = {
    "missing": (lambda path: None, "not found"),
    "zero-byte": (lambda path: path.write_bytes(b""), "empty"),
    "truncated-jpeg": (lambda path: path.write_bytes(jpeg_bytes((64, 48))[:300]), "truncated"),
    "text-as-jpeg": (lambda path: path.write_text("id,name\n1,shirt\n"), "not an image"),
    "decompression-bomb": (lambda path: path.write_bytes(png_with_size(20_000, 20_000)), "decompression bomb"),
    "huge-bomb": (lambda path: path.write_bytes(png_with_size(60_000, 60_000)), "decompression bomb"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_files_raise_one_line_image_error_naming_the_file(tmp_path: Path, case: str) -> None:
    make, words = BAD_FILES[case]
    path = tmp_path / f"{case}.jpg"
    make(path)
    with pytest.raises(ImageError, match=words) as raised:
        load_image(path)
    message = str(raised.value)
    assert str(path) in message
    assert "\n" not in message


@pytest.mark.parametrize("case", [c for c in BAD_FILES if c != "missing"])
def test_bad_bytes_name_the_given_source(tmp_path: Path, case: str) -> None:
    make, words = BAD_FILES[case]
    path = tmp_path / "upload.bin"
    make(path)
    with pytest.raises(ImageError, match=words) as raised:
        decode_image(path.read_bytes(), source="customer-photo.jpg")
    assert "customer-photo.jpg" in str(raised.value)


def test_bomb_header_is_refused_before_decoding() -> None:
    assert MAX_IMAGE_PIXELS < 20_000 * 20_000
    with pytest.raises(ImageError, match="<upload>"):
        decode_image(png_with_size(20_000, 20_000))


def test_exif_orientation_is_applied() -> None:
    image = Image.new("RGB", (40, 20), (255, 255, 255))
    image.paste((255, 0, 0), (0, 0, 10, 20))  # a red band on the left of the stored pixels
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif, quality=95)
    decoded = decode_image(buffer.getvalue())
    assert decoded.size == (20, 40)
    pixels = np.asarray(decoded)
    assert pixels[:5, :, 0].mean() > 200 and pixels[:5, :, 1].mean() < 60  # left band is now on top


def test_cmyk_jpeg_becomes_rgb() -> None:
    buffer = io.BytesIO()
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(buffer, format="JPEG", quality=95)  # pure red ink
    decoded = decode_image(buffer.getvalue())
    assert decoded.mode == "RGB"
    np.testing.assert_allclose(np.asarray(decoded).reshape(-1, 3).mean(axis=0), [255, 0, 0], atol=12)


def test_palette_png_transparency_becomes_white() -> None:
    image = Image.new("P", (4, 2), 0)
    image.putpalette([0, 0, 0, 0, 0, 255] + [0] * (254 * 3))  # index 0 black, index 1 blue
    image.paste(1, (2, 0, 4, 2))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", transparency=0)  # black marked transparent
    pixels = np.asarray(decode_image(buffer.getvalue()))
    assert pixels.dtype == np.uint8 and pixels.shape == (2, 4, 3)
    assert (pixels[:, :2] == 255).all()
    assert (pixels[:, 2:] == [0, 0, 255]).all()


def test_rgba_is_composited_on_white() -> None:
    rgba = np.zeros((1, 3, 4), dtype=np.uint8)
    rgba[0] = [[255, 0, 0, 0], [0, 0, 255, 255], [0, 0, 0, 128]]  # invisible red, solid blue, half black
    buffer = io.BytesIO()
    Image.fromarray(rgba, mode="RGBA").save(buffer, format="PNG")
    pixels = np.asarray(decode_image(buffer.getvalue())).astype(int)
    np.testing.assert_array_equal(pixels[0, :2], [[255, 255, 255], [0, 0, 255]])
    np.testing.assert_allclose(pixels[0, 2], [127, 127, 127], atol=2)


def test_16_bit_grayscale_is_scaled_not_clipped(tmp_path: Path) -> None:
    ramp = np.array([[0, 16384, 32768, 65535]], dtype=np.uint16)
    path = tmp_path / "depth.png"
    Image.fromarray(ramp).save(path)
    with Image.open(path) as raw:
        assert raw.mode.startswith("I")
    pixels = np.asarray(decode_image(path))
    assert pixels.dtype == np.uint8 and pixels.shape == (1, 4, 3)
    assert (pixels[..., 0] == pixels[..., 2]).all()  # grey
    np.testing.assert_allclose(pixels[0, :, 0], [0, 64, 128, 255], atol=2)


def test_grayscale_and_rgb_modes(tmp_path: Path) -> None:
    path = tmp_path / "grey.png"
    Image.new("L", (3, 2), 90).save(path)
    decoded = decode_image(str(path))
    assert decoded.mode == "RGB" and decoded.getpixel((0, 0)) == (90, 90, 90)


def two_colour_image(tmp_path: Path) -> Path:
    """100x50: red left half, blue right half."""
    image = Image.new("RGB", (100, 50), (255, 0, 0))
    image.paste((0, 0, 255), (50, 0, 100, 50))
    path = tmp_path / "two.png"
    image.save(path)
    return path


def test_load_image_crops_to_the_box(tmp_path: Path) -> None:
    image = load_image(two_colour_image(tmp_path), bbox=(60.0, 10.0, 90.0, 40.0))
    assert image.size == (30, 30)
    assert set(image.getdata()) == {(0, 0, 255)}


def test_load_image_shrinks_to_max_side(tmp_path: Path) -> None:
    path = two_colour_image(tmp_path)
    assert load_image(path, max_side=40).size == (40, 20)
    assert load_image(path, max_side=500).size == (100, 50)  # never enlarged


def test_crop_box_edge_cases() -> None:
    image = Image.new("RGB", (20, 10))
    assert crop_box(image, None) is image
    assert crop_box(image, (5.0, 5.0, 5.0, 9.0)) is image  # degenerate
    assert crop_box(image, (-5.0, -5.0, 50.0, 50.0)).size == (20, 10)  # clipped to the image
    assert crop_box(image, (4.0, 2.0, 8.0, 6.0), margin=0.5).size == (8, 8)  # widened by half the box


def test_real_high_resolution_photo(shared_data: Path) -> None:
    photo = sorted((shared_data / "fashion-product-images-hires" / "images").glob("*.jpg"))[0]
    image = load_image(photo, max_side=256)
    assert max(image.size) == 256 and image.mode == "RGB"


def quadrant_jpeg(path: Path, size: tuple[int, int] = (1600, 1200), orientation: int | None = None) -> Path:
    """A large JPEG with four flat quadrants (red, green / blue, white) plus a smooth gradient; optionally stored
    rotated, with an EXIF orientation that turns it back upright."""
    width, height = size
    ramp = np.linspace(0, 40, width, dtype=np.float32)[None, :, None]
    pixels = np.zeros((height, width, 3), dtype=np.float32)
    pixels[: height // 2, : width // 2] = (220, 20, 20)
    pixels[: height // 2, width // 2:] = (20, 200, 20)
    pixels[height // 2:, : width // 2] = (20, 20, 220)
    pixels[height // 2:, width // 2:] = (215, 215, 215)
    image = Image.fromarray((pixels + ramp).clip(0, 255).astype(np.uint8))
    exif = Image.Exif()
    if orientation == 6:  # stored rotated 90 CCW; viewers rotate it 90 CW back
        image = image.transpose(Image.Transpose.ROTATE_90)
        exif[0x0112] = 6
    image.save(path, format="JPEG", quality=92, exif=exif)
    return path


def full_decode_reference(path: Path, bbox: tuple[float, float, float, float] | None, max_side: int) -> Image.Image:
    image = crop_box(decode_image(path), bbox)
    image.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
    return image


def test_large_jpeg_is_decoded_at_a_reduced_scale(tmp_path: Path) -> None:
    path = quadrant_jpeg(tmp_path / "big.jpg")
    decoded = decode_reduced(path, max_side=200)
    assert decoded.full_size == (1600, 1200)
    assert decoded.image.size == (200, 150)  # 1/8 scale still leaves the long side at max_side
    assert decoded.scale == pytest.approx(1 / 8)
    assert decode_reduced(path, max_side=900).image.size == (1600, 1200)  # halving would undershoot: full decode
    assert decode_reduced(path).image.size == (1600, 1200)


@pytest.mark.parametrize("orientation", [None, 6], ids=["upright", "exif-rotated"])
@pytest.mark.parametrize("bbox", [None, (850.0, 650.0, 1550.0, 1150.0), (100.0, 50.0, 700.0, 550.0)],
                         ids=["whole", "white-quadrant", "red-quadrant"])
def test_reduced_decode_matches_full_decode(tmp_path: Path, orientation: int | None,
                                            bbox: tuple[float, float, float, float] | None) -> None:
    path = quadrant_jpeg(tmp_path / "big.jpg", orientation=orientation)
    reduced = load_image(path, bbox=bbox, max_side=160)
    reference = full_decode_reference(path, bbox, 160)
    assert abs(reduced.width - reference.width) <= 1 and abs(reduced.height - reference.height) <= 1
    size = (min(reduced.width, reference.width), min(reduced.height, reference.height))
    difference = np.abs(np.asarray(reduced.resize(size), dtype=float) - np.asarray(reference.resize(size), dtype=float))
    assert difference.mean() < 3.0  # same crop, same content: only resampling noise


def test_real_photo_reduced_decode_matches_full_decode(shared_data: Path) -> None:
    photo = sorted((shared_data / "fashion-product-images-hires" / "images").glob("*.jpg"))[0]
    decoded = decode_reduced(photo, max_side=256)
    assert decoded.scale < 1.0 and decoded.full_size == decode_image(photo).size
    reduced, reference = load_image(photo, max_side=256), full_decode_reference(photo, None, 256)
    assert reduced.size == reference.size
    assert np.abs(np.asarray(reduced, dtype=float) - np.asarray(reference, dtype=float)).mean() < 2.0


# ----------------------------------------------------------------------------------------------- limits
def image_bytes(image: Image.Image, image_format: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **options)
    return buffer.getvalue()


@pytest.mark.parametrize("image_format", ["TIFF", "BMP", "PPM", "ICO", "PCX"])
def test_formats_outside_the_allow_list_are_refused_by_name(image_format: str) -> None:
    data = image_bytes(Image.new("RGB", (8, 8), (10, 20, 30)), image_format)
    with pytest.raises(ImageError, match=f"image format {image_format} is not accepted .*: scan.bin"):
        decode_image(data, source="scan.bin")
    accepting = DecodeLimits(formats=ACCEPTED_FORMATS | {image_format})
    assert decode_image(data, limits=accepting).getpixel((0, 0)) == (10, 20, 30)


@pytest.mark.parametrize(("image_format", "options"), [("JPEG", {}), ("PNG", {}), ("WEBP", {"lossless": True}),
                                                       ("GIF", {})])
def test_accepted_formats_decode(image_format: str, options: dict[str, object]) -> None:
    decoded = decode_image(image_bytes(Image.new("RGB", (9, 7), (0, 0, 255)), image_format, **options))
    assert decoded.size == (9, 7) and decoded.mode == "RGB"


def test_animated_gif_gives_its_first_frame() -> None:
    frames = [Image.new("RGB", (6, 4), colour) for colour in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    data = image_bytes(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    assert getattr(Image.open(io.BytesIO(data)), "n_frames", 1) == 3
    assert decode_image(data).getpixel((0, 0)) == (255, 0, 0)


def test_pixel_cap_is_checked_before_decoding_and_configurable(monkeypatch: pytest.MonkeyPatch) -> None:
    data = png_with_size(8000, 6000)  # 48 MP claimed by a 1x1 file: refused from the header, never decoded
    expected = r"image too large to decode \(8000x6000: 48,000,000 pixels to decode, limit 40,000,000\): up"
    with pytest.raises(ImageError, match=expected):
        decode_image(data, source="up")
    small = image_bytes(Image.new("RGB", (100, 50)), "PNG")
    with pytest.raises(ImageError, match="5,000 pixels to decode, limit 4,999"):
        decode_image(small, limits=DecodeLimits(max_pixels=4999))
    assert decode_image(small, limits=DecodeLimits(max_pixels=5000)).size == (100, 50)
    monkeypatch.setenv(MAX_PIXELS_ENV, "4999")
    with pytest.raises(ImageError, match="too large"):
        decode_image(small)
    monkeypatch.setenv(MAX_PIXELS_ENV, "lots")
    with pytest.raises(ConfigError, match=MAX_PIXELS_ENV):
        decode_image(small)


def test_formats_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    tiff = image_bytes(Image.new("RGB", (4, 4)), "TIFF")
    monkeypatch.setenv(FORMATS_ENV, "jpeg, png,tiff")
    assert decode_image(tiff).size == (4, 4)
    with pytest.raises(ImageError, match="format GIF is not accepted"):
        decode_image(image_bytes(Image.new("RGB", (4, 4)), "GIF"))
    monkeypatch.setenv(FORMATS_ENV, "JPEG,NOSUCH")
    with pytest.raises(ConfigError, match=r"unknown image format\(s\) NOSUCH"):
        decode_image(tiff)


def test_a_large_jpeg_passes_the_cap_when_draft_mode_shrinks_it(tmp_path: Path) -> None:
    path = quadrant_jpeg(tmp_path / "big.jpg")  # 1.92 MP
    limits = DecodeLimits(max_pixels=100_000)
    assert decode_reduced(path, max_side=200, limits=limits).image.size == (200, 150)  # 1/8 scale: 30 000 pixels
    with pytest.raises(ImageError, match="too large"):
        decode_reduced(path, limits=limits)


def test_default_cap() -> None:
    assert 16_000 * 16_000 > MAX_IMAGE_PIXELS >= 8000 * 5000


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_of_a_png_with_alpha(orientation: int) -> None:
    stored = Image.new("RGBA", (6, 4), (0, 0, 0, 0))
    stored.paste((255, 0, 0, 255), (0, 0, 1, 1))  # the stored top-left pixel is red; the rest transparent
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = image_bytes(stored, "PNG", exif=exif)
    upright = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGBA")
    reference = Image.alpha_composite(Image.new("RGBA", upright.size, (255, 255, 255, 255)), upright).convert("RGB")
    decoded = decode_reduced(data)
    assert decoded.full_size == reference.size
    np.testing.assert_array_equal(np.asarray(decoded.image), np.asarray(reference))
