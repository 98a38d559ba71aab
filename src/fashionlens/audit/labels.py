"""Label issues: confident learning on out-of-fold class probabilities, and paths that break a taxonomy.

A model scored on the rows it was trained on agrees with their labels, right or wrong; scored on rows it never saw,
it disagrees confidently exactly where a label is suspicious. :func:`out_of_fold_probabilities` fits ``k`` linear
heads on cached frozen features (seconds, even for a whole catalogue), and :func:`find_label_issues` hands the pooled
probabilities to cleanlab's confident learning, which estimates the joint distribution of given and true labels and
flags the rows that the estimate says are mislabelled.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd
from sklearn.decomposition import PCA
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.preprocessing import StandardScaler

from fashionlens.errors import DataError

RankBy = Literal["self_confidence", "normalized_margin"]
RANK_METHODS: tuple[str, ...] = ("self_confidence", "normalized_margin")


def out_of_fold_probabilities(features: np.ndarray, labels: np.ndarray, n_classes: int, folds: int = 5,
                              seed: int = 0, c: float = 0.5, max_iter: int = 300, dims: int | None = None
                              ) -> np.ndarray:
    """Class probabilities of every row from a logistic-regression head that never saw that row.

    Args:
        features: ``(n, d)`` frozen features.
        labels: ``(n,)`` class indices in ``[0, n_classes)``.
        n_classes: Number of classes (columns of the result).
        folds: Number of folds; each row is predicted by the head fitted on the other ``folds - 1``.
        seed: Fold assignment seed.
        c: Inverse L2 strength of the heads (features are standardised inside each fold).
        max_iter: L-BFGS iterations per head.
        dims: Project the features onto their first ``dims`` principal components first (fitted on all rows: no
            labels are used, so nothing leaks): several times cheaper on a big catalogue, at some precision
            (planted 5 % flips in the Fashion Product Images train split, precision@N: 0.79 with all 1280
            dimensions, 0.71-0.77 with 128-256); ``None`` (default) keeps every dimension.

    Returns:
        ``(n, n_classes)`` probabilities; a class missing from a fold's training rows gets probability 0 there.

    Raises:
        DataError: Fewer than two classes, or fewer rows than folds.
    """
    if n_classes < 2 or len(np.unique(labels)) < 2:
        raise DataError("label issues need at least two classes with examples")
    if len(labels) < folds:
        raise DataError(f"{len(labels)} labelled rows cannot be split into {folds} folds")
    counts = np.bincount(labels, minlength=n_classes)
    # Stratify only when every present class can appear in each fold; rare classes otherwise break StratifiedKFold.
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    stratify = labels if counts[counts > 0].min() >= folds else np.zeros_like(labels)
    if dims is not None and dims < features.shape[1] and dims < len(features):
        features = PCA(n_components=dims, random_state=seed).fit_transform(features)
    probabilities = np.zeros((len(labels), n_classes), dtype=np.float64)
    for train_rows, held_rows in splitter.split(features, stratify):
        scaler = StandardScaler().fit(features[train_rows])
        head = LogisticRegression(C=c, max_iter=max_iter)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # a few hundred steps rank rows well enough
            head.fit(scaler.transform(features[train_rows]), labels[train_rows])
        probabilities[np.ix_(held_rows, head.classes_)] = head.predict_proba(scaler.transform(features[held_rows]))
    return probabilities


def find_label_issues(labels: np.ndarray, probabilities: np.ndarray, rank_by: RankBy = "self_confidence"
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Rows whose given label confident learning finds suspicious, most suspicious first, and every row's quality.

    Args:
        labels: ``(n,)`` given class indices.
        probabilities: ``(n, k)`` out-of-fold probabilities.
        rank_by: cleanlab's label-quality score used for ranking.

    Returns:
        ``(flagged_rows, quality)``: row indices ranked by ascending label quality, and the quality of every row
        (in ``[0, 1]``, low = likely mislabelled).
    """
    from cleanlab.filter import find_label_issues as cleanlab_find_label_issues
    from cleanlab.rank import get_label_quality_scores

    if rank_by not in RANK_METHODS:
        raise DataError(f"unknown ranking {rank_by!r}; choose one of {', '.join(RANK_METHODS)}")
    # cleanlab wants every class column to have at least one given label; drop the empty ones and renormalise.
    present = np.unique(labels)
    remap = np.full(probabilities.shape[1], -1)
    remap[present] = np.arange(len(present))
    compact = probabilities[:, present]
    compact = compact / np.clip(compact.sum(axis=1, keepdims=True), 1e-12, None)
    given = remap[labels]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # cleanlab warns about rare classes; the ranking stays meaningful
        flagged = cleanlab_find_label_issues(given, compact, return_indices_ranked_by=rank_by)
        quality = get_label_quality_scores(given, compact, method=rank_by)
    return np.asarray(flagged, dtype=np.int64), np.asarray(quality, dtype=np.float64)


