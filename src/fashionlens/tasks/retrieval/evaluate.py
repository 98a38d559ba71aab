"""Scoring an embedder on a labelled manifest: simulated or real street-to-shop pairs, and similar-item search.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fashionlens.data.records import META_PREFIX, Manifest
from fashionlens.errors import ConfigError, DataError
from fashionlens.reports.retrieval_grid import save_results_grid
from fashionlens.tasks.retrieval.model import Embedder
from fashionlens.tasks.retrieval.ranking import QueryRoles, rank_gallery, relevance_keys, score_ranking

SIMULATED_FIELD = META_PREFIX + "simulated"


def _grid(manifest: Manifest, roles: QueryRoles, ranked: np.ndarray, keys: np.ndarray, path: str | Path, title: str,
          n_queries: int, seed: int) -> Path:
    chosen = np.sort(np.random.default_rng(seed).permutation(len(roles.queries))[:n_queries])
    paths = manifest.frame["path"].to_numpy()
    results = [[roles.gallery[p] for p in ranked[q] if p >= 0] for q in chosen]
    return save_results_grid(
        [paths[roles.queries[q]] for q in chosen], [[paths[r] for r in rows] for rows in results],
        [[bool(keys[r]) and keys[r] == keys[roles.queries[q]] for r in rows] for q, rows in zip(chosen, results,
                                                                                                 strict=True)],
        path, title=title)


def _is_simulated(manifest: Manifest, rows: np.ndarray) -> bool:
    return SIMULATED_FIELD in manifest.frame.columns and bool(
        (manifest.frame[SIMULATED_FIELD].iloc[rows].astype(str) == "true").any())


def evaluate_street_to_shop(embedder: Embedder, manifest: Manifest, split: str = "test",
                            ks: Sequence[int] = (1, 10, 20), gallery: str = "split",
                            grid_path: str | Path | None = None, grid_queries: int = 8,
                            show_progress: bool = False) -> dict[str, float]:
    """Street photos of ``split`` query shop photos; relevance = same ``item_id``.

    Args:
        embedder: The model to score.
        manifest: Shop and street rows sharing ``item_id``.
        split: Split whose street photos are the queries.
        ks: Cut-offs of ``recall@K`` (hit rate = top-K accuracy) and ``precision@K``.
        gallery: ``split``: the shop photos of the same split (held-back products only); ``all``: every shop photo
            in the manifest (the whole catalogue, a harder test).
        grid_path: Also write a PNG of ``grid_queries`` queries and their top-10, true matches outlined.
        grid_queries: Queries in the grid.
        show_progress: Draw a progress bar while extracting features.

    Returns:
        ``recall@K``, ``precision@K``, ``mAP`` and ``queries``; ``simulated`` is 1.0 when the queries are simulated
        street views (report those as simulated street-to-shop).
    """
    if gallery not in ("split", "all"):
        raise ConfigError(f"gallery must be 'split' or 'all', got '{gallery}'")
    subset_rows = np.flatnonzero(manifest.frame["split"].to_numpy() == split)
    domain = manifest.frame["domain"].to_numpy()
    gallery_rows = np.arange(len(manifest)) if gallery == "all" else subset_rows
    roles = QueryRoles.of(domain, subset_rows, gallery_rows)
    if roles.exclude_self:
        raise DataError(f"split '{split}' of manifest '{manifest.name}' needs both street and shop photos")
    used = np.union1d(roles.queries, roles.gallery)
    vectors = embedder.embed(manifest.subset(np.isin(np.arange(len(manifest)), used)), show_progress=show_progress)
    query_vectors, gallery_vectors = vectors[np.searchsorted(used, roles.queries)], vectors[np.searchsorted(
        used, roles.gallery)]
    ranked = rank_gallery(query_vectors, gallery_vectors, embedder.metric, max(*ks, 10))
    keys = relevance_keys(manifest, ["item_id"])
    scores = score_ranking(keys[roles.queries], keys[roles.gallery], ranked, ks)
    simulated = _is_simulated(manifest, roles.queries)
    scores["simulated"] = float(simulated)
    if grid_path is not None:
        kind = "SIMULATED street→shop" if simulated else "street→shop"
        _grid(manifest, roles, ranked[:, :10], keys, grid_path, f"{kind} ({split} split, gallery: {gallery}); "
              f"green = the query's item", grid_queries, embedder.config.train.seed)
    return scores


def evaluate_similar_items(embedder: Embedder, manifest: Manifest, split: str = "test", k: int = 10,
                           fields: Sequence[str] = ("articleType",),
                           strict_fields: Sequence[str] | None = ("articleType", "baseColour"),
                           grid_path: str | Path | None = None, grid_queries: int = 8,
                           show_progress: bool = False) -> dict[str, float]:
    """Each catalogue item of ``split`` queries the others; relevance = same ``fields`` (e.g. articleType).

    Only the split's items form the gallery (the val/test products, never seen in training), and an item is never
    its own result. Items whose key is missing, or unique in the split, cannot be answered and are left out.

    Returns:
        ``precision@k`` (the headline), ``recall@k`` (hit rate), ``mAP``, ``queries``, and ``precision@k_strict``
        with relevance = same ``strict_fields`` (e.g. articleType and baseColour) when given (NaN when no item of
        the split has a strict match).
    """
    rows = np.flatnonzero(manifest.frame["split"].to_numpy() == split)
    if len(rows) < 2:
        raise DataError(f"split '{split}' of manifest '{manifest.name}' has {len(rows)} item(s); need at least 2")
    if k > len(rows) - 1:
        raise ConfigError(f"k={k} is larger than the {len(rows) - 1} other items of split '{split}'")
    vectors = embedder.embed(manifest.subset(np.isin(np.arange(len(manifest)), rows)), show_progress=show_progress)
    ranked = rank_gallery(vectors, vectors, embedder.metric, k, exclude_self=True)
    roles = QueryRoles(rows, rows, exclude_self=True)
    keys = relevance_keys(manifest, fields)
    scores = score_ranking(keys[rows], keys[rows], ranked, [k], exclude_self=True)
    if strict_fields:
        strict = relevance_keys(manifest, strict_fields)
        scores[f"precision@{k}_strict"] = (score_ranking(strict[rows], strict[rows], ranked, [k], exclude_self=True)
                                           [f"precision@{k}"] if roles.answerable(strict) else float("nan"))
    if grid_path is not None:
        _grid(manifest, roles, ranked[:, :10], keys, grid_path,
              f"similar items ({split} split); green = same {' + '.join(fields)}", grid_queries,
              embedder.config.train.seed)
    return scores
