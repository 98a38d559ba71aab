"""Per-label decision thresholds ("threshold moving") for multi-label tagging.

A fixed 0.5 cut on sigmoid outputs is rarely best: rare attributes get low scores, and a recall-weighted F2
prefers lower cuts than F1. So each label gets the threshold that maximises its F-beta on validation data.
The search is exact: one sort per label gives the counts at every distinct score (see
:func:`fashionlens.metrics.iter_ranked_counts`), so no grid can beat it. Decisions are ``score >= threshold``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from fashionlens.errors import ConfigError, ModelError
from fashionlens.metrics import (
    BoolArray,
    FloatArray,
    RankedCounts,
    as_multilabel_truth,
    as_scores,
    iter_ranked_counts,
    precision_recall_fbeta,
)

TIE_TOLERANCE = 1e-12
"""F-scores this close are equal: they differ only by rounding of the same count ratios."""


@dataclass(frozen=True)
class ThresholdResult:
    """Chosen per-label thresholds, with the curves they were picked from.

    Attributes:
        thresholds: ``(L,)`` threshold per label.
        best_fbeta: ``(L,)`` validation F-beta at that threshold; NaN for labels without positives.
        grid: ``(G,)`` thresholds at which ``curves`` are recorded.
        curves: ``(L, G)`` validation F-beta of each label at each grid threshold, for plots.
        no_positive_labels: Indices of labels with no labelled positive, which got the fallback threshold.
        beta: The β that was optimised.
    """

    thresholds: FloatArray
    best_fbeta: FloatArray
    grid: FloatArray
    curves: FloatArray
    no_positive_labels: list[int]
    beta: float


def _best_cuts(counts: RankedCounts, beta: float) -> tuple[FloatArray, FloatArray]:
    """Best threshold and F-beta per label of one block; NaN F-beta where the label has no positive."""
    fbeta = precision_recall_fbeta(counts.tp, counts.fp, counts.n_pos - counts.tp, beta)[2]
    fbeta = np.where(counts.cut, fbeta, -1.0)
    best = fbeta.max(axis=0)
    row = np.argmax(fbeta >= best - TIE_TOLERANCE, axis=0)
    columns = np.arange(fbeta.shape[1])
    here = counts.scores[row, columns]
    below = counts.scores[np.minimum(row + 1, len(fbeta) - 1), columns]
    midpoint = 0.5 * here + 0.5 * below
    thresholds = np.where(midpoint > below, midpoint, here)
    return thresholds, np.where(counts.n_pos > 0, best, np.nan)


def best_thresholds(y_true: ArrayLike, scores: ArrayLike, beta: float = 2.0, grid: ArrayLike | None = None,
                    fallback: float = 0.5) -> ThresholdResult:
    """Pick, per label, the threshold maximising that label's F-beta over its labelled rows.

    The chosen threshold is the midpoint between the last score predicted positive and the next lower score,
    the centre of the interval of equivalent thresholds, which generalises better than sitting on a validation
    score. When several cuts reach the same best F-beta the highest is kept: of equally good cuts it predicts
    the fewest positives. Below the lowest score (predict every row positive) the lowest score itself is used.

    Args:
        y_true: ``(n, L)`` validation truth of 1/0/NaN; NaN entries are ignored.
        scores: ``(n, L)`` validation scores (probabilities or logits).
        beta: β of the F-beta being maximised.
        grid: Thresholds at which to record ``curves`` for plots (the search itself does not use it); default
            0.01..0.99 for scores in [0, 1], else 99 points spanning the scores.
        fallback: Threshold for labels with no labelled positive, where every threshold scores F = 0; they
            are listed in ``no_positive_labels`` so callers can warn.

    Returns:
        The thresholds, their F-beta and the curves.
    """
    truth = as_multilabel_truth(y_true)
    values = as_scores(scores, truth.shape)
    picks = [_best_cuts(counts, beta) for counts in iter_ranked_counts(truth, values)]
    thresholds = np.concatenate([pick[0] for pick in picks])
    best = np.concatenate([pick[1] for pick in picks])
    no_positive = np.flatnonzero(np.isnan(best))
    thresholds[no_positive] = fallback
    if grid is None:
        in_unit = values.min() >= 0 and values.max() <= 1
        grid = np.linspace(0.01, 0.99, 99) if in_unit else np.linspace(values.min(), values.max(), 99)
    points = np.asarray(grid, dtype=np.float64)
    if points.ndim != 1:
        raise ConfigError(f"threshold grid must be 1-D, got shape {points.shape}")
    curves = np.stack([fbeta_curve(truth[:, j], values[:, j], points, beta) for j in range(truth.shape[1])])
    return ThresholdResult(thresholds, best, points, curves, no_positive.tolist(), beta)


def fbeta_curve(y_true_col: ArrayLike, scores_col: ArrayLike, thresholds: ArrayLike, beta: float = 2.0) -> FloatArray:
    """F-beta of one label's decisions ``score >= t`` at each threshold ``t``, over its labelled rows.

    Used to plot validation against test curves, to see whether a chosen threshold transfers.
    """
    truth = as_multilabel_truth(np.asarray(y_true_col, dtype=np.float64).reshape(-1, 1))[:, 0]
    values = as_scores(np.asarray(scores_col, dtype=np.float64).reshape(-1, 1), (len(truth), 1))[:, 0]
    positive, negative = np.sort(values[truth == 1]), np.sort(values[truth == 0])
    cuts = np.asarray(thresholds, dtype=np.float64)
    tp = len(positive) - np.searchsorted(positive, cuts, side="left")
    fp = len(negative) - np.searchsorted(negative, cuts, side="left")
    return precision_recall_fbeta(tp, fp, len(positive) - tp, beta)[2]


def apply_thresholds(scores: ArrayLike, thresholds: ArrayLike) -> BoolArray:
    """Decisions ``score >= threshold``, with one threshold per label (or one for all)."""
    values = as_scores(scores)
    cuts = np.asarray(thresholds, dtype=np.float64)
    if cuts.ndim > 1 or (cuts.ndim == 1 and len(cuts) != values.shape[1]):
        raise ModelError(f"{cuts.size} thresholds for {values.shape[1]} labels: the thresholds do not belong to "
                         "this model's outputs")
    if not np.isfinite(cuts).all():
        raise ModelError("thresholds must be finite numbers")
    return values >= cuts


def topk_decode(scores: ArrayLike, k: int) -> BoolArray:
    """Decisions marking each sample's ``k`` best-scored labels (ties go to the lower label index)."""
    values = as_scores(scores)
    if not 1 <= k <= values.shape[1]:
        raise ConfigError(f"top-k decoding needs k in 1..{values.shape[1]} (the number of labels), got {k}")
    decisions = np.zeros(values.shape, dtype=bool)
    np.put_along_axis(decisions, np.argsort(-values, axis=1, kind="stable")[:, :k], True, axis=1)
    return decisions
