"""The ``faiss`` catalogue backend: an in-process FAISS index, saved as files in the index directory.

Rows carry stable int64 FAISS ids (``IndexIDMap2`` for flat and HNSW, ``add_with_ids`` on IVF), so items can be
added and removed without renumbering the index. The vectors as indexed are kept too (memory-mapped after a load):
search by id, exact scoring of small filtered subsets, ``ivfpq`` re-ranking and HNSW rebuilds need them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Self

import faiss
import numpy as np
import pyarrow as pa

from fashionlens.errors import CatalogueIndexError
from fashionlens.index.catalogue import CatalogueIndex, SearchHit, Storage
from fashionlens.index.filters import ItemFilter, allow_selector, deny_selector
from fashionlens.index.kinds import METRICS, Params, get_kind
from fashionlens.index.store import IndexManifest, read_faiss_files, write_faiss_files

EXACT_SUBSET_MAX = 2048
"""Filtered searches whose filter keeps at most this many items score those items' stored vectors directly.

Larger filtered subsets are searched in the FAISS index with an ID selector. Small ones are not, for two reasons:
an approximate index only scans part of the catalogue (``nprobe`` IVF cells, ``efSearch`` graph candidates), so a
very selective filter may leave too few matching items inside the scanned part and return fewer than ``k`` hits;
and even an exact flat index still walks all 10^6 ids through the selector (~25 ms), where scoring 2048 stored
vectors is exact and takes well under a millisecond. Vector databases call this a "flat search cut-off".
"""


class FaissCatalogueIndex(CatalogueIndex):
    """FAISS index + the vectors as indexed + their int64 ids, row-aligned with the item table.

    FAISS uses OpenMP threads on every core by default, which speeds up builds and batched searches, but makes
    one-query-at-a-time serving slower on a busy machine (barrier waits): a service should call
    ``faiss.omp_set_num_threads(1)`` in its serving threads and get parallelism from concurrent requests (see
    ``benchmarks/bench_index.py``). HNSW graphs cannot delete nodes, so removing from an HNSW index rebuilds it from
    the stored vectors (minutes at 10^6 items: batch removals).
    """

    backend = "faiss"

    def __init__(
        self, manifest: IndexManifest, items: pa.Table, index: faiss.Index, ids: np.ndarray, vectors: np.ndarray
    ) -> None:
        super().__init__(manifest, items)
        self._index = index
        self._ids = ids
        self._vectors = vectors

    @classmethod
    def _create(cls, vectors: np.ndarray, items: pa.Table, manifest: IndexManifest, storage: Storage) -> Self:
        if storage:
            raise CatalogueIndexError(f"the faiss backend takes no storage options, got {', '.join(storage)}")
        kind = get_kind(manifest.kind)
        index = kind.create(manifest.dim, manifest.metric, manifest.params)
        kind.train(index, manifest.params, vectors)
        ids = np.arange(len(vectors), dtype=np.int64)
        index.add_with_ids(vectors, ids)
        return cls(manifest, items, index, ids, vectors)

    @classmethod
    def _open(cls, root: Path, manifest: IndexManifest, items: pa.Table) -> Self:
        return cls(manifest, items, *read_faiss_files(root, manifest))

    def _write(self, tmp: Path) -> None:
        write_faiss_files(tmp, self._index, self._ids, self._vectors)

    def _insert(self, vectors: np.ndarray, items: pa.Table) -> None:
        start = int(self._ids[-1]) + 1 if len(self._ids) else 0
        ids = np.arange(start, start + len(vectors), dtype=np.int64)
        self._index.add_with_ids(vectors, ids)
        self._vectors = np.concatenate([self._vectors, vectors])
        self._ids = np.concatenate([self._ids, ids])

    def _delete(self, rows: np.ndarray, keep: np.ndarray) -> None:
        vectors, ids = self._vectors[keep], self._ids[keep]
        if self._kind.removable:
            self._index.remove_ids(faiss.IDSelectorBatch(self._ids[rows]))
        else:
            index = self._kind.create(self._dim, self._metric, self._params)
            self._kind.train(index, self._params, vectors)
            index.add_with_ids(np.ascontiguousarray(vectors), ids)
            self._index = index
        self._vectors, self._ids = vectors, ids

    def _vector(self, row: int) -> np.ndarray:
        return np.asarray(self._vectors[row])

    def _search(
        self, queries: np.ndarray, k: int, filters: dict[str, list[str]], excluded: np.ndarray, knobs: Params
    ) -> list[list[SearchHit]]:
        search_params = self._kind.search_parameters(self._params, knobs.get("nprobe"), knobs.get("ef"))
        allowed = self._filter.mask(filters)
        if allowed is not None:
            allowed[excluded] = False
            rows = np.flatnonzero(allowed)
            if not len(rows):
                return [[] for _ in range(len(queries))]
            if len(rows) <= EXACT_SUBSET_MAX:
                return self._hits(*self._exact(queries, rows, min(k, len(rows))))
            search_params.sel = allow_selector(self._ids[rows])
            candidates = len(rows)
        else:
            candidates = len(self) - len(excluded)
            if len(excluded):
                search_params.sel = deny_selector(self._ids[excluded])
        k = min(k, candidates)
        fetch = min(self._kind.shortlist(self._params, k), candidates)
        scores, labels = self._index.search(queries, fetch, params=search_params)
        if fetch == k:
            return self._hits(scores, self._rows_of_ids(labels))
        return self._hits(*self._rerank(queries, self._rows_of_ids(labels), k))

    def _set_items(self, items: pa.Table) -> None:
        super()._set_items(items)
        self._filter = ItemFilter(items)

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

    def _rows_of_ids(self, labels: np.ndarray) -> np.ndarray:
        """Row numbers of FAISS ids (``-1``, FAISS's "no result", stays ``-1``)."""
        rows = np.searchsorted(self._ids, labels)
        return np.where(labels >= 0, rows, -1)