def label_issue_table(field: str, values: pd.Series, features: np.ndarray, folds: int = 5, seed: int = 0,
                      rank_by: RankBy = "self_confidence", min_class_size: int = 2, dims: int | None = None
                      ) -> pd.DataFrame:
    """Flagged rows of one class field: given label, suggested label and scores, most suspicious first.

    Rows with no label, or whose class has fewer than ``min_class_size`` labelled rows (nothing to learn it from),
    are not judged. ``dims`` is passed to :func:`out_of_fold_probabilities`.

    Returns:
        Columns ``row`` (position in ``values``), ``field``, ``given``, ``suggested``, ``quality`` (label quality,
        low = suspicious), ``given_probability``, ``suggested_probability``.

    Raises:
        DataError: The field has fewer than two classes with enough rows.
    """
    labelled = values.notna().to_numpy() & (values.astype("string").fillna("") != "").to_numpy()
    counts = values[labelled].value_counts()
    kept_classes = counts[counts >= min_class_size].index
    judged = labelled & values.isin(kept_classes).to_numpy()
    classes = sorted(str(c) for c in kept_classes)
    if len(classes) < 2:
        raise DataError(f"field '{field}' has {len(classes)} class(es) with at least {min_class_size} labelled "
                        f"rows; label issues need two or more")
    rows = np.flatnonzero(judged)
    index = {name: i for i, name in enumerate(classes)}
    labels = np.array([index[str(v)] for v in values.iloc[rows]], dtype=np.int64)
    probabilities = out_of_fold_probabilities(features[rows], labels, len(classes), folds=min(folds, len(rows)),
                                              seed=seed, dims=dims)
    flagged, quality = find_label_issues(labels, probabilities, rank_by)
    suggested = probabilities.argmax(axis=1)
    return pd.DataFrame({
        "row": rows[flagged],
        "field": field,
        "given": [classes[i] for i in labels[flagged]],
        "suggested": [classes[i] for i in suggested[flagged]],
        "quality": quality[flagged].round(4),
        "given_probability": probabilities[flagged, labels[flagged]].round(4),
        "suggested_probability": probabilities[flagged, suggested[flagged]].round(4),
    })


def taxonomy_breaks(frame: pd.DataFrame, levels: Sequence[str]) -> pd.DataFrame:
    """Rows whose path breaks the taxonomy the catalogue itself implies.

    Each class at level ``h + 1`` belongs under the parent most of its rows give; a row giving another parent is
    flagged with the majority parent as the suggestion and the share of rows that agree with it as the score.

    Args:
        frame: One column per level, class names (missing = unlabelled).
        levels: Level columns of ``frame``, root first.

    Returns:
        Columns ``row``, ``field`` (the parent level that disagrees), ``child``, ``given``, ``suggested``, ``support``.
    """
    found = []
    for parent, child in itertools.pairwise(levels):
        pairs = frame[[parent, child]].dropna()
        pairs = pairs[(pairs[parent].astype(str) != "") & (pairs[child].astype(str) != "")]
        if pairs.empty:
            continue
        counts = pairs.groupby([child, parent]).size()
        majority = counts.groupby(level=0).idxmax().map(lambda key: key[1])
        share = counts.groupby(level=0).max() / counts.groupby(level=0).sum()
        expected = pairs[child].map(majority).to_numpy()
        support = pairs[child].map(share).to_numpy()
        broken = np.flatnonzero(pairs[parent].to_numpy() != expected)
        positions = frame.index.get_indexer(pairs.index)
        for i in broken:
            found.append({"row": int(positions[i]), "field": parent, "child": f"{child}={pairs[child].iloc[i]}",
                          "given": pairs[parent].iloc[i], "suggested": expected[i], "support": round(support[i], 4)})
    columns = ["row", "field", "child", "given", "suggested", "support"]
    return pd.DataFrame(found, columns=columns).sort_values("support", ascending=False, kind="stable")
