"""The catalogue index: product embeddings searchable by similarity and filterable by metadata.

A :class:`CatalogueIndex` keeps together what must never drift apart: the FAISS index, the item metadata
(``item_id`` plus filterable fields such as category, gender, colour, image path), the vectors as indexed, and the
identity of the embedding model that produced them. Saving writes all of it to one directory atomically (see
:mod:`fashionlens.index.store`), and loading checks the model and dimension, so a query embedded by a different
model is rejected instead of silently returning unrelated products.

Rows carry stable int64 FAISS ids (``IndexIDMap2`` for flat and HNSW, ``add_with_ids`` on IVF), so items can be
added and removed without renumbering the index. With the default ``ip`` metric vectors are L2-normalised on the
way in and scores are cosine similarities; with ``l2`` scores are squared Euclidean distances (lower is closer).
"""

from __future__ import annotations

import os
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from fashionlens.errors import CatalogueIndexError
from fashionlens.index.filters import Filters, ItemFilter, allow_selector, deny_selector
from fashionlens.index.kinds import METRICS, IndexKind, Params, check_metric, get_kind, positive_int
from fashionlens.index.store import (
    ITEM_ID,
    MANIFEST_FILE,
    IndexFiles,
    IndexManifest,
    as_item_table,
    fashionlens_version,
    read_index_dir,
    write_index_dir,
)

EXACT_SUBSET_MAX = 2048
"""Filtered searches whose filter keeps at most this many items score those items' stored vectors directly.

Larger filtered subsets are searched in the FAISS index with an ID selector. Small ones are not, for two reasons:
an approximate index only scans part of the catalogue (``nprobe`` IVF cells, ``efSearch`` graph candidates), so a
very selective filter may leave too few matching items inside the scanned part and return fewer than ``k`` hits;
and even an exact flat index still walks all 10^6 ids through the selector (~25 ms), where scoring 2048 stored
vectors is exact and takes well under a millisecond. Vector databases call this a "flat search cut-off".
"""


@dataclass(frozen=True)
class SearchHit:
    """One search result.

    Attributes:
        item_id: The catalogue item.
        score: Cosine similarity for ``ip`` indexes (higher is closer), squared L2 distance for ``l2`` (lower is
            closer). Computed from full vectors for every kind (``ivfpq`` re-ranks with them unless ``k_factor=1``).
        rank: 1 for the best hit of a query, 2 for the next...
        metadata: The item's other fields (``None`` where missing).
    """

    item_id: str
    score: float
    rank: int
    metadata: dict[str, str | None]


