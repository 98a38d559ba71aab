"""Near-duplicates: a FAISS self-join of the catalogue's embeddings, pairs above a similarity, grouped into clusters.

The same photo uploaded under two ids, a re-encoded or resized copy, and the same product photographed for two
colour variants all sit far closer to each other in embedding space than two different products do. Exact byte
copies are told apart by a content hash, and a pair whose labels differ is marked: the same product filed under two
categories is as much a label problem as a duplicate one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import faiss
import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from fashionlens.errors import DataError


def file_digest(path: str | Path) -> str:
    """SHA-1 of a file's bytes (``""`` when it cannot be read)."""
    digest = hashlib.sha1()
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except OSError:
        return ""
    return digest.hexdigest()


def similar_pairs(vectors: np.ndarray, threshold: float, neighbours: int = 10) -> pd.DataFrame:
    """Pairs ``(a, b)``, ``a < b``, whose cosine similarity is at least ``threshold``.

    Each row's ``neighbours`` nearest rows are searched (exact inner product on L2-normalised vectors), so a group of
    more than ``neighbours + 1`` identical photos is still joined through its members' overlapping neighbourhoods.

    Raises:
        DataError: ``threshold`` outside (0, 1].
    """
    if not 0.0 < threshold <= 1.0:
        raise DataError(f"duplicate similarity threshold must be in (0, 1], got {threshold}")
    if len(vectors) < 2:
        return pd.DataFrame({"a": np.zeros(0, np.int64), "b": np.zeros(0, np.int64), "similarity": np.zeros(0)})
    unit = np.ascontiguousarray(vectors, dtype=np.float32).copy()
    faiss.normalize_L2(unit)
    index = faiss.IndexFlatIP(unit.shape[1])
    index.add(unit)
    scores, rows = index.search(unit, min(neighbours + 1, len(unit)))
    a = np.repeat(np.arange(len(unit)), rows.shape[1])
    b, s = rows.ravel(), scores.ravel()
    keep = (b >= 0) & (a != b) & (s >= threshold - 1e-6)
    low, high = np.minimum(a[keep], b[keep]), np.maximum(a[keep], b[keep])
    found = pd.DataFrame({"a": low, "b": high, "similarity": np.minimum(s[keep], 1.0)})
    pairs: pd.DataFrame = found.groupby(["a", "b"], as_index=False).agg(similarity=("similarity", "max"))
    return pairs.sort_values(["similarity", "a", "b"], ascending=[False, True, True], ignore_index=True)


def duplicate_table(vectors: np.ndarray, paths: Sequence[str], labels: pd.DataFrame, threshold: float = 0.95,
                    neighbours: int = 10) -> pd.DataFrame:
    """Near-duplicate pairs with their cluster, kind and label disagreement.

    Args:
        vectors: ``(n, d)`` embeddings.
        paths: Image file of each row (hashed to tell exact copies).
        labels: ``n`` rows of label columns compared within each pair.
        threshold: Cosine similarity at or above which two rows are called duplicates.
        neighbours: Nearest neighbours searched per row.

    Returns:
        Columns ``a``, ``b`` (row positions), ``similarity``, ``cluster`` (0 = largest group), ``kind``
        (``exact`` same bytes, ``near`` otherwise) and ``differs`` (label fields that disagree, ``;``-joined).
    """
    pairs = similar_pairs(vectors, threshold, neighbours)
    if pairs.empty:
        return pairs.assign(cluster=np.zeros(0, np.int64), kind="", differs="")
    members = np.unique(pairs[["a", "b"]].to_numpy())
    graph = coo_matrix((np.ones(len(pairs)), (pairs["a"], pairs["b"])), shape=(len(vectors), len(vectors)))
    _, component = connected_components(graph, directed=False)
    sizes = pd.Series(component[members]).value_counts()
    order = {label: rank for rank, label in enumerate(sizes.index)}  # biggest cluster first
    pairs["cluster"] = [order[component[a]] for a in pairs["a"]]
    digests = {row: file_digest(paths[row]) for row in members}
    pairs["kind"] = ["exact" if digests[a] and digests[a] == digests[b] else "near"
                     for a, b in zip(pairs["a"], pairs["b"], strict=True)]
    values = labels.astype("string").fillna("").to_numpy()
    pairs["differs"] = [";".join(c for c, x, y in zip(labels.columns, values[a], values[b], strict=True) if x != y)
                        for a, b in zip(pairs["a"], pairs["b"], strict=True)]
    return pairs.sort_values(["cluster", "similarity"], ascending=[True, False], ignore_index=True)
