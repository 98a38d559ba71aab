"""Milvus boolean expressions for catalogue filters and item ids, with every value, field name and id an escaped
string literal, so no client-given text can add expression syntax (see :mod:`fashionlens.index.milvus_backend`)."""

from __future__ import annotations

from fashionlens.index.store import ITEM_ID

META = "meta"
"""The JSON field holding the metadata columns that have no VARCHAR field of their own."""
_ESCAPES = str.maketrans({"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r"})


def literal(text: str) -> str:
    """``text`` as a Milvus expression string literal: double-quoted, with backslash, double quote and line breaks
    escaped. Everything else, quotes, operators and control characters included, stays inside the literal."""
    return '"' + text.translate(_ESCAPES) + '"'


def expression(filters: dict[str, list[str]], exclude: list[str], fields: dict[str, str] | None = None) -> str:
    """The Milvus boolean expression for ``filters`` (column -> accepted values, columns already checked) and
    excluded item ids, ``and``-ed together: ``in`` on ``item_id`` and on the VARCHAR field of a column in ``fields``
    (column -> field name), an ``or`` group on the JSON ``meta`` key of any other column (Milvus has no ``in`` on
    JSON keys).

    ``{"gender": ["Men"], "colour": ["Red", "Blue"]}`` with ``exclude=["42"]`` and ``fields={"gender": "f0"}``
    gives ``f0 in ["Men"] and (meta["colour"] == "Red" or meta["colour"] == "Blue") and item_id not in ["42"]``.
    """
    clauses = []
    for column, values in filters.items():
        unique = list(dict.fromkeys(values))
        field = ITEM_ID if column == ITEM_ID else (fields or {}).get(column)
        if field is not None:
            clauses.append(f"{field} in [{', '.join(map(literal, unique))}]")
        else:
            key = f"{META}[{literal(column)}]"
            clauses.append("(" + " or ".join(f"{key} == {literal(value)}" for value in unique) + ")")
    if exclude:
        clauses.append(f"{ITEM_ID} not in [{', '.join(map(literal, exclude))}]")
    return " and ".join(clauses)


def id_filter(item_ids: list[str]) -> str:
    # Not the client's ``ids=`` argument: pymilvus 3.0 pastes string ids into its expression between single
    # quotes without escaping them, so an id such as ``' or 1==1 or '`` would select (or delete) other rows.
    return expression({ITEM_ID: item_ids}, [])
