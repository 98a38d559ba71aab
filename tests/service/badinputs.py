"""A corpus of hostile and odd inputs for the service and the CLI, generated at test time (nothing binary is committed).

:func:`bad_files` builds image uploads: broken files, odd-but-valid images that must decode, formats outside the
allow-list, and decompression bombs. The bombs are cheap to build: :func:`png` writes a real, valid PNG of any size
row by row through one zlib stream, so a 16000 x 16000 RGBA image is a 1 MB file built without ever holding its
1 GB of pixels. :func:`bad_requests` lists malformed HTTP requests (bodies, multipart, query parameters, item ids,
filters). Each case states what a hardened service answers; a case whose exact status depends on how PIL words a
failure accepts a set of statuses, but never a 5xx.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

OK = frozenset({200})


@dataclass(frozen=True)
class BadFile:
    """One upload: its file name, its bytes, and the statuses a hardened service may answer."""

    name: str
    data: bytes
    statuses: frozenset[int]
    hostile: bool = False
    """A worst case for decoding memory (used by the concurrent-upload RSS test)."""

    @property
    def accepted(self) -> bool:
        return self.statuses == OK


@dataclass(frozen=True)
class BadRequest:
    """One HTTP request and the statuses a hardened service may answer."""

    name: str
    method: str
    url: str
    statuses: frozenset[int]
    params: dict[str, Any] = field(default_factory=dict)
    files: dict[str, tuple[str, bytes, str]] | None = None
    content: bytes | Callable[[], Iterator[bytes]] | None = None
    headers: dict[str, str] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------- file builders
def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # PNG colour type -> samples per pixel


def png(width: int, height: int, colour_type: int = 6, bit_depth: int = 8, rows: int | None = None,
        extra: bytes = b"") -> bytes:
    """A valid PNG of ``width`` x ``height`` black (or transparent) pixels, in milliseconds whatever its size.

    Every byte of the pixel data is zero (filter byte 0, zero samples), so one ~1 MB block is deflated once, ending in
    a full flush that makes the output self-contained, and the stream repeats it; the Adler-32 of n zero bytes is
    ``(n mod 65521) << 16 | 1``.

    Args:
        colour_type: 0 grey, 2 RGB, 4 grey + alpha, 6 RGBA.
        bit_depth: 8 or 16.
        rows: Write only this many rows (a truncated image), default all.
        extra: Chunks to insert before the pixel data.
    """
    row_bytes = 1 + width * _CHANNELS[colour_type] * bit_depth // 8
    total = row_bytes * (height if rows is None else rows)
    block = max(1, (1 << 20) // row_bytes) * row_bytes
    segment = _deflated_zeros(block)
    whole, rest = divmod(total, block)
    tail = zlib.compressobj(9, zlib.DEFLATED, -15)
    data = (b"\x78\xda" + segment * whole + _deflated_zeros(rest) + tail.flush(zlib.Z_FINISH)
            + struct.pack(">I", (total % 65521) << 16 | 1))
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + extra + _chunk(b"IDAT", data) + _chunk(b"IEND", b"")


def _deflated_zeros(n: int) -> bytes:
    """Raw deflate blocks of ``n`` zero bytes, not final, ending on a byte boundary with no back-references out."""
    stream = zlib.compressobj(9, zlib.DEFLATED, -15)
    return stream.compress(b"\x00" * n) + stream.flush(zlib.Z_FULL_FLUSH)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims ``width`` x ``height`` with a few bytes of pixel data."""
    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(b"\x00" * 1024))
            + _chunk(b"IEND", b""))


