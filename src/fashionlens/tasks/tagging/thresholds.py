"""Per-label decision thresholds ("threshold moving") for multi-label tagging.

A fixed 0.5 cut on sigmoid outputs is rarely best: rare attributes get low scores, and a recall-weighted F2
prefers lower cuts than F1. So each label gets the threshold that maximises its F-beta on held-out predictions.
The search is exact: one sort per label gives the counts at every distinct score (see
:func:`fashionlens.metrics.iter_ranked_counts`), so no grid can beat it. Decisions are ``score >= threshold``.

With few positives per label the exact optimum fits noise. Three remedies live here and in the tagging task:
choose on more data (out-of-fold predictions, :mod:`fashionlens.tasks.tagging`), take the centre of the F-beta
plateau within one standard error (:func:`plateau_thresholds`), and shrink towards a prior cut
(:func:`shrink_thresholds`). :func:`micro_thresholds` optimises the micro-averaged F-beta (iMaterialist's metric)
instead of each label's own. :func:`select_thresholds` dispatches on the rule names used in configs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from rich.console import Console

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
from fashionlens.tasks.labels import LabelSpace

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


RULES = ("exact", "plateau")
AVERAGES = ("macro", "micro")


def _cut_fbeta(counts: RankedCounts, beta: float) -> FloatArray:
    """F-beta at every cut of one block; -1 at rows that are not a valid cut (inside a tie, unlabelled)."""
    fbeta = precision_recall_fbeta(counts.tp, counts.fp, counts.n_pos - counts.tp, beta)[2]
    return np.where(counts.cut, fbeta, -1.0)


def _cut_thresholds(counts: RankedCounts) -> FloatArray:
    """The threshold of every cut: midway between the last score predicted positive and the next lower one."""
    below = np.vstack([counts.scores[1:], counts.scores[-1:]])
    midpoint = 0.5 * counts.scores + 0.5 * below
    return np.where(midpoint > below, midpoint, counts.scores)


def _best_cuts(counts: RankedCounts, beta: float) -> tuple[FloatArray, FloatArray]:
    """Best threshold and F-beta per label of one block; NaN F-beta where the label has no positive."""
    fbeta = _cut_fbeta(counts, beta)
    best = fbeta.max(axis=0)
    row = np.argmax(fbeta >= best - TIE_TOLERANCE, axis=0)
    thresholds = _cut_thresholds(counts)[row, np.arange(fbeta.shape[1])]
    return thresholds, np.where(counts.n_pos > 0, best, np.nan)


def _plateau_cuts(counts: RankedCounts, beta: float) -> tuple[FloatArray, FloatArray]:
    """Centre of each label's F-beta plateau within one standard error of its best, and the F-beta there.

    The standard error of the best F-beta is taken as ``sqrt(F (1 - F) / n_pos)``, the binomial error of a
    proportion over the label's positives: with 8 positives the plateau is wide and its centre moves little with
    any one of them, with 500 it shrinks to the exact optimum.
    """
    fbeta = _cut_fbeta(counts, beta)
    best = fbeta.max(axis=0)
    se = np.sqrt(np.clip(best * (1.0 - best), 0.0, None) / np.maximum(counts.n_pos, 1))
    on_plateau = fbeta >= best - se - TIE_TOLERANCE
    cuts = _cut_thresholds(counts)
    high = np.where(on_plateau, cuts, -np.inf).max(axis=0)
    low = np.where(on_plateau, cuts, np.inf).min(axis=0)
    centre = 0.5 * high + 0.5 * low
    fbeta_at = np.array([fbeta[np.argmin(np.where(counts.cut[:, j], np.abs(cuts[:, j] - centre[j]), np.inf)), j]
                         for j in range(fbeta.shape[1])])
    return centre, np.where(counts.n_pos > 0, fbeta_at, np.nan)


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
    return _search(y_true, scores, beta, grid, fallback, _best_cuts)


def plateau_thresholds(y_true: ArrayLike, scores: ArrayLike, beta: float = 2.0, grid: ArrayLike | None = None,
                       fallback: float = 0.5) -> ThresholdResult:
    """Per label, the centre of the thresholds whose F-beta lies within one standard error of the best.

    A regularised :func:`best_thresholds` for small validation sets: instead of the single best cut, whose
    position depends on one or two positives, it takes the midpoint of the range of cuts that are statistically
    as good (see :func:`_plateau_cuts` for the standard error). ``best_fbeta`` holds the F-beta at the cut nearest
    the chosen threshold. Arguments as :func:`best_thresholds`.
    """
    return _search(y_true, scores, beta, grid, fallback, _plateau_cuts)


def _search(y_true: ArrayLike, scores: ArrayLike, beta: float, grid: ArrayLike | None, fallback: float,
            pick: Callable[[RankedCounts, float], tuple[FloatArray, FloatArray]]) -> ThresholdResult:
    truth = as_multilabel_truth(y_true)
    values = as_scores(scores, truth.shape)
    picks = [pick(counts, beta) for counts in iter_ranked_counts(truth, values)]
    thresholds = np.concatenate([p[0] for p in picks])
    best = np.concatenate([p[1] for p in picks])
    no_positive = np.flatnonzero(np.isnan(best))
    thresholds[no_positive] = fallback
    return _with_curves(truth, values, thresholds, best, no_positive.tolist(), beta, grid)


def _with_curves(truth: FloatArray, values: FloatArray, thresholds: FloatArray, best: FloatArray,
                 no_positive: list[int], beta: float, grid: ArrayLike | None) -> ThresholdResult:
    if grid is None:
        in_unit = values.min() >= 0 and values.max() <= 1
        grid = np.linspace(0.01, 0.99, 99) if in_unit else np.linspace(values.min(), values.max(), 99)
    points = np.asarray(grid, dtype=np.float64)
    if points.ndim != 1:
        raise ConfigError(f"threshold grid must be 1-D, got shape {points.shape}")
    curves = np.stack([fbeta_curve(truth[:, j], values[:, j], points, beta) for j in range(truth.shape[1])])
    return ThresholdResult(thresholds, best, points, curves, no_positive, beta)


def micro_thresholds(y_true: ArrayLike, scores: ArrayLike, beta: float = 1.0, grid: ArrayLike | None = None,
                     fallback: float = 0.5, passes: int = 3) -> ThresholdResult:
    """Per-label thresholds maximising the micro-averaged F-beta (counts pooled over labels), by coordinate ascent.

    Starts from each label's own best cut (:func:`best_thresholds`), then, label by label, moves its threshold to
    the cut (or to "predict none") that maximises the pooled F-beta with the other labels' decisions fixed; each
    step is an exact search, so the pooled score never decreases. ``passes`` full sweeps are made (it usually
    settles after two). ``best_fbeta`` holds each label's own F-beta at the chosen threshold.

    Args:
        y_true: ``(n, L)`` truth of 1/0/NaN; NaN entries are ignored.
        scores: ``(n, L)`` scores.
        beta: β of the micro F-beta.
        grid: As :func:`best_thresholds`.
        fallback: Threshold of labels without positives (they add only false positives, so are cut above).
        passes: Sweeps over the labels.
    """
    truth = as_multilabel_truth(y_true)
    values = as_scores(scores, truth.shape)
    start = best_thresholds(truth, values, beta=beta, fallback=fallback, grid=grid)
    thresholds = start.thresholds.copy()
    options = []  # per label: candidate thresholds and the (tp, fp, n_pos) each gives, "predict none" first
    for j in range(truth.shape[1]):
        counts = next(iter_ranked_counts(truth[:, [j]], values[:, [j]]))
        valid = counts.cut[:, 0]
        above = float(values[:, j].max()) + 1.0
        options.append((np.concatenate([[above], _cut_thresholds(counts)[valid, 0]]),
                        np.concatenate([[0], counts.tp[valid, 0]]), np.concatenate([[0], counts.fp[valid, 0]]),
                        int(counts.n_pos[0])))
    decisions = apply_thresholds(values, thresholds)
    labelled_pos, labelled_neg = truth == 1, truth == 0
    tp = (decisions & labelled_pos).sum(axis=0)
    fp = (decisions & labelled_neg).sum(axis=0)
    n_pos = labelled_pos.sum(axis=0)
    for _ in range(passes):
        for j, (cuts, cut_tp, cut_fp, _n) in enumerate(options):
            other_tp, other_fp = tp.sum() - tp[j], fp.sum() - fp[j]
            all_tp, all_fp = other_tp + cut_tp, other_fp + cut_fp
            pooled = precision_recall_fbeta(all_tp, all_fp, n_pos.sum() - all_tp, beta)[2]
            best = np.argmax(pooled >= pooled.max() - TIE_TOLERANCE)
            thresholds[j], tp[j], fp[j] = cuts[best], cut_tp[best], cut_fp[best]
    own = precision_recall_fbeta(tp, fp, n_pos - tp, beta)[2]
    own = np.where(n_pos > 0, own, np.nan)
    return _with_curves(truth, values, thresholds, own, start.no_positive_labels, beta, grid)


def shrink_thresholds(thresholds: ArrayLike, amount: float, toward: float = 0.5) -> FloatArray:
    """``(1 - amount) · t + amount · toward``: pull tuned thresholds towards a prior cut (0 keeps them as they are).

    ``toward`` = 0.5 is the decision point weighted BCE is trained for, where a balanced loss already makes
    positives and negatives equally costly.
    """
    if not 0.0 <= amount <= 1.0:
        raise ConfigError(f"threshold shrinkage must lie in [0, 1], got {amount}")
    return (1.0 - amount) * np.asarray(thresholds, dtype=np.float64) + amount * toward


def select_thresholds(y_true: ArrayLike, scores: ArrayLike, beta: float, rule: str = "exact",
                      average: str = "macro", shrink: float = 0.0, fallback: float = 0.5) -> ThresholdResult:
    """The thresholds a config asks for: ``rule`` ``exact`` (:func:`best_thresholds`) or ``plateau``
    (:func:`plateau_thresholds`) for ``average`` = ``macro``, :func:`micro_thresholds` for ``micro``, then
    :func:`shrink_thresholds` by ``shrink`` towards ``fallback``."""
    if rule not in RULES:
        raise ConfigError(f"unknown threshold rule '{rule}'; use one of {RULES}")
    if average not in AVERAGES:
        raise ConfigError(f"unknown threshold average '{average}'; use one of {AVERAGES}")
    if average == "micro":
        result = micro_thresholds(y_true, scores, beta=beta, fallback=fallback)
    elif rule == "plateau":
        result = plateau_thresholds(y_true, scores, beta=beta, fallback=fallback)
    else:
        result = best_thresholds(y_true, scores, beta=beta, fallback=fallback)
    if shrink:
        result = ThresholdResult(shrink_thresholds(result.thresholds, shrink, fallback), result.best_fbeta,
                                 result.grid, result.curves, result.no_positive_labels, result.beta)
    return result


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


def tune_thresholds(tag_targets: np.ndarray, tag_probs: np.ndarray, labels: LabelSpace, beta: float,
                    console: Console | None = None, rule: str = "exact", average: str = "macro",
                    shrink: float = 0.0) -> np.ndarray:
    """Per-label thresholds for F-beta on held-out predictions (see
    :func:`select_thresholds`); labels without held-out positives keep 0.5."""
    if not labels.tags:
        return np.zeros(0, dtype=np.float32)
    result = select_thresholds(tag_targets, tag_probs, beta=beta, rule=rule, average=average, shrink=shrink,
                               fallback=0.5)
    if result.no_positive_labels and console is not None:
        names = [labels.tags[i] for i in result.no_positive_labels]
        console.print(f"[yellow]warning: no held-out positives for {names}; their threshold stays 0.5")
    return np.asarray(result.thresholds, dtype=np.float32)
