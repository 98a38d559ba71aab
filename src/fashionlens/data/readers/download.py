"""Resumable, parallel, contained image downloads for datasets distributed as URL lists (iMaterialist, JD style).

Fetching a million product photos takes hours, gets interrupted, and meets dead links, flaky servers and hostile
input. So:

* a download never writes outside its folder: dataset ids become file names through :func:`safe_id` (one path
  component, never ``..`` or absolute), and with ``root`` every destination is resolved (symbolic links included)
  and refused when it lands outside;
* only ``http``/``https`` URLs are fetched, redirects included (a redirect to ``ftp://``, ``file://`` or any other
  scheme is refused), and each file has an overall deadline (connection, redirects, a slow drip of bytes, retries
  and their waits all count), enforced by closing the connection when it passes;
* transient failures (timeouts, reset or refused connections, HTTP 408/425/429/5xx, a body shorter than its
  ``Content-Length`` or without its format's end marker) are retried with exponential backoff, or after the
  server's ``Retry-After`` (capped at :data:`RETRY_AFTER_CAP`); permanent ones (404, a certificate error, not an
  image, too large) are not;
* bytes are checked from their header only -- the format sniffed from magic bytes, the pixel count against the
  decoder's cap (:data:`fashionlens.data.images.MAX_IMAGE_PIXELS`) -- and saved under the extension of their real
  format (a PNG served for ``1.jpg`` is saved as ``1.png``; :func:`downloaded_files` finds a download whatever its
  extension), written to a temporary name and renamed into place, so an interruption never leaves a partial file;
* a file already present is skipped when its size, header magic and end marker look right (no decoding), which
  makes any rerun a cheap resume;
* failures go to a JSON-lines file; :func:`read_failures` turns it into the item list of a run that retries only them.
"""

from __future__ import annotations

import contextlib
import email.utils
import functools
import hashlib
import http.client
import io
import json
import os
import re
import socket
import ssl
import struct
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Sized
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, as_completed, wait
from dataclasses import asdict, dataclass, field
from email.message import Message
from functools import partial
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from fashionlens.data import images as _images
from fashionlens.errors import ConfigError, DataError, ImageError
from fashionlens.io import atomic_path, write_text

USER_AGENT = "fashionlens-downloader/0.2"
#: Largest response accepted; product photos are far smaller, anything bigger is not what the list meant.
MAX_DOWNLOAD_BYTES = 64 * 1024 * 1024
#: Longest wait honoured from a server's ``Retry-After`` (and never past the file's deadline).
RETRY_AFTER_CAP = 60.0
#: Longest file name :func:`safe_id` returns (before an extension).
MAX_ID_LENGTH = 100
_RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
_SCHEMES = ("http", "https")
_CHUNK = 64 * 1024
_TAIL = 4096

#: Image formats by magic bytes: (test on the first bytes, extension saved). WebP is RIFF....WEBP.
_MAGIC: tuple[tuple[Callable[[bytes], bool], str], ...] = (
    (lambda head: head.startswith(b"\xff\xd8\xff"), ".jpg"),
    (lambda head: head.startswith(b"\x89PNG\r\n\x1a\n"), ".png"),
    (lambda head: head[:6] in (b"GIF87a", b"GIF89a"), ".gif"),
    (lambda head: head[:4] == b"RIFF" and head[8:12] == b"WEBP", ".webp"),
    (lambda head: head[:4] in (b"II*\x00", b"MM\x00*"), ".tif"),
    (lambda head: head[:2] == b"BM", ".bmp"),
)
#: Every extension a download may carry, with the one :data:`_MAGIC` gives for its format.
IMAGE_EXTENSIONS = {".jpg": ".jpg", ".jpeg": ".jpg", ".png": ".png", ".gif": ".gif", ".webp": ".webp",
                    ".tif": ".tif", ".tiff": ".tif", ".bmp": ".bmp"}
_SAFE_CHARACTERS = re.compile(r"[^A-Za-z0-9._-]")

Item = tuple[str, Path]


def safe_id(value: object) -> str:
    """The file name (without extension) of a dataset item id: the id itself when it is plain, else a safe stand-in.

    A plain id is letters, digits, ``.``, ``_`` and ``-``, does not start with a dot, and has at most
    :data:`MAX_ID_LENGTH` characters. Any other id (``../../x``, ``/abs/path``, ``a b``, ``.hidden``) becomes its
    plain characters followed by a hash of the whole id: one path component that stays inside its folder, and
    distinct ids never share a file.

    Raises:
        DataError: An empty id.
    """
    text = str(value).strip()
    if not text:
        raise DataError("an item id is empty: cannot name its image file")
    if len(text) <= MAX_ID_LENGTH and not text.startswith(".") and not _SAFE_CHARACTERS.search(text):
        return text
    digest = hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    stem = _SAFE_CHARACTERS.sub("_", text).lstrip(".")[:MAX_ID_LENGTH - len(digest) - 1]
    return f"{stem}-{digest}" if stem else digest


