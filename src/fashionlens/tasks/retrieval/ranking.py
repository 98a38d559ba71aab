"""Ranking a gallery by embedding and scoring the ranking: what validation and evaluation share.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from fashionlens.data.records import Manifest
from fashionlens.index import CatalogueIndex
from fashionlens.metrics import relevance_matrix, retrieval_metrics


def rank_gallery(query_vectors: np.ndarray, gallery_vectors: np.ndarray, metric: str, depth: int,
                 exclude_self: bool = False) -> np.ndarray:
    """Gallery positions of each query's ``depth`` nearest items, best first, ``-1`` where the gallery runs out.

    Args:
        query_vectors: ``(m, d)`` query embeddings.
        gallery_vectors: ``(n, d)`` gallery embeddings.
        metric: ``ip`` or ``l2`` (see :class:`CatalogueIndex`).
        depth: Results per query.
        exclude_self: Query ``i`` is gallery item ``i`` and must not be returned (similar-item search).
    """
    ids = pd.DataFrame({"item_id": [str(i) for i in range(len(gallery_vectors))]})
    index = CatalogueIndex.build(gallery_vectors, ids, model_id="evaluation", metric=metric)
    hits = index.search(query_vectors, min(depth + int(exclude_self), len(index)))
    ranked = np.full((len(query_vectors), depth), -1, dtype=np.int64)
    for query, found in enumerate(hits):
        rows = [int(hit.item_id) for hit in found if not (exclude_self and int(hit.item_id) == query)][:depth]
        ranked[query, :len(rows)] = rows
    return ranked


def score_ranking(query_keys: Sequence[str] | np.ndarray, gallery_keys: Sequence[str] | np.ndarray,
                  ranked: np.ndarray, ks: Sequence[int], exclude_self: bool = False) -> dict[str, float]:
    """:func:`~fashionlens.metrics.retrieval_metrics` of a ranking, relevance = equal keys (empty keys: unknown).

    Queries with an empty key, or with no relevant gallery item (other than themselves when ``exclude_self``), are
    unanswerable and left out; ``queries`` reports how many were scored.
    """
    queries = np.array([k if k else None for k in query_keys], dtype=object)
    gallery = np.array([k if k else None for k in gallery_keys], dtype=object)
    results = np.asarray(np.where(ranked >= 0, gallery[np.maximum(ranked, 0)], None), dtype=object)
    counts = pd.Series(gallery).value_counts()
    n_relevant = np.array([int(counts.get(k, 0)) - int(exclude_self) if k is not None else 0 for k in queries])
    relevance = relevance_matrix(queries, results)
    scores = retrieval_metrics(relevance, np.maximum(n_relevant, 0), ks)
    scores["queries"] = float((n_relevant > 0).sum())
    return scores


@dataclass
class QueryRoles:
    """Which rows query which: street photos search shop photos when both occur, else items search each other."""

    queries: np.ndarray
    gallery: np.ndarray
    exclude_self: bool

    @classmethod
    def of(cls, domains: np.ndarray, rows: np.ndarray, gallery_rows: np.ndarray | None = None) -> QueryRoles:
        street, shop = rows[domains[rows] == "street"], rows[domains[rows] == "shop"]
        if len(street) and len(shop):
            gallery = gallery_rows[domains[gallery_rows] == "shop"] if gallery_rows is not None else shop
            return cls(street, gallery, exclude_self=False)
        return cls(rows, rows, exclude_self=True)

    def answerable(self, keys: np.ndarray) -> int:
        """Queries with at least one relevant gallery item (other than themselves)."""
        counts = pd.Series(keys[self.gallery]).value_counts()
        found = pd.Series(keys[self.queries]).map(counts).fillna(0).to_numpy() - int(self.exclude_self)
        return int(((found > 0) & (keys[self.queries] != "")).sum())


def relevance_keys(manifest: Manifest, fields: Sequence[str]) -> np.ndarray:
    """Per-row relevance key: the fields' values joined (empty when any is missing)."""
    columns = [manifest.column(f).fillna("").astype(str).to_numpy() for f in fields]
    joined = ["|".join(values) if all(values) else "" for values in zip(*columns, strict=True)]
    return np.asarray(joined, dtype=object)

