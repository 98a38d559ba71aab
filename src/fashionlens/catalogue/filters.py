"""The one way ``field=value`` text becomes catalogue filters, for the CLI (``--filter``) and the service
(``?filter=``): parsed with :func:`fashionlens.index.filters.parse_filters`, then checked against the index's own
columns, so that both refuse the same input with the same one-line :class:`~fashionlens.errors.CatalogueIndexError`
before any model runs."""

from __future__ import annotations

from collections.abc import Iterable

from fashionlens.index import CatalogueIndex, Filters
from fashionlens.index.filters import check_fields
from fashionlens.index.filters import parse_filters as _parse
from fashionlens.index.store import ITEM_ID


def parse_filters(expressions: Iterable[str] | None, index: CatalogueIndex | None = None) -> Filters | None:
    """``field=value[,value...]`` expressions → filters (``None`` when there are none); repeating a field adds values.

    Args:
        expressions: The filter texts, e.g. ``["gender=Men", "articleType=Tops,Tshirts"]``.
        index: The catalogue to be searched: its fields are the ones accepted (``item_id`` and every metadata field
            but the internal ones); ``None`` checks the syntax only (the index then checks the fields as it
            searches).

    Raises:
        CatalogueIndexError: An expression without ``=``, field name or value, or a field the catalogue does not
            have or keeps private (see :func:`fashionlens.index.filters.check_fields`).
    """
    filters = _parse(expressions)
    if index is not None:
        check_fields(filters, [ITEM_ID, *index.fields])
    return filters or None