def downloaded_files(folder: str | Path) -> dict[str, Path]:
    """The image files of a download folder by stem (``{"123": folder/"123.png"}``), whatever their extension.

    Hidden and temporary files are left out; when one stem has several image files, the first extension of
    :data:`IMAGE_EXTENSIONS` wins. A missing folder has none.
    """
    found: dict[str, Path] = {}
    order = list(IMAGE_EXTENSIONS)
    try:
        entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
    except (FileNotFoundError, NotADirectoryError):
        return found
    for entry in entries:
        stem, extension = os.path.splitext(entry.name)
        extension = extension.lower()
        if entry.name.startswith(".") or extension not in IMAGE_EXTENSIONS or not entry.is_file():
            continue
        if stem not in found or order.index(extension) < order.index(found[stem].suffix.lower()):
            found[stem] = Path(folder) / entry.name
    return found


@dataclass(frozen=True)
class DownloadFailure:
    """One item that could not be downloaded, with a one-line reason."""

    url: str
    path: str
    error: str


@dataclass
class DownloadReport:
    """What a :func:`download_images` run did: counts, and the failures (also written to ``failures_path``)."""

    downloaded: int = 0
    skipped: int = 0
    failures: list[DownloadFailure] = field(default_factory=list)

    @property
    def failed(self) -> int:
        """Number of items that failed."""
        return len(self.failures)


class _Failed(Exception):
    def __init__(self, message: str, retryable: bool, retry_after: float | None = None) -> None:
        super().__init__(" ".join(message.split()))
        self.retryable = retryable
        self.retry_after = retry_after


@dataclass(frozen=True)
class _Options:
    root: Path | None
    retries: int
    timeout: float
    deadline: float
    backoff: float
    max_side: int | None


def download_images(items: Iterable[tuple[str, str | Path]], *, root: str | Path | None = None, workers: int = 16,
                    retries: int = 3, timeout: float = 30.0, deadline: float = 120.0, backoff: float = 1.0,
                    max_side: int | None = None, failures_path: str | Path | None = None,
                    progress: bool = True) -> DownloadReport:
    """Download ``(url, destination)`` items in parallel, resuming where an earlier run stopped.

    A destination names the file without deciding its format: the bytes are saved with the extension of the format
    they turn out to be (``<stem>.png`` for a PNG sent for ``<stem>.jpg``), and a stale copy of the same stem under
    another image extension is removed. Use :func:`downloaded_files` to find them.

    Args:
        items: ``(url, destination path)`` pairs; parent folders are created as needed.
        root: Folder every destination must resolve into (symbolic links followed); an item outside it is a
            failure and nothing is written. Give it whenever destinations come from downloaded data.
        workers: Parallel downloads (threads: the work is network-bound).
        retries: Extra attempts after a transient failure.
        timeout: Seconds a server may stay silent (connecting, or between bytes) before an attempt fails.
        deadline: Seconds one file may take in all: attempts, redirects, retries and the waits between them.
        backoff: Seconds before the first retry, doubled on each further retry (a server's ``Retry-After``, capped at
            :data:`RETRY_AFTER_CAP`, replaces it).
        max_side: Shrink images whose long side is larger to this many pixels before saving (re-encoded in their own
            format), to save disk when the originals are far larger than training needs.
        failures_path: JSON-lines file rewritten with this run's failures (``url``, ``path``, ``error``); feed it to
            :func:`read_failures` to retry only those.
        progress: Show a progress bar.

    Returns:
        Counts of downloaded and skipped (already present) files, and the failures.

    Raises:
        ConfigError: An invalid option.
    """
    if (workers < 1 or retries < 0 or timeout <= 0 or deadline <= 0 or backoff < 0
            or (max_side is not None and max_side < 1)):
        raise ConfigError(f"invalid download options: workers={workers} (>= 1), retries={retries} (>= 0), "
                          f"timeout={timeout} (> 0), deadline={deadline} (> 0), backoff={backoff} (>= 0), "
                          f"max_side={max_side} (>= 1 or None)")
    options = _Options(Path(root).expanduser().resolve() if root is not None else None, retries, timeout, deadline,
                       backoff, max_side)
    report = DownloadReport()
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, disable=not progress) as bar:
        task = bar.add_task("downloading", total=len(items) if isinstance(items, Sized) else None)
        for (url, path), future in _bounded_map(partial(_download, options=options), items, workers):
            try:
                if future.result():
                    report.downloaded += 1
                else:
                    report.skipped += 1
            except _Failed as error:
                report.failures.append(DownloadFailure(url, str(path), str(error)))
            bar.update(task, advance=1, description=f"downloading ({report.failed} failed)")
    if failures_path is not None:
        write_text(failures_path, "".join(json.dumps(asdict(failure)) + "\n" for failure in report.failures))
    return report


