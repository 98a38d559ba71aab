"""User-facing errors.

Every error fashionlens raises on bad input is a :class:`FashionlensError` whose message is a single line
that names the culprit (file, column, label, option). The CLI prints that line and exits with status 2,
so users never see a bare traceback for a mistake in their data or configuration.
"""

from __future__ import annotations


class FashionlensError(Exception):
    """Base class: a one-line, user-facing problem with input, configuration or saved artefacts."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


class DataError(FashionlensError):
    """A manifest, dataset file, column, split or label is missing or malformed."""


class ImageError(DataError):
    """An image file is missing, empty, truncated, not an image, or too large to decode safely."""


class ConfigError(FashionlensError):
    """A configuration file or option is invalid."""


class ModelError(FashionlensError):
    """A saved model directory is incomplete or does not match what is being asked of it."""


class CatalogueIndexError(FashionlensError):
    """A catalogue index is missing, mismatched with the embedding model, or asked an invalid query."""


def first_line(error: BaseException) -> str:
    """First line of an exception's text, shortened: library errors can run to paragraphs."""
    lines = str(error).strip().splitlines()
    return lines[0][:200] if lines else ""
