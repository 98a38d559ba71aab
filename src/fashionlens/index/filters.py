"""Which catalogue items a search may return: metadata filters, and FAISS ID selectors that enforce them.

Filters are applied *inside* the FAISS search: the index consults the selector while it scans and only ever ranks
accepted ids. Over-fetching a top-k and dropping non-matching hits afterwards would silently return fewer than k
results (or none) for selective filters, and cost more the more selective the filter; a selector does neither.
(Filters that keep only a few items skip the index altogether, see ``catalogue.EXACT_SUBSET_MAX``.)

This module also holds the ``field=value[,value]`` syntax (:func:`parse_filters`) and the check against an index's
columns (:func:`check_fields`); the CLI and the service reach both through
:func:`fashionlens.catalogue.parse_filters`, so they refuse the same input with the same one-line
:class:`~fashionlens.errors.CatalogueIndexError`.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fashionlens.errors import CatalogueIndexError

Filters = Mapping[str, str | Collection[str]]
"""Field -> accepted value(s). An item passes when, for every field, its value is one of the accepted ones."""

INTERNAL_FIELDS = frozenset({"path"})
"""Item-table columns that are not filters: the server-side image path is private, and a filter on it would tell a
client whether a guessed server path exists."""


def parse_filters(expressions: Iterable[str] | None) -> dict[str, list[str]]:
    """``field=value[,value...]`` expressions -> filters: ``["articleType=Tops,Tshirts"]`` ->
    ``{"articleType": ["Tops", "Tshirts"]}``. Repeating a field adds values; spaces around names and values go.

    Raises:
        CatalogueIndexError: An expression without ``=``, a field name or a value.
    """
    filters: dict[str, list[str]] = {}
    for expression in expressions or ():
        name, equals, text = expression.partition("=")
        name = name.strip()
        values = [v.strip() for v in text.split(",") if v.strip()]
        if not equals or not name or not values:
            raise CatalogueIndexError(f"filter {shown(expression)} must look like field=value or "
                                      f"field=value1,value2 (e.g. gender=Men)")
        filters.setdefault(name, []).extend(values)
    return filters


def check_fields(filters: Filters | None, columns: Collection[str]) -> None:
    """Refuse filters on a field that is not among ``columns`` (an index's item-table columns) or is internal.

    Raises:
        CatalogueIndexError: Naming the field and the fields that can be filtered on.
    """
    for field in filters or {}:
        if field in INTERNAL_FIELDS or field not in columns:
            known = ", ".join(c for c in columns if c not in INTERNAL_FIELDS) or "none"
            what = "internal field" if field in INTERNAL_FIELDS else "unknown filter field"
            raise CatalogueIndexError(f"{what} {shown(field)} cannot be filtered on; known fields: {known}")


def shown(text: str, limit: int = 80) -> str:
    """``repr`` of client-given text (a field, an item id), cut to ``limit`` characters so that an error message
    quoting a hostile 100 kB value stays one short line."""
    return repr(text) if len(text) <= limit else f"{text[:limit]!r}... ({len(text)} characters)"


class ItemFilter:
    """Evaluates metadata filters over an item table.

    Each filtered field is dictionary-encoded once (on first use) into a small dictionary of distinct values and
    one int32 code per item, so a filter compares the accepted values against the dictionary and then gathers
    booleans by code: ~1 ms at 10^6 items, where comparing 10^6 strings per query takes ~25 ms.

    Args:
        items: One row per catalogue item, text columns.
    """

    def __init__(self, items: pa.Table) -> None:
        self._items = items
        self._codes: dict[str, tuple[pa.Array, np.ndarray]] = {}

    def mask(self, filters: Filters | None) -> np.ndarray | None:
        """Boolean mask of the items passing ``filters``, or ``None`` when nothing is filtered.

        Metadata is stored as text, so accepted values are compared as text (``{"year": 2012}`` matches ``"2012"``).
        A value that no item has simply matches nothing; a field the catalogue does not have is an error, because
        it is almost always a typo that would otherwise return nothing without saying why.

        Raises:
            CatalogueIndexError: A field is not a metadata column, or is internal (see :data:`INTERNAL_FIELDS`).
        """
        if not filters:
            return None
        check_fields(filters, self._items.column_names)
        mask = np.ones(self._items.num_rows, dtype=bool)
        for field, accepted in filters.items():
            dictionary, codes = self._encoded(field)
            values = pa.array([str(value) for value in ([accepted] if isinstance(accepted, str) else accepted)])
            wanted = pc.is_in(dictionary, value_set=values.cast(dictionary.type)).to_numpy(zero_copy_only=False)
            mask &= np.append(wanted, False)[codes]  # the extra False is the code of missing values
        return mask

    def _encoded(self, field: str) -> tuple[pa.Array, np.ndarray]:
        if field not in self._codes:
            encoded = pc.dictionary_encode(self._items.column(field)).combine_chunks()
            missing = len(encoded.dictionary)
            self._codes[field] = (encoded.dictionary, pc.fill_null(encoded.indices, missing).to_numpy())
        return self._codes[field]


def allow_selector(ids: np.ndarray) -> faiss.IDSelector:
    """Selector accepting exactly ``ids`` (non-negative int64).

    A bitmap over ``0..max(ids)`` gives O(1) membership tests for any number of ids at one bit per catalogue item
    (125 kB at 10^6 items), where a hash set (``IDSelectorBatch``) would cost a hash probe per scanned vector.
    """
    flags = np.zeros(int(ids.max()) + 1 if len(ids) else 0, dtype=bool)
    flags[ids] = True
    # The one-argument form (missing from faiss's type stub) makes the selector hold a reference to the bitmap.
    return faiss.IDSelectorBitmap(np.packbits(flags, bitorder="little"))  # type: ignore[call-arg, arg-type]


def deny_selector(ids: np.ndarray) -> faiss.IDSelector:
    """Selector accepting every id except ``ids``: cheap when a few items are excluded from an unfiltered search."""
    return faiss.IDSelectorNot(faiss.IDSelectorBatch(np.ascontiguousarray(ids, dtype=np.int64)))