def read_failures(path: str | Path) -> list[Item]:
    """The ``(url, destination)`` items of a failures file written by :func:`download_images`."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DataError(f"download failures file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"cannot read download failures file {path}: {error}") from error
    items = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            items.append((str(record["url"]), Path(record["path"])))
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            raise DataError(f"{path}, line {number}: not a download failure record ({error!r})") from error
    return items


def _bounded_map(function: Callable[[str, Path], bool], items: Iterable[tuple[str, str | Path]],
                 workers: int) -> Iterator[tuple[Item, Future[bool]]]:
    """Run ``function`` on items in a thread pool, yielding finished futures; at most ``4 * workers`` are queued,
    so a million-item generator is never materialised as a million futures."""
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fashionlens-download")
    pending: dict[Future[bool], Item] = {}
    try:
        for url, path in items:
            item = (str(url), Path(path))
            pending[pool.submit(function, *item)] = item
            if len(pending) >= 4 * workers:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    yield pending.pop(future), future
        for future in as_completed(list(pending)):
            yield pending.pop(future), future
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _download(url: str, path: Path, *, options: _Options) -> bool:
    """Fetch one item: True when downloaded, False when already done; raises :class:`_Failed`."""
    if options.root is not None:
        resolved = path.expanduser().resolve()
        if resolved == options.root or not resolved.is_relative_to(options.root):
            raise _Failed(f"destination {path} is outside the download folder {options.root}", retryable=False)
        path = resolved
    if _present(path) is not None:
        return False
    end = time.monotonic() + options.deadline
    attempt = 0
    while True:
        try:
            data = _fetch(url, options.timeout, end, options.deadline)
            extension = _check(data, url)
            break
        except _Failed as error:
            remaining = end - time.monotonic()
            pause = error.retry_after if error.retry_after is not None else options.backoff * 2**attempt
            if not error.retryable or attempt >= options.retries:
                raise
            if pause >= remaining:
                raise _Failed(f"{error}; no time left for a retry within the {options.deadline:g} s deadline",
                              retryable=False) from error
            time.sleep(pause)
            attempt += 1
    target = _with_extension(path, extension)
    try:
        with atomic_path(target, durable=False) as tmp:
            if options.max_side is not None:
                _write_shrunk(data, url, tmp, extension, options.max_side)
            else:
                tmp.write_bytes(data)
        for stale in _siblings(path):
            if stale != target:
                stale.unlink(missing_ok=True)
    except (OSError, ValueError) as error:
        raise _Failed(f"cannot write {target}: {error}", retryable=False) from error
    return True


def _write_shrunk(data: bytes, url: str, tmp: Path, extension: str, max_side: int) -> None:
    try:
        image = _images.decode_image(data, source=url)
    except ImageError as error:
        raise _Failed(str(error), retryable=False) from error
    if max(image.size) <= max_side:
        tmp.write_bytes(data)
        return
    image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    image.save(tmp, format=Image.registered_extensions()[extension], quality=90)


def _with_extension(path: Path, extension: str) -> Path:
    """``path`` with its image extension (if any) replaced by ``extension``."""
    stem = path.stem if path.suffix.lower() in IMAGE_EXTENSIONS else path.name
    return path.with_name(stem + extension)


def _siblings(path: Path) -> list[Path]:
    """Files of ``path``'s stem under any image extension (the destination saved in whichever format it came)."""
    stem = path.stem if path.suffix.lower() in IMAGE_EXTENSIONS else path.name
    return [candidate for extension in IMAGE_EXTENSIONS
            if (candidate := path.with_name(stem + extension)).is_file()]