class CatalogueIndex:
    """FAISS index + item metadata + stored vectors + embedding-model identity. Create with :meth:`build`/:meth:`load`.

    Searches may run concurrently; :meth:`add` and :meth:`remove` must not run alongside anything else. FAISS uses
    OpenMP threads on every core by default, which speeds up builds and batched searches, but makes one-query-at-
    a-time serving slower on a busy machine (barrier waits): a service should call ``faiss.omp_set_num_threads(1)``
    in its serving threads and get parallelism from concurrent requests (see ``benchmarks/bench_index.py``).
    """

    def __init__(self, files: IndexFiles) -> None:
        manifest = files.manifest
        self._index = files.index
        self._model_id = manifest.model_id
        self._metric = manifest.metric
        self._kind: IndexKind = get_kind(manifest.kind)
        self._params: Params = dict(manifest.params)
        self._dim = manifest.dim
        self._models: dict[str, Path] = {}
        self._set_rows(files.items, files.vectors, files.ids)

    @classmethod
    def build(
        cls,
        vectors: np.ndarray,
        metadata: pd.DataFrame,
        model_id: str,
        metric: str = "ip",
        kind: str = "flat",
        **params: int,
    ) -> CatalogueIndex:
        """Index ``vectors`` (row i describes ``metadata`` row i).

        Args:
            vectors: ``(n, d)`` embeddings, L2-normalised here for ``ip``. A C-contiguous float32 array that needs
                no normalisation is kept without a copy (at 10^6 x 1280 a copy is 5 GB), so do not modify it later.
            metadata: ``n`` rows with a unique, non-empty ``item_id`` column; every other column is a filterable
                field. Values are stored as text.
            model_id: Identity of the embedding model (e.g. backbone, weights id and checkpoint hash), checked by
                :meth:`load` so that queries and catalogue always come from the same model.
            metric: ``"ip"`` (cosine similarity) or ``"l2"``.
            kind: A key of :data:`~fashionlens.index.kinds.INDEX_KINDS`: ``flat``, ``ivf``, ``ivfpq`` or ``hnsw``.
            **params: Index parameters overriding the kind's defaults (``nlist``, ``nprobe``, ``m``, ``nbits``,
                ``M``, ``efConstruction``, ``efSearch``; see :mod:`fashionlens.index.kinds`). IVF kinds train on a
                seeded random sample of the vectors.

        Raises:
            CatalogueIndexError: Bad vectors, metadata, model id, metric, kind or parameters.
        """
        if not isinstance(model_id, str) or not model_id.strip():
            raise CatalogueIndexError(f"model_id must be a non-empty string, got {model_id!r}")
        index_kind = get_kind(kind)
        check_metric(metric)
        array = np.asarray(vectors)
        if array.ndim != 2 or 0 in array.shape:
            raise CatalogueIndexError(f"catalogue vectors must be a non-empty (n, d) array, got shape {array.shape}")
        n, dim = array.shape
        prepared = _prepare_vectors(array, dim, metric, "catalogue vectors")
        items = _prepare_items(metadata, n)
        resolved = index_kind.resolve_params(n, dim, params)
        faiss_index = index_kind.create(dim, metric, resolved)
        index_kind.train(faiss_index, resolved, prepared)
        ids = np.arange(n, dtype=np.int64)
        faiss_index.add_with_ids(prepared, ids)
        manifest = IndexManifest(model_id, dim, metric, kind, resolved, n, fashionlens_version())
        return cls(IndexFiles(manifest=manifest, index=faiss_index, ids=ids, items=items, vectors=prepared))

    @classmethod
    def load(
        cls, directory: str | os.PathLike[str], expected_model_id: str | None = None, expected_dim: int | None = None
    ) -> CatalogueIndex:
        """Load an index saved with :meth:`save`.

        Args:
            directory: The index directory.
            expected_model_id: When given, the model id the index must have been built with (the model that will
                embed the queries).
            expected_dim: When given, the vector dimension the index must have.

        Raises:
            CatalogueIndexError: Missing directory or file, corrupt or inconsistent file (named), or a model or
                dimension mismatch. Mismatches are detected from ``index.json`` before loading anything large.
        """
        root = Path(directory)
        if not root.is_dir():
            raise CatalogueIndexError(f"catalogue index directory not found: {root}")
        manifest = IndexManifest.read(root / MANIFEST_FILE)
        models = {role: Path(os.path.normpath(root / path)) for role, path in manifest.models.items()}
        if expected_model_id is not None and manifest.model_id != expected_model_id:
            raise CatalogueIndexError(
                f"catalogue index {root} was built with embedding model {manifest.model_id!r}, not "
                f"{expected_model_id!r}; {model_fix(models.get('embedder'))}"
            )
        if expected_dim is not None and manifest.dim != expected_dim:
            raise CatalogueIndexError(
                f"catalogue index {root} holds {manifest.dim}-dimensional vectors, but {expected_dim} were expected"
            )
        index = cls(read_index_dir(root, manifest))
        index._models = models
        return index

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write the index to ``directory`` atomically (a failed save leaves the previous contents intact).

        Returns:
            The directory.

        Raises:
            CatalogueIndexError: Writing failed.
        """
        models = {role: _recorded_path(path, Path(directory).absolute()) for role, path in self._models.items()}
        manifest = IndexManifest(
            self._model_id, self._dim, self._metric, self._kind.name, self.params, len(self), fashionlens_version(),
            models=models,
        )
        write_index_dir(directory, IndexFiles(manifest, self._index, self._ids, self._items, self._vectors))
        return Path(directory)

    @property
    def model_id(self) -> str:
        """Identity of the embedding model the vectors come from."""
        return self._model_id

    @property
    def models(self) -> dict[str, Path]:
        """Directories of the models to search with, by role (``embedder``, ``tagger``); empty when none recorded."""
        return dict(self._models)

    def record_model(self, role: str, directory: str | os.PathLike[str] | None) -> None:
        """Record where the ``role`` model lives (``None``: forget it); :meth:`save` writes it into ``index.json``."""
        if directory is None:
            self._models.pop(role, None)
        else:
            self._models[role] = Path(directory).absolute()

    @property
    def fields(self) -> list[str]:
        """Names of the filterable metadata fields (every column but ``item_id``)."""
        return [name for name in self._items.column_names if name != ITEM_ID]

    def values(self, field: str) -> list[str]:
        """Distinct non-missing values of metadata ``field``, sorted.

        Raises:
            CatalogueIndexError: Unknown field.
        """
        if field not in self._items.column_names:
            raise CatalogueIndexError(f"catalogue index has no field {field!r}; fields: {', '.join(self.fields)}")
        return sorted(value for value in pc.unique(self._items.column(field)).to_pylist() if value is not None)

    @property
    def dim(self) -> int:
        """Vector dimension."""
        return self._dim

    @property
    def metric(self) -> str:
        """``"ip"`` or ``"l2"``."""
        return self._metric

    @property
    def kind(self) -> str:
        """Index kind name."""
        return self._kind.name

    @property
    def params(self) -> Params:
        """Resolved index parameters (a copy)."""
        return dict(self._params)

    def __len__(self) -> int:
        return len(self._ids)

    def info(self) -> dict[str, Any]:
        """Summary for logs and the service: count, dim, metric, kind, params, model id, fields with distinct counts."""
        fields = {
            name: int(pc.count_distinct(self._items.column(name)).as_py())
            for name in self._items.column_names
            if name != ITEM_ID
        }
        return {
            "count": len(self),
            "dim": self._dim,
            "metric": self._metric,
            "kind": self._kind.name,
            "params": self.params,
            "model_id": self._model_id,
            "fields": fields,
            "models": {role: str(path) for role, path in self._models.items()},
        }

    def add(self, vectors: np.ndarray, metadata: pd.DataFrame) -> None:
        """Add items (same contract as :meth:`build`); IVF kinds keep their trained cells.

        Raises:
            CatalogueIndexError: Bad vectors or metadata, or an ``item_id`` already in the index.
        """
        prepared = _prepare_vectors(np.asarray(vectors), self._dim, self._metric, "added vectors")
        items = _prepare_items(metadata, len(prepared))
        clash = next((item_id for item_id in items[ITEM_ID].to_pylist() if item_id in self._row_of), None)
        if clash is not None:
            raise CatalogueIndexError(f"item_id {clash!r} is already in the catalogue index")
        start = int(self._ids[-1]) + 1 if len(self._ids) else 0
        ids = np.arange(start, start + len(prepared), dtype=np.int64)
        self._index.add_with_ids(prepared, ids)
        merged = pa.concat_tables([self._items, items], promote_options="default").combine_chunks()
        self._set_rows(merged, np.concatenate([self._vectors, prepared]), np.concatenate([self._ids, ids]))

    def remove(self, item_ids: Collection[str]) -> None:
        """Remove items. HNSW graphs cannot delete nodes, so an HNSW index is rebuilt from the stored vectors
        (minutes at 10^6 items: batch removals).

        Raises:
            CatalogueIndexError: An id is not in the index (nothing is removed then).
        """
        rows = np.unique(self._rows_of(item_ids, strict=True))
        if not len(rows):
            return
        keep = np.ones(len(self), dtype=bool)
        keep[rows] = False
        vectors, ids = self._vectors[keep], self._ids[keep]
        if self._kind.removable:
            self._index.remove_ids(faiss.IDSelectorBatch(self._ids[rows]))
        else:
            self._index = self._kind.create(self._dim, self._metric, self._params)
            self._kind.train(self._index, self._params, vectors)
            self._index.add_with_ids(np.ascontiguousarray(vectors), ids)
        self._set_rows(self._items.filter(pa.array(keep)), vectors, ids)

    def search(
        self,
        queries: np.ndarray,
        k: int = 10,
        filters: Filters | None = None,
        exclude: Collection[str] | None = None,
        nprobe: int | None = None,
        ef: int | None = None,
    ) -> list[list[SearchHit]]:
        """The ``k`` nearest catalogue items to each query, best first.

        Args:
            queries: ``(m, d)`` query embeddings from the index's model (normalised here for ``ip``).
            k: Hits per query. Fewer are returned when fewer items pass the filters.
            filters: Field -> accepted value(s), applied inside the FAISS search through an ID selector (see
                :mod:`fashionlens.index.filters`). An unknown field is an error; a value nothing has gives no hits.
            exclude: Item ids never to return (ids not in the index are ignored).
            nprobe: IVF cells to scan (overrides the index default; more is slower and more accurate).
            ef: HNSW candidate list size (overrides ``efSearch``; more is slower and more accurate).

        Raises:
            CatalogueIndexError: ``k`` < 1, wrong query shape, unknown filter field, or a knob the kind lacks.
        """
        k = positive_int("k", k)
        prepared = _prepare_vectors(np.asarray(queries), self._dim, self._metric, "queries")
        search_params = self._kind.search_parameters(self._params, nprobe, ef)
        allowed = self._filter.mask(filters)
        excluded = np.unique(self._rows_of(exclude or (), strict=False))
        if allowed is not None:
            allowed[excluded] = False
            rows = np.flatnonzero(allowed)
            if not len(rows) or not len(prepared):
                return [[] for _ in range(len(prepared))]
            if len(rows) <= EXACT_SUBSET_MAX:
                return self._hits(*self._exact(prepared, rows, min(k, len(rows))))
            search_params.sel = allow_selector(self._ids[rows])
            candidates = len(rows)
        else:
            candidates = len(self) - len(excluded)
            if not candidates or not len(prepared):
                return [[] for _ in range(len(prepared))]
            if len(excluded):
                search_params.sel = deny_selector(self._ids[excluded])
        k = min(k, candidates)
        fetch = min(self._kind.shortlist(self._params, k), candidates)
        scores, labels = self._index.search(prepared, fetch, params=search_params)
        if fetch == k:
            return self._hits(scores, self._rows_of_ids(labels))
        return self._hits(*self._rerank(prepared, self._rows_of_ids(labels), k))

    def search_by_id(
        self,
        item_id: str,
        k: int = 10,
        filters: Filters | None = None,
        nprobe: int | None = None,
        ef: int | None = None,
    ) -> list[SearchHit]:
        """Items most similar to catalogue item ``item_id``, never including the item itself.

        Raises:
            CatalogueIndexError: ``item_id`` is not in the index, or as :meth:`search`.
        """
        row = int(self._rows_of([item_id], strict=True)[0])
        return self.search(self._vectors[row : row + 1], k, filters, exclude=[item_id], nprobe=nprobe, ef=ef)[0]

    def _exact(self, queries: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` (``k <= len(rows)``) scores and rows of ``queries`` among the stored vectors of ``rows``."""
        scores, local = faiss.knn(queries, self._vectors[rows], k, metric=METRICS[self._metric])
        return scores, rows[local]

    def _rerank(self, queries: np.ndarray, shortlists: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` of each query's shortlist of rows (``-1`` = none) by exact score; ``-1`` pads short results."""
        scores = np.zeros((len(queries), k), dtype=np.float32)
        rows = np.full((len(queries), k), -1, dtype=np.int64)
        for i, (query, shortlist) in enumerate(zip(queries, shortlists, strict=True)):
            found = shortlist[shortlist >= 0]
            if len(found):
                best_scores, best_rows = self._exact(query[None], found, min(k, len(found)))
                scores[i, : best_rows.shape[1]], rows[i, : best_rows.shape[1]] = best_scores[0], best_rows[0]
        return scores, rows

    def _set_rows(self, items: pa.Table, vectors: np.ndarray, ids: np.ndarray) -> None:
        # A dict answers "which row is item X" in well under a microsecond, where a pandas or Arrow lookup
        # costs ~0.1-0.5 ms per call at 10^6 items -- paid by every search (exclusions) and search_by_id.
        self._items = items
        self._vectors = vectors
        self._ids = ids
        self._filter = ItemFilter(items)
        self._row_of = {item_id: row for row, item_id in enumerate(items.column(ITEM_ID).to_pylist())}

    def _rows_of(self, item_ids: Collection[str], strict: bool) -> np.ndarray:
        """Row numbers of ``item_ids``; unknown ids raise when ``strict`` and are skipped otherwise."""
        rows = []
        for item_id in [item_ids] if isinstance(item_ids, str) else item_ids:
            row = self._row_of.get(item_id)
            if row is not None:
                rows.append(row)
            elif strict:
                raise CatalogueIndexError(f"item_id {item_id!r} is not in the catalogue index")
        return np.array(rows, dtype=np.int64)

    def _rows_of_ids(self, labels: np.ndarray) -> np.ndarray:
        """Row numbers of FAISS ids (``-1``, FAISS's "no result", stays ``-1``)."""
        rows = np.searchsorted(self._ids, labels)
        return np.where(labels >= 0, rows, -1)

    def _hits(self, scores: np.ndarray, rows: np.ndarray) -> list[list[SearchHit]]:
        found = rows >= 0
        records = iter(self._items.take(rows[found]).to_pylist())  # ~50x faster than pandas .iloc + .to_dict
        results = []
        for query_scores, query_found in zip(scores, found, strict=True):
            hits = []
            for rank, score in enumerate(query_scores[query_found].tolist(), start=1):
                metadata = next(records)
                item_id = metadata.pop(ITEM_ID)
                hits.append(SearchHit(item_id=item_id, score=score, rank=rank, metadata=metadata))
            results.append(hits)
        return results


def _recorded_path(model: Path, index_dir: Path) -> str:
    """How ``index.json`` records a model directory: relative when it sits beside the index (the two move
    together, as ``models/index`` and ``models/embedder`` do), absolute otherwise (the index may move alone)."""
    relative = os.path.relpath(model, index_dir)
    return relative if Path(relative).parts.count("..") <= 1 else str(model)


def model_fix(recorded: Path | None) -> str:
    """How to fix an embedding-model mismatch: the index's recorded embedder when it has one."""
    if recorded is not None:
        return f"search it with the embedder it records, {recorded} (omit --model, or pass --model {recorded})"
    return "pass the embedder directory that built it (--model DIR), or rebuild the index with the current model"


def _prepare_vectors(array: np.ndarray, dim: int, metric: str, what: str) -> np.ndarray:
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


def _prepare_items(metadata: pd.DataFrame, n: int) -> pa.Table:
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
