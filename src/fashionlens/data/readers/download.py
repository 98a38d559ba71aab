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
  server's ``Retry-After`` (capped at :data:`~fashionlens.data.readers._http.RETRY_AFTER_CAP`); permanent ones
  (404, a certificate error, not an image, too large) are not (the fetch itself is in
  :mod:`~fashionlens.data.readers._http`);
* bytes are checked from their header only -- the format sniffed from magic bytes, the pixel count against the
  decoder's cap (:data:`fashionlens.data.images.MAX_IMAGE_PIXELS`) -- and saved under the extension of their real
  format (a PNG served for ``1.jpg`` is saved as ``1.png``; :func:`downloaded_files` finds a download whatever its
  extension), written to a temporary name and renamed into place, so an interruption never leaves a partial file;
* a file already present is skipped when its size, header magic and end marker look right (no decoding), which
  makes any rerun a cheap resume;
* failures go to a JSON-lines file; :func:`read_failures` turns it into the item list of a run that retries only them.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import struct
import time
from collections.abc import Callable, Iterable, Iterator, Sized
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, as_completed, wait
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

from PIL import Image, UnidentifiedImageError
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from fashionlens.data import images as _images
from fashionlens.data.readers._http import Failed, fetch
from fashionlens.errors import ConfigError, DataError, ImageError
from fashionlens.io import atomic_path, write_text

#: Longest file name :func:`safe_id` returns (before an extension).
MAX_ID_LENGTH = 100
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
            :data:`~fashionlens.data.readers._http.RETRY_AFTER_CAP`, replaces it).
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
            except Failed as error:
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
    """Fetch one item: True when downloaded, False when already done; raises :class:`Failed`."""
    if options.root is not None:
        resolved = path.expanduser().resolve()
        if resolved == options.root or not resolved.is_relative_to(options.root):
            raise Failed(f"destination {path} is outside the download folder {options.root}", retryable=False)
        path = resolved
    if _present(path) is not None:
        return False
    end = time.monotonic() + options.deadline
    attempt = 0
    while True:
        try:
            data = fetch(url, options.timeout, end, options.deadline)
            extension = _check(data, url)
            break
        except Failed as error:
            remaining = end - time.monotonic()
            pause = error.retry_after if error.retry_after is not None else options.backoff * 2**attempt
            if not error.retryable or attempt >= options.retries:
                raise
            if pause >= remaining:
                raise Failed(f"{error}; no time left for a retry within the {options.deadline:g} s deadline",
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
        raise Failed(f"cannot write {target}: {error}", retryable=False) from error
    return True


def _write_shrunk(data: bytes, url: str, tmp: Path, extension: str, max_side: int) -> None:
    try:
        image = _images.decode_image(data, source=url)
    except ImageError as error:
        raise Failed(str(error), retryable=False) from error
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
        raise Failed(f"not an image (unrecognised format): {url[:200]}", retryable=False)
    if not _complete(data[:32], data[-_TAIL:], len(data)):
        raise Failed(f"incomplete {extension[1:].upper()} data ({len(data)} bytes): {url[:200]}", retryable=True)
    cap = _images.MAX_IMAGE_PIXELS
    try:
        # Reads the header only. (No warnings.catch_warnings here: it is not thread-safe; PIL's bomb warning between
        # one and two caps is superseded by the check below.)
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise Failed(f"image too large (over {cap} pixels): {url[:200]}", retryable=False) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise Failed(f"not an image ({error}): {url[:200]}", retryable=False) from error
    if width * height > cap:
        raise Failed(f"image too large ({width}x{height} pixels, limit {cap}): {url[:200]}", retryable=False)
    return extension