def _present(path: Path) -> Path | None:
    """A finished download of ``path`` (any image extension): its size, magic bytes and end marker look right.

    Nothing is decoded: a million-file resume reads a few kilobytes per file.
    """
    for candidate in _siblings(path):
        try:
            size = candidate.stat().st_size
            with open(candidate, "rb") as handle:
                head = handle.read(32)
                handle.seek(max(0, size - _TAIL))
                tail = handle.read()
        except OSError:
            continue
        if size and sniff_extension(head) == IMAGE_EXTENSIONS[candidate.suffix.lower()] \
                and _complete(head, tail, size):
            return candidate
    return None


def sniff_extension(head: bytes) -> str | None:
    """The extension of the image format whose magic bytes ``head`` starts with (``.jpg``, ``.png``...), or None."""
    return next((extension for test, extension in _MAGIC if test(head)), None)


def _complete(head: bytes, tail: bytes, size: int) -> bool:
    """Whether a file of this format ends as a complete one does (the cheap check for a cut-off body)."""
    extension = sniff_extension(head)
    if extension == ".jpg":
        return b"\xff\xd9" in tail  # end-of-image marker (some files carry a little padding after it)
    if extension == ".png":
        return b"IEND" in tail[-16:]
    if extension == ".gif":
        return tail.endswith(b";")
    if extension == ".webp":
        return struct.unpack("<I", head[4:8])[0] + 8 <= size
    if extension == ".bmp":
        return struct.unpack("<I", head[2:6])[0] <= size
    return extension is not None  # TIFF: no cheap end marker


def _check(data: bytes, url: str) -> str:
    """The extension of ``data``'s format, after checking from its header that it is a complete image of at most
    the decoder's pixel cap (nothing is decoded)."""
    extension = sniff_extension(data[:32])
    if extension is None:
        raise _Failed(f"not an image (unrecognised format): {url[:200]}", retryable=False)
    if not _complete(data[:32], data[-_TAIL:], len(data)):
        raise _Failed(f"incomplete {extension[1:].upper()} data ({len(data)} bytes): {url[:200]}", retryable=True)
    cap = _images.MAX_IMAGE_PIXELS
    try:
        # Reads the header only. (No warnings.catch_warnings here: it is not thread-safe; PIL's bomb warning between
        # one and two caps is superseded by the check below.)
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise _Failed(f"image too large (over {cap} pixels): {url[:200]}", retryable=False) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise _Failed(f"not an image ({error}): {url[:200]}", retryable=False) from error
    if width * height > cap:
        raise _Failed(f"image too large ({width}x{height} pixels, limit {cap}): {url[:200]}", retryable=False)
    return extension


def _fetch(url: str, timeout: float, end: float, deadline: float) -> bytes:
    """The body of ``url``, read before ``end`` (monotonic time); raises :class:`_Failed`."""
    if urllib.parse.urlsplit(url).scheme.lower() not in _SCHEMES:
        raise _Failed(f"not an http(s) URL: {url[:200]}", retryable=False)
    remaining = end - time.monotonic()
    if remaining <= 0:
        raise _Failed(f"deadline of {deadline:g} s passed", retryable=False)
    watchdog = _Watchdog(end)
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"})
    received = 0
    try:
        with _opener(watchdog).open(request, timeout=min(timeout, remaining)) as response:
            expected = _content_length(response.headers)
            if expected is not None and expected > MAX_DOWNLOAD_BYTES:
                raise _Failed(f"response of {expected} bytes is larger than {MAX_DOWNLOAD_BYTES}", retryable=False)
            chunks = []
            while chunk := response.read1(_CHUNK):  # one socket read at a time: a slow drip meets the deadline
                received += len(chunk)
                if received > MAX_DOWNLOAD_BYTES:
                    raise _Failed(f"response larger than {MAX_DOWNLOAD_BYTES} bytes", retryable=False)
                chunks.append(chunk)
                if time.monotonic() >= end:
                    break
    except urllib.error.HTTPError as error:
        error.close()
        if watchdog.fired:
            raise _Failed(f"deadline of {deadline:g} s passed", retryable=False) from error
        retry_after = _retry_after(error.headers) if error.code in (429, 503) else None
        raise _Failed(f"HTTP {error.code} {error.reason}", retryable=error.code in _RETRY_STATUSES,
                      retry_after=retry_after) from error
    except _Failed:
        raise
    except (OSError, http.client.HTTPException) as error:
        if watchdog.fired or time.monotonic() >= end:
            raise _Failed(f"deadline of {deadline:g} s passed ({received} bytes received)", retryable=False) from error
        raise _Failed(f"{type(error).__name__}: {error}", retryable=_transient(error)) from error
    except ValueError as error:
        raise _Failed(f"invalid URL {url[:200]}: {error}", retryable=False) from error
    finally:
        watchdog.cancel()
    if watchdog.fired or time.monotonic() >= end:
        raise _Failed(f"deadline of {deadline:g} s passed ({received} bytes received)", retryable=False)
    if expected is not None and received != expected:
        raise _Failed(f"body cut short: {received} of {expected} bytes", retryable=True)
    return b"".join(chunks)


