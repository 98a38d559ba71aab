"""Resumable, parallel image downloads for datasets distributed as URL lists (iMaterialist, JD style).

Fetching a million product photos takes hours, gets interrupted, and meets both dead links and flaky servers. So:

* a file already on disk that decodes as an image is skipped, which makes any rerun a resume;
* bytes are validated with :func:`~fashionlens.data.images.decode_image` and written to a temporary name that is
  renamed into place, so an interruption never leaves a truncated file that would later pass for a finished one;
* transient failures (network errors, HTTP 408/425/429/5xx) are retried with exponential backoff, permanent ones
  (404, not an image) are not;
* failures go to a JSON-lines file; :func:`read_failures` turns it into the item list of a run that retries only them.

Only ``http``/``https`` URLs are fetched (a URL list from the internet must not read local files), and a response
larger than :data:`MAX_DOWNLOAD_BYTES` is refused.
"""

from __future__ import annotations

import http.client
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Sized
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, as_completed, wait
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

from PIL import Image
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from fashionlens.data.images import decode_image
from fashionlens.errors import ConfigError, DataError, ImageError
from fashionlens.io import atomic_path, write_text

USER_AGENT = "fashionlens-downloader/0.1"
#: Largest response accepted; product photos are far smaller, anything bigger is not what the list meant.
MAX_DOWNLOAD_BYTES = 64 * 1024 * 1024
_RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})

Item = tuple[str, Path]


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
    def __init__(self, message: str, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


def download_images(items: Iterable[tuple[str, str | Path]], *, workers: int = 16, retries: int = 3,
                    timeout: float = 30.0, backoff: float = 1.0, max_side: int | None = None,
                    failures_path: str | Path | None = None, progress: bool = True) -> DownloadReport:
    """Download ``(url, destination)`` items in parallel, resuming where an earlier run stopped.

    Args:
        items: ``(url, destination path)`` pairs; parent folders are created as needed.
        workers: Parallel downloads (threads: the work is network-bound).
        retries: Extra attempts after a transient failure.
        timeout: Seconds to wait for a server before an attempt fails.
        backoff: Seconds before the first retry, doubled on each further retry.
        max_side: Shrink images whose long side is larger to this many pixels before saving (re-encoded in the
            destination's format), to save disk when the originals are far larger than training needs.
        failures_path: JSON-lines file rewritten with this run's failures (``url``, ``path``, ``error``); feed it to
            :func:`read_failures` to retry only those.
        progress: Show a progress bar.

    Returns:
        Counts of downloaded and skipped (already present) files, and the failures.

    Raises:
        ConfigError: An invalid option.
    """
    if workers < 1 or retries < 0 or timeout <= 0 or backoff < 0 or (max_side is not None and max_side < 1):
        raise ConfigError(f"invalid download options: workers={workers} (>= 1), retries={retries} (>= 0), "
                          f"timeout={timeout} (> 0), backoff={backoff} (>= 0), max_side={max_side} (>= 1 or None)")
    download = partial(_download, retries=retries, timeout=timeout, backoff=backoff, max_side=max_side)
    report = DownloadReport()
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, disable=not progress) as bar:
        task = bar.add_task("downloading", total=len(items) if isinstance(items, Sized) else None)
        for (url, path), future in _bounded_map(download, items, workers):
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


def _download(url: str, path: Path, *, retries: int, timeout: float, backoff: float, max_side: int | None) -> bool:
    """Fetch one item: True when downloaded, False when already done; raises :class:`_Failed`."""
    if _is_done(path):
        return False
    attempt = 0
    while True:
        try:
            data = _fetch(url, timeout)
            break
        except _Failed as error:
            if not error.retryable or attempt >= retries:
                raise
            time.sleep(backoff * 2**attempt)
            attempt += 1
    try:
        image = decode_image(data, source=url)
    except ImageError as error:
        raise _Failed(str(error), retryable=False) from error
    try:
        with atomic_path(path) as tmp:
            if max_side is not None and max(image.size) > max_side:
                image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
                image.save(tmp, format=Image.registered_extensions().get(path.suffix.lower(), "JPEG"), quality=90)
            else:
                tmp.write_bytes(data)
    except (OSError, ValueError) as error:
        raise _Failed(f"cannot write {path}: {error}", retryable=False) from error
    return True


def _is_done(path: Path) -> bool:
    """Whether ``path`` holds a non-empty file that decodes as an image."""
    try:
        if path.stat().st_size == 0:
            return False
        decode_image(path)
    except (OSError, ImageError):
        return False
    return True


def _fetch(url: str, timeout: float) -> bytes:
    if urllib.parse.urlsplit(url).scheme.lower() not in ("http", "https"):
        raise _Failed(f"not an http(s) URL: {url[:200]}", retryable=False)
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            data: bytes = response.read(MAX_DOWNLOAD_BYTES + 1)
    except urllib.error.HTTPError as error:
        raise _Failed(f"HTTP {error.code} {error.reason}", retryable=error.code in _RETRY_STATUSES) from error
    except (OSError, http.client.HTTPException) as error:
        raise _Failed(" ".join(f"{type(error).__name__}: {error}".split()), retryable=True) from error
    except ValueError as error:
        raise _Failed(f"invalid URL {url[:200]}: {error}", retryable=False) from error
    if len(data) > MAX_DOWNLOAD_BYTES:
        raise _Failed(f"response larger than {MAX_DOWNLOAD_BYTES} bytes", retryable=False)
    return data
