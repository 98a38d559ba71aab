"""Audit a catalogue: label issues, near-duplicates and broken or odd photos, from one pass of frozen features.

:func:`audit_catalogue` embeds every image once (through the shared feature cache), then runs the three checks on
the vectors: out-of-fold heads + confident learning per class field, a FAISS self-join for duplicates, and header /
thumbnail checks with a neighbour-distance outlier score for the photos themselves.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from rich.console import Console

from fashionlens.audit.duplicates import duplicate_table
from fashionlens.audit.labels import RANK_METHODS, RankBy, label_issue_table, taxonomy_breaks
from fashionlens.audit.photos import PhotoLimits, outlier_scores, photo_table
from fashionlens.data.records import Manifest
from fashionlens.errors import DataError
from fashionlens.features import progress_bar
from fashionlens.tasks.common import frozen_features
from fashionlens.tasks.retrieval import Embedder


@dataclass
class AuditConfig:
    """What an audit checks and how strictly.

    Attributes:
        fields: Class fields (``class:<field>`` columns) checked for label issues; empty = every class field.
        levels: Class fields forming a hierarchy, root first: each is checked, and paths breaking the taxonomy the
            catalogue implies are flagged.
        folds: Folds of the out-of-fold heads.
        rank_by: Label-quality score that ranks label issues (``self_confidence`` or ``normalized_margin``).
        min_class_size: Classes with fewer labelled rows are not judged.
        pca_dims: Fit the label heads on this many principal components (faster on big catalogues, slightly less
            precise); ``None``: every feature dimension.
        duplicate_threshold: Cosine similarity at or above which two photos are near-duplicates.
        duplicate_neighbours: Nearest neighbours searched per photo for duplicates.
        photos: Limits of the photo checks.
        max_items: Audit a seeded random sample of this many rows (``None``: all).
        seed: Fold and sample seed.
    """

    fields: list[str] = field(default_factory=list)
    levels: list[str] = field(default_factory=list)
    folds: int = 5
    rank_by: RankBy = "self_confidence"
    min_class_size: int = 5
    pca_dims: int | None = None
    duplicate_threshold: float = 0.97
    duplicate_neighbours: int = 10
    photos: PhotoLimits = field(default_factory=PhotoLimits)
    max_items: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.folds < 2:
            raise DataError(f"folds must be at least 2, got {self.folds}")
        if self.rank_by not in RANK_METHODS:
            raise DataError(f"unknown ranking {self.rank_by!r}; choose one of {', '.join(RANK_METHODS)}")
        if self.max_items is not None and self.max_items < 1:
            raise DataError(f"max_items must be positive, got {self.max_items}")


@dataclass
class CatalogueAudit:
    """Findings of an audit; every table carries ``item_id`` and ``path`` of the rows it names.

    Attributes:
        label_issues: Suspicious labels (``field``, ``given``, ``suggested``, ``quality``, ...), most suspicious
            (lowest label quality) first, all fields together.
        taxonomy_breaks: Rows whose parent class disagrees with the catalogue's majority parent of their class.
        duplicates: Near-duplicate pairs (``a_*`` and ``b_*`` columns, ``similarity``, ``cluster``, ``kind``,
            ``differs``).
        photos: Unreadable, tiny, extreme-aspect, near-blank and outlier photos.
        outliers: Every readable photo's neighbour distance and robust z-score, most outlying first.
        summary: Counts, settings and timings.
    """

    label_issues: pd.DataFrame
    taxonomy_breaks: pd.DataFrame
    duplicates: pd.DataFrame
    photos: pd.DataFrame
    outliers: pd.DataFrame
    summary: dict[str, Any]


def _fields(manifest: Manifest, config: AuditConfig) -> list[str]:
    """The class fields to check, validated against the manifest."""
    available = manifest.class_heads
    wanted = list(dict.fromkeys([*config.levels, *config.fields])) or available
    unknown = [name for name in wanted if name not in available]
    if unknown:
        raise DataError(f"manifest '{manifest.name}' has no class field {', '.join(map(repr, unknown))}; "
                        f"it has {', '.join(available) or 'none'}")
    for name in wanted:  # fail before the slow feature pass
        counts = manifest.class_column(name).value_counts().drop("", errors="ignore")
        if int((counts >= config.min_class_size).sum()) < 2:
            raise DataError(f"field '{name}' has {int((counts >= config.min_class_size).sum())} class(es) with at "
                            f"least {config.min_class_size} labelled rows; label issues need two or more")
    return wanted


def _with_items(table: pd.DataFrame, manifest: Manifest, column: str = "row", prefix: str = "") -> pd.DataFrame:
    """``table`` with the ``item_id`` and ``path`` of the manifest rows in ``column``."""
    rows = table[column].to_numpy(dtype=np.int64)
    frame = manifest.frame
    ids = frame["item_id"].astype("string").fillna("").to_numpy()
    item_ids = np.where(ids == "", frame.index.astype(str).to_numpy(), ids)
    out = table.copy()
    at = list(out.columns).index(column)
    out.insert(at + 1, f"{prefix}item_id", item_ids[rows] if len(rows) else [])
    out.insert(at + 2, f"{prefix}path", frame["path"].to_numpy()[rows] if len(rows) else [])
    return out


def audit_catalogue(manifest: Manifest, config: AuditConfig | None = None, embedder: Embedder | None = None,
                    vectors: np.ndarray | None = None, console: Console | None = None,
                    show_progress: bool = True) -> CatalogueAudit:
    """Audit ``manifest``: label issues per class field, taxonomy breaks, near-duplicates and odd photos.

    Args:
        manifest: The catalogue (any manifest with ``class:`` columns; splits are ignored: the whole table is judged).
        config: What to check (defaults: every class field, 5 folds).
        embedder: Embeds images for duplicates and outliers (default: the untrained ImageNet baseline, whose frozen
            features also feed the label heads).
        vectors: Image vectors computed elsewhere (e.g. by a batch engine's shards), aligned with ``manifest``'s rows,
            all-NaN for unreadable images; they then serve every check and nothing is embedded here.
        console: Where progress lines go.
        show_progress: Draw progress bars.

    Raises:
        DataError: An empty manifest, an unknown field, or a field with fewer than two judgeable classes.
    """
    config = config or AuditConfig()
    console = console or Console(stderr=True)
    if len(manifest) == 0:
        raise DataError(f"manifest '{manifest.name}' is empty: nothing to audit")
    fields = _fields(manifest, config)
    if vectors is not None and len(vectors) != len(manifest):
        raise DataError(f"{len(vectors)} vectors for {len(manifest)} manifest rows")
    if config.max_items is not None and config.max_items < len(manifest):
        chosen = np.isin(np.arange(len(manifest)), np.random.default_rng(config.seed).choice(
            len(manifest), config.max_items, replace=False))
        manifest = manifest.subset(chosen)
        vectors = vectors[chosen] if vectors is not None else None
    timings: dict[str, float] = {}
    embedder = embedder or Embedder.untrained()

    start = time.perf_counter()
    if vectors is None:  # the shared cache path every task uses; unreadable images stay NaN rows
        frozen = frozen_features(manifest, embedder.config.backbone, backbone=embedder.backbone,
                                 show_progress=show_progress, skip_bad_images=True)
        readable = ~np.isnan(frozen).any(axis=1)
        features = frozen[readable]
        embeddings = embedder.embed_features(features) if len(features) else np.zeros((0, embedder.dim), np.float32)
    else:
        readable = ~np.isnan(vectors).any(axis=1)
        features = embeddings = np.asarray(vectors[readable], dtype=np.float32)
    readable_rows = np.flatnonzero(readable)
    timings["features"] = time.perf_counter() - start
    console.print(f"features: {len(manifest)} images ({int((~readable).sum())} unreadable) in "
                  f"{timings['features']:.1f} s")

    start = time.perf_counter()
    readable_frame = manifest.frame.iloc[readable_rows].reset_index(drop=True)
    issues, judged = [], {}
    for name in fields:
        values = readable_frame[f"class:{name}"]
        table = label_issue_table(name, values, features, folds=config.folds, seed=config.seed,
                                  rank_by=config.rank_by, min_class_size=config.min_class_size,
                                  dims=config.pca_dims)
        table["row"] = readable_rows[table["row"].to_numpy(dtype=np.int64)]
        issues.append(table)
        judged[name] = int(values.notna().sum())
        console.print(f"label issues: {name}: {len(table)} of {judged[name]} labelled rows flagged")
    # Self-confidence is comparable across fields: the most suspicious label of any field comes first.
    label_issues = _with_items(pd.concat(issues, ignore_index=True).sort_values("quality", kind="stable",
                                                                                ignore_index=True), manifest)
    level_frame = manifest.frame[[f"class:{name}" for name in config.levels]]
    level_frame.columns = list(config.levels)
    breaks = _with_items(taxonomy_breaks(level_frame.reset_index(drop=True), config.levels), manifest)
    timings["labels"] = time.perf_counter() - start

    start = time.perf_counter()
    paths = manifest.frame["path"].astype(str).tolist()
    label_columns = manifest.frame.iloc[readable_rows][[f"class:{name}" for name in fields]]
    label_columns.columns = fields
    pairs = duplicate_table(embeddings, [paths[r] for r in readable_rows], label_columns.reset_index(drop=True),
                            config.duplicate_threshold, config.duplicate_neighbours)
    pairs["a"], pairs["b"] = readable_rows[pairs["a"].to_numpy(dtype=np.int64)], \
        readable_rows[pairs["b"].to_numpy(dtype=np.int64)]
    duplicates = _with_items(_with_items(pairs, manifest, "a", "a_"), manifest, "b", "b_")
    timings["duplicates"] = time.perf_counter() - start

    start = time.perf_counter()
    with progress_bar("photo checks") as progress:
        task = progress.add_task("photo checks", total=len(paths), rate="", visible=show_progress)
        checks = photo_table(paths, config.photos, progress=lambda n: progress.advance(task, n))
    distance, z = outlier_scores(embeddings, config.photos.outlier_neighbours)
    outliers = pd.DataFrame({"row": readable_rows, "distance": distance.round(4), "z": z.round(2)})
    outliers = _with_items(outliers.sort_values("z", ascending=False, ignore_index=True), manifest)
    # A photo far from every other one is an outlier, unless a check above already named a problem with it.
    far = outliers[(outliers["z"] > config.photos.outlier_z).to_numpy()
                   & (checks.loc[outliers["row"], "problem"] == "").to_numpy()]
    checks.loc[far["row"], "problem"] = "outlier"
    checks.loc[far["row"], "detail"] = [f"neighbour-distance z-score {z:.1f} > {config.photos.outlier_z}"
                                        for z in far["z"]]
    photos = _with_items(checks[checks["problem"] != ""].reset_index(drop=True), manifest)
    timings["photos"] = time.perf_counter() - start

    summary = {
        "manifest": manifest.name, "items": len(manifest), "embedder": embedder.model_id,
        "fields": {name: {"labelled": judged[name], "issues": int((label_issues["field"] == name).sum())}
                   for name in fields},
        "taxonomy_breaks": len(breaks),
        "duplicate_pairs": len(duplicates),
        "duplicate_clusters": int(duplicates["cluster"].nunique()) if len(duplicates) else 0,
        "exact_duplicate_pairs": int((duplicates["kind"] == "exact").sum()) if len(duplicates) else 0,
        "photos": {str(k): int(v) for k, v in photos["problem"].value_counts().items()},
        "config": {**asdict(config), "fields": fields},
        "seconds": {k: round(v, 1) for k, v in timings.items()},
    }
    return CatalogueAudit(label_issues, breaks, duplicates, photos, outliers, summary)