def _content_length(headers: Message) -> int | None:
    value = headers.get("Content-Length")
    try:
        return int(value) if value is not None and int(value) >= 0 else None
    except ValueError:
        return None


def _retry_after(headers: Message | None) -> float | None:
    """Seconds a ``Retry-After`` header (seconds or an HTTP date) asks for, capped at :data:`RETRY_AFTER_CAP`."""
    value = headers.get("Retry-After", "").strip() if headers is not None else ""
    if not value:
        return None
    if value.isdigit():
        seconds = float(value)
    else:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError, IndexError):
            return None
    return min(max(seconds, 0.0), RETRY_AFTER_CAP)


def _transient(error: BaseException) -> bool:
    """Whether a network error may go away on its own: timeouts, dropped or refused connections, a cut-off
    body, a temporary DNS failure. Certificate errors, unknown hosts and protocol errors are permanent."""
    if isinstance(error, urllib.error.URLError) and isinstance(error.reason, BaseException):
        error = error.reason
    if isinstance(error, ssl.SSLCertVerificationError):
        return False
    if isinstance(error, socket.gaierror):
        return error.errno == socket.EAI_AGAIN
    return isinstance(error, (TimeoutError, ConnectionError, http.client.IncompleteRead))


class _Watchdog:
    """Shuts down a download's connections at its deadline, which ends any read blocked on them."""

    def __init__(self, end: float) -> None:
        self.end = end
        self.fired = False
        self._timers: list[threading.Timer] = []

    def arm(self, sock: socket.socket) -> None:
        timer = threading.Timer(max(0.0, self.end - time.monotonic()), self._fire, (sock,))
        timer.daemon = True
        self._timers.append(timer)
        timer.start()

    def _fire(self, sock: socket.socket) -> None:
        self.fired = True
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)

    def cancel(self) -> None:
        for timer in self._timers:
            timer.cancel()


class _Armed(http.client.HTTPConnection):
    """A connection that hands each socket it opens to the download's watchdog."""

    def __init__(self, *args: Any, watchdog: _Watchdog, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._watchdog = watchdog

    def connect(self) -> None:
        super().connect()
        self._watchdog.arm(self.sock)


class _ArmedHTTPS(_Armed, http.client.HTTPSConnection):
    """HTTPS connection armed like :class:`_Armed` (its ``connect`` wraps the socket in TLS first)."""


class _ArmedHandler(urllib.request.HTTPHandler, urllib.request.HTTPSHandler):
    """Opens ``http``/``https`` URLs over connections armed with ``watchdog``."""

    def __init__(self, watchdog: _Watchdog) -> None:
        urllib.request.HTTPSHandler.__init__(self)
        self._watchdog = watchdog

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(functools.partial(_Armed, watchdog=self._watchdog), req)

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(functools.partial(_ArmedHTTPS, watchdog=self._watchdog), req)


class _Redirects(urllib.request.HTTPRedirectHandler):
    """Follows at most five redirects, to ``http``/``https`` URLs only (urllib's own also follows ``ftp://``)."""

    max_redirections = 5

    def redirect_request(self, req: urllib.request.Request, fp: Any, code: int, msg: str,
                         headers: http.client.HTTPMessage,
                         newurl: str) -> urllib.request.Request | None:
        if urllib.parse.urlsplit(newurl).scheme.lower() not in _SCHEMES:
            raise _Failed(f"redirect to a non-http(s) URL refused: {newurl[:200]}", retryable=False)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _opener(watchdog: _Watchdog) -> urllib.request.OpenerDirector:
    """An opener for http(s) only (no ``file:``, ``ftp:`` or ``data:`` handler), armed with ``watchdog``."""
    opener = urllib.request.OpenerDirector()
    for handler in (urllib.request.ProxyHandler(), _ArmedHandler(watchdog), _Redirects(),
                    urllib.request.HTTPDefaultErrorHandler(), urllib.request.HTTPErrorProcessor()):
        opener.add_handler(handler)
    return opener
