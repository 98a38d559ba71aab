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
from fashionlens.index._items import SearchHit
from fashionlens.index.catalogue import CatalogueIndex, Storage
from fashionlens.index.filters import allow_selector, deny_selector
from fashionlens.index.kinds import Params, get_kind
from fashionlens.index.store import IndexManifest, read_faiss_files, write_faiss_files


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
        self._stored = vectors

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
        write_faiss_files(tmp, self._index, self._ids, self._stored)

    def _insert(self, vectors: np.ndarray, items: pa.Table) -> None:
        start = int(self._ids[-1]) + 1 if len(self._ids) else 0
        ids = np.arange(start, start + len(vectors), dtype=np.int64)
        self._index.add_with_ids(vectors, ids)
        self._stored = np.concatenate([self._stored, vectors])
        self._ids = np.concatenate([self._ids, ids])

    def _delete(self, rows: np.ndarray, keep: np.ndarray) -> None:
        vectors, ids = self._stored[keep], self._ids[keep]
        if self._kind.removable:
            self._index.remove_ids(faiss.IDSelectorBatch(self._ids[rows]))
        else:
            index = self._kind.create(self._dim, self._metric, self._params)
            self._kind.train(index, self._params, vectors)
            index.add_with_ids(np.ascontiguousarray(vectors), ids)
            self._index = index
        self._stored, self._ids = vectors, ids

    def _vectors(self, rows: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(self._stored[rows])

    def _search(
        self,
        queries: np.ndarray,
        k: int,
        filters: dict[str, list[str]],
        allowed: np.ndarray | None,
        excluded: np.ndarray,
        knobs: Params,
    ) -> list[list[SearchHit]]:
        # The filter runs inside the FAISS search, as an ID selector (see fashionlens.index.filters).
        search_params = self._kind.search_parameters(self._params, knobs.get("nprobe"), knobs.get("ef"))
        if allowed is not None:
            search_params.sel = allow_selector(self._ids[allowed])
            candidates = len(allowed)
        else:
            candidates = len(self) - len(excluded)
            if len(excluded):
                search_params.sel = deny_selector(self._ids[excluded])
        fetch = min(self._kind.shortlist(self._params, k), candidates)
        scores, labels = self._index.search(queries, fetch, params=search_params)
        if fetch == k:
            return self._hits(scores, self._rows_of_ids(labels))
        return self._hits(*self._rerank(queries, self._rows_of_ids(labels), k))

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
