from __future__ import annotations

import io
import json
import re
import shutil
import socket
import ssl
import struct
import subprocess
import threading
import time
import urllib.error
import zlib
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image

from fashionlens.data.images import decode_image
from fashionlens.data.readers import _http, download
from fashionlens.data.readers.download import (
    MAX_ID_LENGTH,
    download_images,
    downloaded_files,
    read_failures,
    safe_id,
    sniff_extension,
)
from fashionlens.errors import ConfigError, DataError


def _image_bytes(size: tuple[int, int], format: str = "JPEG") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (10, 120, 200)).save(buffer, format=format)
    return buffer.getvalue()


def _png_header(width: int, height: int) -> bytes:
    """A PNG that is only a header (claiming ``width`` x ``height``) and an end chunk."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) + \
        chunk(b"IEND", b"")


class _Server(ThreadingHTTPServer):
    """Serves fixture images on 127.0.0.1 and records when each path was requested."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests: Counter[str] = Counter()
        self.times: dict[str, list[float]] = {}
        self.lock = threading.Lock()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"

    def respond(self, path: str, count: int) -> tuple[int, bytes, dict[str, str]]:
        if path in ("/a.jpg", "/b.jpg"):
            return 200, _image_bytes((8, 6)), {}
        if path == "/big.png":
            return 200, _image_bytes((400, 300), "PNG"), {}
        if path == "/png-as.jpg":  # a PNG behind a .jpg URL
            return 200, _image_bytes((8, 6), "PNG"), {}
        if path == "/bomb.png":  # a header claiming 100k x 100k pixels
            return 200, _png_header(100_000, 100_000), {}
        if path == "/text.jpg":
            return 200, b"<html>Sorry, this product is no longer available</html>", {}
        if path == "/flaky.jpg":  # fails once, then works
            return (503, b"busy", {}) if count == 1 else (200, _image_bytes((8, 6)), {})
        if path == "/down.jpg":
            return 503, b"busy", {}
        if path == "/429.jpg":  # asks for a 1 s pause, then works
            return (429, b"slow down", {"Retry-After": "1"}) if count == 1 else (200, _image_bytes((8, 6)), {})
        if path == "/429-long.jpg":
            return (429, b"slow down", {"Retry-After": "3600"}) if count == 1 else (200, _image_bytes((8, 6)), {})
        if path == "/to-ftp.jpg":
            return 302, b"", {"Location": "ftp://127.0.0.1/a.jpg"}
        if path == "/to-file.jpg":
            return 302, b"", {"Location": "file:///etc/hostname"}
        if path == "/to-a.jpg":
            return 302, b"", {"Location": "/a.jpg"}
        return 404, b"not found", {}


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        with self.server.lock:
            self.server.requests[self.path] += 1
            self.server.times.setdefault(self.path, []).append(time.monotonic())
            count = self.server.requests[self.path]
        if self.path == "/drip.jpg":  # a complete header, then one byte every 50 ms (for 10 s at most)
            self._drip(b"HTTP/1.0 200 OK\r\nContent-Length: 200\r\n\r\n", b"", _image_bytes((8, 6))[:200])
            return
        if self.path == "/drip-headers.jpg":  # even the headers drip
            self._drip(b"", b"HTTP/1.0 200 OK\r\n" + b"X-Slow: " + b"z" * 200 + b"\r\n\r\n", b"")
            return
        if self.path == "/short.jpg" and count == 1:  # announces more bytes than it sends, then hangs up
            body = _image_bytes((8, 6))
            self.wfile.write(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n" % (len(body) + 100) + body)
            return
        if self.path == "/cut.jpg" and count == 1:  # no Content-Length, and the connection drops mid-image
            self.wfile.write(b"HTTP/1.0 200 OK\r\n\r\n" + _image_bytes((8, 6))[:-40])
            return
        status, body, headers = self.server.respond(
            "/a.jpg" if self.path in ("/short.jpg", "/cut.jpg") else self.path, count)
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _drip(self, start: bytes, slow: bytes, body: bytes) -> None:
        try:
            self.wfile.write(start)
            for byte in (slow + body)[:200]:
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                time.sleep(0.05)
        except OSError:  # the client hung up: what the test wants
            pass

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[_Server]:
    monkeypatch.setenv("no_proxy", "*")
    monkeypatch.setenv("NO_PROXY", "*")
    httpd = _Server()
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def _items(server: _Server, out: Path, *names: str) -> list[tuple[str, Path]]:
    return [(server.url(f"/{name}"), out / name) for name in names]


def test_downloads_validates_retries_and_records_failures(server: _Server, tmp_path: Path) -> None:
    out, failures = tmp_path / "out", tmp_path / "failures.jsonl"
    items = _items(server, out, "a.jpg", "b.jpg", "flaky.jpg", "missing.jpg", "text.jpg")
    report = download_images(items, workers=4, retries=2, backoff=0, failures_path=failures, progress=False)
    assert (report.downloaded, report.skipped, report.failed) == (3, 0, 2)
    assert server.requests["/flaky.jpg"] == 2
    assert (server.requests["/missing.jpg"], server.requests["/text.jpg"]) == (1, 1)  # permanent: not retried
    assert sorted(path.name for path in out.iterdir()) == ["a.jpg", "b.jpg", "flaky.jpg"]  # no temporary files
    assert decode_image(out / "flaky.jpg").size == (8, 6)
    recorded = {record["url"]: record for record in map(json.loads, failures.read_text().splitlines())}
    assert set(recorded) == {server.url("/missing.jpg"), server.url("/text.jpg")}
    assert "HTTP 404" in recorded[server.url("/missing.jpg")]["error"]
    assert "not an image" in recorded[server.url("/text.jpg")]["error"]
    assert recorded[server.url("/text.jpg")]["path"] == str(out / "text.jpg")


def test_rerun_resumes_and_failures_file_retries_only_failures(server: _Server, tmp_path: Path) -> None:
    out, failures = tmp_path / "out", tmp_path / "failures.jsonl"
    items = _items(server, out, "a.jpg", "flaky.jpg", "missing.jpg")
    download_images(items, retries=1, backoff=0, failures_path=failures, progress=False)
    before = server.requests.copy()
    report = download_images(items, retries=1, backoff=0, failures_path=failures, progress=False)
    assert (report.downloaded, report.skipped, report.failed) == (0, 2, 1)
    assert server.requests - before == Counter({"/missing.jpg": 1})  # done files were not fetched again
    retry = read_failures(failures)
    assert retry == [(server.url("/missing.jpg"), out / "missing.jpg")]
    before = server.requests.copy()
    report = download_images(retry, retries=0, failures_path=failures, progress=False)
    assert report.failed == 1
    assert server.requests - before == Counter({"/missing.jpg": 1})


@pytest.mark.parametrize("content", [b"", b"\xff\xd8\xff\xe0 truncated"])
def test_broken_existing_file_is_downloaded_again(server: _Server, tmp_path: Path, content: bytes) -> None:
    (target := tmp_path / "a.jpg").write_bytes(content)
    report = download_images([(server.url("/a.jpg"), target)], progress=False)
    assert report.downloaded == 1
    assert decode_image(target).size == (8, 6)


def test_transient_failure_gives_up_after_retries(server: _Server, tmp_path: Path) -> None:
    report = download_images(_items(server, tmp_path, "down.jpg"), retries=2, backoff=0, progress=False)
    assert server.requests["/down.jpg"] == 3
    assert report.failures[0].error.startswith("HTTP 503")


def test_max_side_shrinks_large_images(server: _Server, tmp_path: Path) -> None:
    download_images(_items(server, tmp_path, "big.png"), max_side=100, progress=False)
    image = Image.open(tmp_path / "big.png")
    assert (image.format, image.size) == ("PNG", (100, 75))


def test_only_http_urls_are_fetched(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("not for download")
    report = download_images([(secret.as_uri(), tmp_path / "copy.jpg")], progress=False)
    assert "not an http(s) URL" in report.failures[0].error
    assert not (tmp_path / "copy.jpg").exists()


def test_unreachable_server_is_a_recorded_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("no_proxy", "*")
    with socket.socket() as sock:  # a port nobody listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    report = download_images([(f"http://127.0.0.1:{port}/a.jpg", tmp_path / "a.jpg")], retries=1, backoff=0,
                             progress=False)
    assert report.failed == 1
    assert "URLError" in report.failures[0].error


def test_many_items_from_a_generator_with_progress(server: _Server, tmp_path: Path) -> None:
    items = ((server.url("/a.jpg"), tmp_path / f"{index}.jpg") for index in range(9))
    report = download_images(items, workers=2, progress=True)
    assert report.downloaded == 9
    assert len(list(tmp_path.glob("*.jpg"))) == 9


@pytest.mark.parametrize("options", [{"workers": 0}, {"retries": -1}, {"timeout": 0}, {"deadline": 0},
                                     {"max_side": 0}])
def test_invalid_options(options: dict[str, int]) -> None:
    with pytest.raises(ConfigError, match="invalid download options"):
        download_images([], **options)  # type: ignore[arg-type]


def test_malformed_failures_file(tmp_path: Path) -> None:
    path = tmp_path / "failures.jsonl"
    with pytest.raises(DataError, match="not found"):
        read_failures(path)
    path.write_text('{"url": "http://x/a.jpg", "path": "a.jpg", "error": "HTTP 404"}\n{"url": "http://x/b.jpg"}\n')
    with pytest.raises(DataError, match=r"failures.jsonl, line 2: not a download failure record"):
        read_failures(path)


@pytest.mark.parametrize("name", ["drip.jpg", "drip-headers.jpg"])
def test_a_slow_drip_meets_the_overall_deadline(server: _Server, tmp_path: Path, name: str) -> None:
    start = time.monotonic()
    report = download_images(_items(server, tmp_path, name), timeout=2, deadline=0.6, retries=3, backoff=0,
                             progress=False)
    elapsed = time.monotonic() - start
    assert report.failed == 1 and "deadline of 0.6 s passed" in report.failures[0].error
    assert elapsed < 1.5  # a byte every 50 ms never trips the 2 s timeout: the deadline ends it
    assert server.requests[f"/{name}"] == 1
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("name", ["to-ftp.jpg", "to-file.jpg"])
def test_redirects_leave_http_only_as_a_refusal(server: _Server, tmp_path: Path, name: str) -> None:
    report = download_images(_items(server, tmp_path, name), retries=2, backoff=0, progress=False)
    # ours for ftp://, which urllib's own handler would follow; urllib's for file://
    assert re.search(r"redirect.*(refused|not allowed)", report.failures[0].error, re.IGNORECASE)
    assert server.requests[f"/{name}"] == 1  # permanent: not retried
    assert not list(tmp_path.iterdir())


def test_http_redirect_is_followed(server: _Server, tmp_path: Path) -> None:
    report = download_images(_items(server, tmp_path, "to-a.jpg"), progress=False)
    assert report.downloaded == 1 and server.requests["/a.jpg"] == 1
    assert decode_image(tmp_path / "to-a.jpg").size == (8, 6)


def test_404_is_not_retried_and_503_is(server: _Server, tmp_path: Path) -> None:
    report = download_images(_items(server, tmp_path, "missing.jpg", "flaky.jpg"), retries=3, backoff=0,
                             progress=False)
    assert (report.downloaded, report.failed) == (1, 1)
    assert (server.requests["/missing.jpg"], server.requests["/flaky.jpg"]) == (1, 2)


def test_429_waits_as_long_as_retry_after_says(server: _Server, tmp_path: Path) -> None:
    report = download_images(_items(server, tmp_path, "429.jpg"), retries=1, backoff=0, progress=False)
    assert report.downloaded == 1
    first, second = server.times["/429.jpg"]
    assert second - first >= 0.95  # Retry-After: 1, although backoff is 0


def test_retry_after_is_capped_and_bounded_by_the_deadline(server: _Server, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    report = download_images(_items(server, tmp_path, "429-long.jpg"), retries=1, deadline=5, progress=False)
    assert "no time left for a retry within the 5 s deadline" in report.failures[0].error
    assert server.requests["/429-long.jpg"] == 1  # did not sit out the hour either
    monkeypatch.setattr(_http, "RETRY_AFTER_CAP", 0.1)
    report = download_images(_items(server, tmp_path, "429-long.jpg"), retries=1, deadline=5, progress=False)
    assert report.downloaded == 1


@pytest.mark.parametrize("name", ["short.jpg", "cut.jpg"])
def test_a_body_cut_short_is_retried(server: _Server, tmp_path: Path, name: str) -> None:
    report = download_images(_items(server, tmp_path, name), retries=1, backoff=0, progress=False)
    assert report.downloaded == 1
    assert server.requests[f"/{name}"] == 2
    assert decode_image(tmp_path / name).size == (8, 6)
    server.requests[f"/{name}"] = 0  # the server cuts the next response short again
    failed = download_images(_items(server, tmp_path / "once", name), retries=0, progress=False)
    assert failed.failures[0].error.startswith("body cut short" if name == "short.jpg" else "incomplete JPG data")
    assert not (tmp_path / "once").exists()


def test_saved_under_the_real_format_and_found_by_readers(server: _Server, tmp_path: Path) -> None:
    (tmp_path / "png-as.jpg").write_bytes(b"\xff\xd8\xff\xe0 a stale, truncated JPEG")
    report = download_images(_items(server, tmp_path, "png-as.jpg", "a.jpg"), progress=False)
    assert report.downloaded == 2
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a.jpg", "png-as.png"]  # the stale copy is gone
    assert Image.open(tmp_path / "png-as.png").format == "PNG"
    assert downloaded_files(tmp_path) == {"a": tmp_path / "a.jpg", "png-as": tmp_path / "png-as.png"}
    before = server.requests.copy()
    again = download_images(_items(server, tmp_path, "png-as.jpg"), progress=False)
    assert (again.skipped, server.requests - before) == (1, Counter())  # the .png counts as the .jpg asked for


def test_resume_reads_headers_without_decoding(server: _Server, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    items = _items(server, tmp_path, "a.jpg", "big.png", "png-as.jpg")
    assert download_images(items, progress=False).downloaded == 3

    def no_decoding(*args: object, **kwargs: object) -> None:
        raise AssertionError("a resume must not decode images")

    monkeypatch.setattr(download.Image, "open", no_decoding)
    monkeypatch.setattr(download._images, "decode_image", no_decoding)
    assert download_images(items, progress=False).skipped == 3


def test_images_over_the_decoder_pixel_cap_are_refused(server: _Server, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    report = download_images(_items(server, tmp_path, "bomb.png"), retries=2, backoff=0, progress=False)
    assert "too large" in report.failures[0].error and server.requests["/bomb.png"] == 1
    monkeypatch.setattr(download._images, "MAX_IMAGE_PIXELS", 8 * 6 - 1)  # the decoder's cap, as configured
    report = download_images(_items(server, tmp_path, "a.jpg"), progress=False)
    assert "8x6 pixels, limit 47" in report.failures[0].error
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("image_id", ["../../x", "/abs/path", "..", ".", ".hidden", "a/b", "a\\b", "C:\\x",
                                      "x" * 300, "name with spaces", "é"])
def test_hostile_ids_become_names_inside_the_folder(tmp_path: Path, image_id: str) -> None:
    name = safe_id(image_id)
    assert name and len(name) <= MAX_ID_LENGTH and not name.startswith(".")
    assert set(name) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
    assert (tmp_path / f"{name}.jpg").resolve().parent == tmp_path.resolve()
    assert safe_id("12345") == "12345" and safe_id("a_b-c.d") == "a_b-c.d"  # plain ids are kept as they are
    assert safe_id("a/b") != safe_id("a_b")  # never two ids for one file
    with pytest.raises(DataError, match="empty"):
        safe_id("  ")


def test_destinations_outside_the_root_are_refused(server: _Server, tmp_path: Path) -> None:
    root, outside = tmp_path / "images", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "link.jpg").symlink_to(outside / "target.jpg")
    items = [(server.url("/a.jpg"), root / ".." / "outside" / "x.jpg"), (server.url("/a.jpg"), Path("/tmp/abs.jpg")),
             (server.url("/a.jpg"), root / "link.jpg"), (server.url("/a.jpg"), root / "ok.jpg")]
    report = download_images(items, root=root, progress=False)
    assert (report.downloaded, report.failed) == (1, 3)
    assert all("is outside the download folder" in failure.error for failure in report.failures)
    assert not list(outside.iterdir()) and not Path("/tmp/abs.jpg").exists()
    assert server.requests["/a.jpg"] == 1


def test_hostile_imaterialist_ids_stay_in_the_images_folder(server: _Server, tmp_path: Path) -> None:
    from fashionlens.data.readers.imaterialist import imaterialist_downloads, read_imaterialist

    images = tmp_path / "train"
    ids = ["1", "../../x", "/abs/path", "png"]
    document = {"images": [{"imageId": image_id, "url": server.url("/png-as.jpg" if image_id == "png" else "/a.jpg")}
                           for image_id in ids]}
    (tmp_path / "train.json").write_text(json.dumps(document))
    items = imaterialist_downloads(tmp_path / "train.json")
    assert all(path.parent == images for _, path in items)
    report = download_images(items, root=images, progress=False)
    assert report.downloaded == 4
    assert {path.parent for path in tmp_path.rglob("*.*") if path.suffix != ".json"} == {images}
    manifest = read_imaterialist(tmp_path / "train.json")
    assert manifest.stats["missing_images"] == 0  # the manifest names the files the downloader wrote
    assert manifest.frame["path"].tolist() == [str(downloaded_files(images)[safe_id(i)]) for i in ids]
    assert manifest.frame["path"].iloc[3].endswith("png.png")


def test_transient_and_permanent_network_errors() -> None:
    transient = [TimeoutError("timed out"), ConnectionResetError(), ConnectionRefusedError(),
                 urllib.error.URLError(TimeoutError()), socket.gaierror(socket.EAI_AGAIN, "try again")]
    permanent = [ssl.SSLCertVerificationError("certificate verify failed"),
                 urllib.error.URLError(ssl.SSLCertVerificationError("certificate verify failed")),
                 socket.gaierror(socket.EAI_NONAME, "unknown host"), OSError("no space left")]
    assert all(_http._transient(error) for error in transient)
    assert not any(_http._transient(error) for error in permanent)


def test_sniffing() -> None:
    assert sniff_extension(_image_bytes((4, 4))) == ".jpg"
    assert sniff_extension(_image_bytes((4, 4), "PNG")) == ".png"
    assert sniff_extension(_image_bytes((4, 4), "GIF")) == ".gif"
    assert sniff_extension(_image_bytes((4, 4), "WEBP")) == ".webp"
    assert sniff_extension(b"<html>") is None


@pytest.fixture
def tls_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[_Server, Path]]:
    """The fixture server behind TLS with a fresh self-signed certificate for 127.0.0.1 (and the certificate)."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a certificate")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    monkeypatch.setenv("no_proxy", "*")
    httpd = _Server()
    httpd.handle_error = lambda *args: None  # type: ignore[method-assign]  # refused handshakes are the point
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield httpd, cert
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def test_https_certificate_errors_are_not_retried(tls_server: tuple[_Server, Path], tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    server, cert = tls_server
    url = server.url("/a.jpg").replace("http://", "https://")
    start = time.monotonic()
    report = download_images([(url, tmp_path / "a.jpg")], retries=2, backoff=5, progress=False)
    assert "certificate verify failed" in report.failures[0].error.lower()
    assert time.monotonic() - start < 4  # no retry: the first backoff alone would be 5 s
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # now trusted: the same URL downloads
    report = download_images([(url, tmp_path / "a.jpg")], progress=False)
    assert report.downloaded == 1 and decode_image(tmp_path / "a.jpg").size == (8, 6)
