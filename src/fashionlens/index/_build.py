"""Validation of what goes into a catalogue index: vectors, item metadata and the build arguments, turned into what
:class:`~fashionlens.index.catalogue.CatalogueIndex` and its backends store (float32 rows, normalised for ``ip``; an
Arrow table of text columns; the ``index.json`` manifest)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from fashionlens import __version__
from fashionlens.errors import CatalogueIndexError
from fashionlens.index.kinds import check_metric, get_kind
from fashionlens.index.store import ITEM_ID, IndexManifest, as_item_table


def prepare_build(vectors: np.ndarray, metadata: pd.DataFrame, model_id: str, metric: str, kind: str, backend: str,
                  params: dict[str, Any]) -> tuple[np.ndarray, pa.Table, IndexManifest]:
    """The validated vectors, item table and manifest of a new index (see
    :meth:`~fashionlens.index.catalogue.CatalogueIndex.build` for the arguments).

    Raises:
        CatalogueIndexError: Bad vectors, metadata, metric, kind or parameters.
    """
    index_kind = get_kind(kind)
    check_metric(metric)
    array = np.asarray(vectors)
    if array.ndim != 2 or 0 in array.shape:
        raise CatalogueIndexError(f"catalogue vectors must be a non-empty (n, d) array, got shape {array.shape}")
    n, dim = array.shape
    prepared = prepare_vectors(array, dim, metric, "catalogue vectors")
    items = prepare_items(metadata, n)
    resolved = index_kind.resolve_params(n, dim, params)
    index_kind.check_trainable(resolved, n)
    manifest = IndexManifest(model_id, dim, metric, kind, resolved, n, __version__, backend=backend)
    return prepared, items, manifest


def prepare_vectors(array: np.ndarray, dim: int, metric: str, what: str) -> np.ndarray:
    """Validate ``(n, dim)`` finite vectors as contiguous float32, L2-normalised for ``ip`` (copied only if needed)."""
    if array.ndim != 2 or array.shape[1] != dim:
        raise CatalogueIndexError(f"{what} must have shape (n, {dim}) to match the index, got {array.shape}")
    if not np.issubdtype(array.dtype, np.number):
        raise CatalogueIndexError(f"{what} must be numeric, got dtype {array.dtype}")
    prepared = np.ascontiguousarray(array, dtype=np.float32)
    squared = np.einsum("ij,ij->i", prepared, prepared)  # no (n, d) temporary, unlike np.linalg.norm
    bad = np.flatnonzero(~np.isfinite(squared) | ((squared == 0) & (metric == "ip")))
    if len(bad):
        problem = "zero or non-finite" if metric == "ip" else "non-finite"
        raise CatalogueIndexError(f"{what} row {int(bad[0])} is {problem} ({len(bad)} such rows)")
    if metric == "ip" and len(squared) and float(np.abs(squared - 1.0).max()) > 1e-4:
        prepared = prepared / np.sqrt(squared)[:, None]
    return prepared


def prepare_items(metadata: pd.DataFrame, n: int) -> pa.Table:
    """Validate item metadata (``n`` rows, unique non-empty ``item_id``) as an Arrow table of text columns."""
    if not isinstance(metadata, pd.DataFrame):
        raise CatalogueIndexError(f"metadata must be a pandas DataFrame, got {type(metadata).__name__}")
    if ITEM_ID not in metadata.columns:
        raise CatalogueIndexError(f"metadata has no {ITEM_ID!r} column; columns: {', '.join(map(str, metadata))}")
    if len(metadata) != n:
        raise CatalogueIndexError(f"metadata has {len(metadata)} rows but there are {n} vectors")
    if not all(isinstance(name, str) for name in metadata.columns) or not metadata.columns.is_unique:
        raise CatalogueIndexError(f"metadata column names must be unique strings, got {list(metadata.columns)}")
    ids = metadata[ITEM_ID].reset_index(drop=True).astype("string")
    empty = np.flatnonzero(ids.fillna("").str.strip().eq("").to_numpy(dtype=bool))
    if len(empty):
        raise CatalogueIndexError(f"metadata row {int(empty[0])} has an empty {ITEM_ID!r}")
    duplicated = ids[ids.duplicated()]
    if len(duplicated):
        raise CatalogueIndexError(f"metadata {ITEM_ID!r} {duplicated.iloc[0]!r} occurs more than once")
    return as_item_table(pa.Table.from_pandas(metadata.astype("string"), preserve_index=False))
