"""The HTTP side of :mod:`fashionlens.data.readers.download`: one contained fetch of one URL.

``http``/``https`` only (redirects included: a redirect to any other scheme is refused), at most five redirects,
a size cap, and an overall deadline enforced by a watchdog that shuts the connection down when it passes (so a slow
drip of bytes cannot hold a worker). Every failure is a :class:`Failed` that says whether retrying may help.
"""

from __future__ import annotations

import contextlib
import email.utils
import functools
import http.client
import socket
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from email.message import Message
from typing import Any

USER_AGENT = "fashionlens-downloader/0.2"
#: Largest response accepted; product photos are far smaller, anything bigger is not what the list meant.
MAX_DOWNLOAD_BYTES = 64 * 1024 * 1024
#: Longest wait honoured from a server's ``Retry-After`` (and never past the file's deadline).
RETRY_AFTER_CAP = 60.0
_RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
_SCHEMES = ("http", "https")
_CHUNK = 64 * 1024


class Failed(Exception):
    """A download that failed, and whether retrying it may help (after ``retry_after`` seconds, when the server
    said)."""

    def __init__(self, message: str, retryable: bool, retry_after: float | None = None) -> None:
        super().__init__(" ".join(message.split()))
        self.retryable = retryable
        self.retry_after = retry_after


def fetch(url: str, timeout: float, end: float, deadline: float) -> bytes:
    """The body of ``url``, read before ``end`` (monotonic time); raises :class:`Failed`."""
    if urllib.parse.urlsplit(url).scheme.lower() not in _SCHEMES:
        raise Failed(f"not an http(s) URL: {url[:200]}", retryable=False)
    remaining = end - time.monotonic()
    if remaining <= 0:
        raise Failed(f"deadline of {deadline:g} s passed", retryable=False)
    watchdog = _Watchdog(end)
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"})
    received = 0
    try:
        with _opener(watchdog).open(request, timeout=min(timeout, remaining)) as response:
            expected = _content_length(response.headers)
            if expected is not None and expected > MAX_DOWNLOAD_BYTES:
                raise Failed(f"response of {expected} bytes is larger than {MAX_DOWNLOAD_BYTES}", retryable=False)
            chunks = []
            while chunk := response.read1(_CHUNK):  # one socket read at a time: a slow drip meets the deadline
                received += len(chunk)
                if received > MAX_DOWNLOAD_BYTES:
                    raise Failed(f"response larger than {MAX_DOWNLOAD_BYTES} bytes", retryable=False)
                chunks.append(chunk)
                if time.monotonic() >= end:
                    break
    except urllib.error.HTTPError as error:
        error.close()
        if watchdog.fired:
            raise Failed(f"deadline of {deadline:g} s passed", retryable=False) from error
        retry_after = _retry_after(error.headers) if error.code in (429, 503) else None
        raise Failed(f"HTTP {error.code} {error.reason}", retryable=error.code in _RETRY_STATUSES,
                      retry_after=retry_after) from error
    except Failed:
        raise
    except (OSError, http.client.HTTPException) as error:
        if watchdog.fired or time.monotonic() >= end:
            raise Failed(f"deadline of {deadline:g} s passed ({received} bytes received)", retryable=False) from error
        raise Failed(f"{type(error).__name__}: {error}", retryable=_transient(error)) from error
    except ValueError as error:
        raise Failed(f"invalid URL {url[:200]}: {error}", retryable=False) from error
    finally:
        watchdog.cancel()
    if watchdog.fired or time.monotonic() >= end:
        raise Failed(f"deadline of {deadline:g} s passed ({received} bytes received)", retryable=False)
    if expected is not None and received != expected:
        raise Failed(f"body cut short: {received} of {expected} bytes", retryable=True)
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
            raise Failed(f"redirect to a non-http(s) URL refused: {newurl[:200]}", retryable=False)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _opener(watchdog: _Watchdog) -> urllib.request.OpenerDirector:
    """An opener for http(s) only (no ``file:``, ``ftp:`` or ``data:`` handler), armed with ``watchdog``."""
    opener = urllib.request.OpenerDirector()
    for handler in (urllib.request.ProxyHandler(), _ArmedHandler(watchdog), _Redirects(),
                    urllib.request.HTTPDefaultErrorHandler(), urllib.request.HTTPErrorProcessor()):
        opener.add_handler(handler)
    return opener
