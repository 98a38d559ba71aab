from __future__ import annotations

import io
import json
import socket
import threading
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image

from fashionlens.data.images import decode_image
from fashionlens.data.readers.download import download_images, read_failures
from fashionlens.errors import ConfigError, DataError


def _image_bytes(size: tuple[int, int], format: str = "JPEG") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (10, 120, 200)).save(buffer, format=format)
    return buffer.getvalue()


class _Server(ThreadingHTTPServer):
    """Serves fixture images on 127.0.0.1 and counts requests per path."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests: Counter[str] = Counter()
        self.lock = threading.Lock()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"

    def respond(self, path: str, count: int) -> tuple[int, bytes]:
        if path in ("/a.jpg", "/b.jpg"):
            return 200, _image_bytes((8, 6))
        if path == "/big.png":
            return 200, _image_bytes((400, 300), "PNG")
        if path == "/text.jpg":
            return 200, b"<html>Sorry, this product is no longer available</html>"
        if path == "/flaky.jpg":  # fails once, then works
            return (503, b"busy") if count == 1 else (200, _image_bytes((8, 6)))
        if path == "/down.jpg":
            return 503, b"busy"
        return 404, b"not found"


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        with self.server.lock:
            self.server.requests[self.path] += 1
            count = self.server.requests[self.path]
        status, body = self.server.respond(self.path, count)
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

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


@pytest.mark.parametrize("options", [{"workers": 0}, {"retries": -1}, {"timeout": 0}, {"max_side": 0}])
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