def jpeg_claiming(width: int, height: int) -> bytes:
    """A real small JPEG whose frame header (SOF0) is patched to claim ``width`` x ``height``."""
    data = bytearray(_saved(_photo(64, 48), "JPEG", quality=90))
    sof = data.find(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def gif_claiming(width: int, height: int) -> bytes:
    """A 1x1 GIF whose logical screen claims ``width`` x ``height``."""
    data = bytearray(_saved(Image.new("P", (1, 1)), "GIF"))
    data[6:10] = struct.pack("<HH", width, height)
    return bytes(data)


def _photo(width: int = 96, height: int = 64, seed: int = 0) -> Image.Image:
    """A small RGB picture with structure (gradients plus noise), so that codecs have something to encode."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    pixels = np.stack([x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1), (x + y) % 256], axis=-1)
    pixels = (pixels + rng.integers(0, 30, pixels.shape)).clip(0, 255).astype(np.uint8)
    return Image.fromarray(pixels)


def _saved(image: Image.Image, image_format: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **options)
    return buffer.getvalue()


def _with_exif(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return _saved(_photo(), "JPEG", exif=exif, quality=90)


def _palette_with_transparency() -> bytes:
    image = _photo().convert("P")
    return _saved(image, "PNG", transparency=0)


def _animated_gif() -> bytes:
    frames = [_photo(seed=s).convert("P") for s in range(3)]
    return _saved(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=40, loop=0)


def _bad_crc_png() -> bytes:
    data = bytearray(_saved(_photo(), "PNG"))
    data[29] ^= 0xFF  # IHDR's CRC
    return bytes(data)


def _text_bomb_png() -> bytes:
    """A small PNG with a zTXt chunk that inflates to 64 MB of text."""
    text = b"Comment\x00\x00" + zlib.compress(b"A" * (64 << 20), 9)
    return png(32, 32, extra=_chunk(b"zTXt", text))


def _bad_exif_jpeg() -> bytes:
    data = _saved(_photo(), "JPEG", quality=90)
    app1 = b"Exif\x00\x00" + b"II*\x00" + struct.pack("<I", 0xFFFFFF00) + b"\xff" * 40  # IFD offset far away
    return data[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + data[2:]


def bad_files() -> list[BadFile]:
    """Every upload case (about 45), built in a few seconds."""
    jpeg = _saved(_photo(), "JPEG", quality=90)
    png_bytes = _saved(_photo(), "PNG")
    webp = _saved(_photo(), "WEBP", quality=80)
    zip_tail = b"PK\x03\x04" + b"\x00" * 26 + b"payload.sh" + b"#!/bin/sh\necho owned\n" + b"PK\x05\x06" + b"\x00" * 18
    refused_format = frozenset({415})
    broken = frozenset({400, 415})
    cases = [
        # broken files
        BadFile("zero-byte.jpg", b"", frozenset({400})),
        BadFile("truncated.jpg", jpeg[: len(jpeg) // 3], frozenset({400})),
        BadFile("truncated.png", png_bytes[: len(png_bytes) // 2], frozenset({400})),
        BadFile("truncated-rows.png", png(640, 480, rows=100), frozenset({200, 400})),  # PIL may fill the rest
        BadFile("truncated.webp", webp[: len(webp) // 2], broken),
        BadFile("truncated.gif", _saved(_photo(), "GIF")[:200], broken),
        BadFile("text.jpg", b"id,name\n1,shirt\n", frozenset({415})),
        BadFile("page.jpg", b"<html><script>alert(1)</script></html>", frozenset({415})),
        BadFile("random-bytes.png", np.random.default_rng(1).bytes(4096), frozenset({415})),
        BadFile("magic-only.png", b"\x89PNG\r\n\x1a\n", broken),
        BadFile("jpeg-soi-then-garbage.jpg", b"\xff\xd8\xff" + b"\x00" * 512, broken),
        BadFile("bad-crc.png", _bad_crc_png(), broken),
        BadFile("zero-width.png", png_header_only(0, 10), broken),
        BadFile("gif-js-polyglot.gif", b"GIF89a/*\x00\x00\x00\x00*/=1;alert(document.domain);//", broken),
        # odd but valid: must decode
        BadFile("jpeg-zip-polyglot.jpg", jpeg + zip_tail, OK),
        BadFile("png-named.jpg", png_bytes, OK),
        BadFile("jpeg-named.png", jpeg, OK),
        BadFile("no-extension", jpeg, OK),
        BadFile("grey-16bit.png", _saved(Image.fromarray(np.linspace(0, 65535, 64 * 48, dtype=np.uint16)
                                                         .reshape(48, 64)), "PNG"), OK),
        BadFile("rgb-16bit.png", png(64, 48, colour_type=2, bit_depth=16), OK),
        BadFile("rgba-16bit.png", png(64, 48, colour_type=6, bit_depth=16), OK),
        BadFile("cmyk.jpg", _saved(_photo().convert("CMYK"), "JPEG", quality=90), OK),
        BadFile("palette-transparent.png", _palette_with_transparency(), OK),
        BadFile("rgba.png", _saved(_photo().convert("RGBA"), "PNG"), OK),
        BadFile("grey-alpha.png", _saved(_photo().convert("LA"), "PNG"), OK),
        BadFile("bilevel.png", _saved(_photo().convert("1"), "PNG"), OK),
        BadFile("exif-rotated.jpg", _with_exif(6), OK),
        BadFile("exif-orientation-99.jpg", _with_exif(99), OK),
        BadFile("bad-exif.jpg", _bad_exif_jpeg(), frozenset({200, 400})),
        BadFile("animated.gif", _animated_gif(), OK),
        BadFile("photo.webp", webp, OK),
        BadFile("one-pixel.png", png(1, 1), OK),
        BadFile("tall-thin.png", png(1, 16_000, colour_type=0), OK),
        BadFile("text-bomb.png", _text_bomb_png(), frozenset({200, 400})),
        # formats outside the allow-list
        BadFile("scan.tif", _saved(_photo(), "TIFF"), refused_format),
        BadFile("scan-16bit.tif", _saved(Image.fromarray(np.zeros((48, 64), np.uint16)), "TIFF"), refused_format),
        BadFile("picture.bmp", _saved(_photo(), "BMP"), refused_format),
        BadFile("picture.ppm", _saved(_photo(), "PPM"), refused_format),
        BadFile("favicon.ico", _saved(_photo(), "ICO"), refused_format),
        BadFile("picture.pcx", _saved(_photo(), "PCX"), refused_format),
        # decompression bombs: refused from the header, before any decoding
        BadFile("huge-rgba.png", png(16_000, 16_000, colour_type=6), frozenset({413}), hostile=True),
        BadFile("huge-16bit.png", png(16_000, 16_000, colour_type=0, bit_depth=16), frozenset({413}), hostile=True),
        BadFile("large-header-only.png", png_header_only(12_000, 12_000), frozenset({413}), hostile=True),
        BadFile("bomb-header.png", png_header_only(60_000, 60_000), frozenset({413}), hostile=True),
        BadFile("huge-jpeg-header.jpg", jpeg_claiming(16_000, 16_000), frozenset({200, 400, 413}), hostile=True),
        BadFile("max-jpeg-header.jpg", jpeg_claiming(65_500, 65_500), frozenset({413}), hostile=True),
        BadFile("huge-gif-screen.gif", gif_claiming(65_535, 65_535), frozenset({413}), hostile=True),
        # the worst that is still decoded: just under the 40 MP cap
        BadFile("just-under-cap.png", png(6_000, 6_000, colour_type=6), OK, hostile=True),
        BadFile("just-under-cap-16bit.png", png(6_000, 6_000, colour_type=0, bit_depth=16), OK, hostile=True),
    ]
    names = [case.name for case in cases]
    assert len(set(names)) == len(names), "case names must be unique"
    return cases


def write_files(folder: Path, cases: list[BadFile]) -> dict[str, Path]:
    """Write the cases into ``folder`` under their names; returns name -> path."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for case in cases:
        path = folder / case.name
        path.write_bytes(case.data)
        paths[case.name] = path
    return paths


# ----------------------------------------------------------------------------------------------- requests
def bad_requests(item_id: str, photo: bytes, max_upload_bytes: int, body_limit: int) -> list[BadRequest]:
    """Malformed requests against an app with an index (``item_id`` is in it) and a tagger; ``photo`` is a good
    JPEG; ``max_upload_bytes`` and ``body_limit`` are the app's limits (upload, whole body)."""
    upload = {"image": ("photo.jpg", photo, "image/jpeg")}
    unprocessable, not_found = frozenset({422}), frozenset({404})
    boundary = "fashionlensboundary"
    part = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"big.jpg\"\r\n"
            f"Content-Type: image/jpeg\r\n\r\n").encode()

    def streamed() -> Iterator[bytes]:  # no Content-Length: counted while it streams in
        yield part
        for _ in range(body_limit // 65536 + 2):
            yield b"\xff" * 65536

    cases = [
        # bodies
        BadRequest("content-length-over-limit", "POST", "/v1/tag", frozenset({413}), content=b"x" * (body_limit + 1),
                   headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}),
        BadRequest("streamed-body-over-limit", "POST", "/v1/tag", frozenset({413}), content=streamed,
                   headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}),
        BadRequest("file-over-upload-limit", "POST", "/v1/tag", frozenset({413}),
                   files={"image": ("big.jpg", b"\xff" * (max_upload_bytes + 1), "image/jpeg")}),
        BadRequest("multipart-garbage", "POST", "/v1/tag", frozenset({400, 422}), content=b"\x00\xff garbage --x--",
                   headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}),
        BadRequest("multipart-unterminated", "POST", "/v1/tag", frozenset({400, 422}), content=part + photo[:100],
                   headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}),
        BadRequest("multipart-without-boundary", "POST", "/v1/tag", frozenset({400, 422}), content=part,
                   headers={"Content-Type": "multipart/form-data"}),
        BadRequest("json-body", "POST", "/v1/tag", unprocessable, content=b'{"image": "x"}',
                   headers={"Content-Type": "application/json"}),
        BadRequest("no-body", "POST", "/v1/search", unprocessable),
        BadRequest("wrong-field-name", "POST", "/v1/tag", unprocessable,
                   files={"photo": ("photo.jpg", photo, "image/jpeg")}),
        BadRequest("header-injection-filename", "POST", "/v1/tag", OK,
                   files={"image": ("a\r\nX-Evil: 1/../../etc/passwd.jpg", photo, "image/jpeg")}),
        # query parameters
        BadRequest("k-negative", "POST", "/v1/search", unprocessable, params={"k": -1}, files=upload),
        BadRequest("k-zero", "POST", "/v1/search", unprocessable, params={"k": 0}, files=upload),
        BadRequest("k-text", "POST", "/v1/search", unprocessable, params={"k": "abc"}, files=upload),
        BadRequest("k-huge", "POST", "/v1/search", unprocessable, params={"k": 10**9}, files=upload),
        BadRequest("k-float", "POST", "/v1/search", unprocessable, params={"k": "1.5"}, files=upload),
        BadRequest("k-nan", "GET", f"/v1/items/{item_id}/similar", unprocessable, params={"k": "NaN"}),
        BadRequest("filter-garbage", "POST", "/v1/search", unprocessable, params={"filter": "garbage"}, files=upload),
        BadRequest("filter-path", "POST", "/v1/search", unprocessable, params={"filter": "path=/etc/passwd"},
                   files=upload),
        BadRequest("filter-path-similar", "GET", f"/v1/items/{item_id}/similar", unprocessable,
                   params={"filter": "path=/etc/passwd"}),
        BadRequest("filter-unknown-field", "GET", f"/v1/items/{item_id}/similar", unprocessable,
                   params={"filter": "colour=Red"}),
        BadRequest("filter-empty-value", "GET", f"/v1/items/{item_id}/similar", unprocessable,
                   params={"filter": "gender="}),
        BadRequest("filter-no-field", "GET", f"/v1/items/{item_id}/similar", unprocessable,
                   params={"filter": "=Men"}),
        BadRequest("filter-long-field", "GET", f"/v1/items/{item_id}/similar", unprocessable,
                   params={"filter": "x" * 5000 + "=y"}),
        BadRequest("filter-nul-and-unicode", "GET", f"/v1/items/{item_id}/similar", unprocessable,
                   params={"filter": "gen\x00dér=Mén"}),
        BadRequest("filter-many-values", "GET", f"/v1/items/{item_id}/similar", OK,
                   params={"filter": "gender=" + ",".join(f"v{i}" for i in range(2000))}),
        BadRequest("size-zero", "GET", f"/v1/items/{item_id}/image", unprocessable, params={"size": 0}),
        BadRequest("size-huge", "GET", f"/v1/items/{item_id}/image", unprocessable, params={"size": 10**9}),
        # item ids
        BadRequest("id-dot-dot", "GET", "/v1/items/..%2F..%2Fetc%2Fpasswd/image", not_found),
        BadRequest("id-dot-dot-similar", "GET", "/v1/items/..%2F..%2Fetc%2Fpasswd/similar", not_found),
        BadRequest("id-absolute-path", "GET", "/v1/items/%2Fetc%2Fpasswd/image", not_found),
        BadRequest("id-very-long", "GET", f"/v1/items/{'a' * 20_000}/similar", not_found),
        BadRequest("id-unicode", "GET", "/v1/items/%E2%80%AE%F0%9F%91%97%E4%B8%AD/similar", not_found),
        BadRequest("id-nul", "GET", "/v1/items/abc%00def/image", not_found),
        BadRequest("id-crlf", "GET", "/v1/items/abc%0D%0AX-Evil:%201/similar", not_found),
        BadRequest("id-percent", "GET", "/v1/items/%25/similar", not_found),
        # routes and methods
        BadRequest("unknown-route", "GET", "/v1/nothing-here", not_found),
        BadRequest("wrong-method", "GET", "/v1/tag", frozenset({405})),
    ]
    names = [case.name for case in cases]
    assert len(set(names)) == len(names), "case names must be unique"
    return cases
