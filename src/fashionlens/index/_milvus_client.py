"""Connecting to Milvus: the ``uri`` check, the client (Milvus Lite or a server, token from the environment), and
Milvus errors as one-line :class:`~fashionlens.errors.CatalogueIndexError` messages that never show a password."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fashionlens.errors import CatalogueIndexError
from fashionlens.index.filters import shown

CONNECT_TIMEOUT_S = 10.0
TOKEN_ENV = "FASHIONLENS_MILVUS_TOKEN"
SERVER_SCHEMES = ("http://", "https://", "tcp://", "grpc://", "unix:")


def checked_uri(uri: str) -> str:
    """A server URL as given, or a Milvus Lite path (``.db``) made absolute (so that ``index.json`` stays right
    wherever the directory is opened from)."""
    if uri.startswith(SERVER_SCHEMES):
        return uri
    if "://" in uri or not uri.endswith(".db"):
        raise CatalogueIndexError(
            f"milvus uri {shown(uri)} must be a Milvus Lite path ending in .db or a server URL "
            "(http://host:19530, https://..., tcp://..., unix:...)"
        )
    return str(Path(uri).expanduser().resolve())


def connect(uri: str) -> Any:
    """A ``MilvusClient`` for ``uri`` (a Lite path or a server), or a one-line error naming the uri."""
    pymilvus = _pymilvus()
    with milvus_errors("connect", uri):
        return pymilvus.MilvusClient(uri=uri, token=os.environ.get(TOKEN_ENV, ""), timeout=CONNECT_TIMEOUT_S)


def _pymilvus() -> Any:
    try:
        import pymilvus
    except ImportError as error:
        raise CatalogueIndexError(
            "the milvus backend needs pymilvus and milvus-lite: pip install 'fashionlens[milvus]'"
        ) from error
    # pymilvus logs every failed call with its traceback before raising; the error is raised to the caller as a
    # one-line CatalogueIndexError, so the log would only put a traceback on a user's terminal. Likewise Milvus
    # Lite's in-process gRPC server logs a traceback for each call it does not implement (pymilvus asks it for a
    # timestamp while waiting for an index, then carries on without one).
    logging.getLogger("pymilvus.decorators").setLevel(logging.CRITICAL)
    logging.getLogger("grpc._server").setLevel(logging.CRITICAL)
    return pymilvus


@contextlib.contextmanager
def milvus_errors(what: str, uri: str) -> Iterator[None]:
    """Turn Milvus client errors (server unreachable, bad request...) into a one-line :class:`CatalogueIndexError`."""
    from pymilvus.exceptions import MilvusException

    try:
        yield
    except (MilvusException, OSError, RuntimeError, ValueError, TypeError) as error:
        message = getattr(error, "message", None) or str(error)
        first = " ".join(str(message).split())[:300]
        raise CatalogueIndexError(f"milvus {what} at {redacted(uri)} failed: {first}") from error


def redacted(uri: str) -> str:
    """``uri`` without a ``user:password@`` part, for messages."""
    parts = urlsplit(uri)
    if parts.password is None and parts.username is None:
        return uri
    return parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]).geturl()
