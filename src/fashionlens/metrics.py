"""Evaluation metrics for multi-label tagging, multi-class heads and street-to-shop retrieval.

Everything takes plain numpy arrays, so the same code scores live model outputs, saved predictions and tests.

Multi-label truth is a float matrix ``(n_samples, n_labels)`` of 1/0 with NaN where an entry is unlabelled:
fashion attribute sets leave many cells empty or disputed. Every metric drops such entries (per label, or per
sample for :func:`sample_f1`) and never counts them as negatives, so a NaN entry changes nothing compared
with removing that entry from the data.

Zero division follows scikit-learn's ``zero_division`` argument: a precision with no predicted positives and a
recall with no true positives take ``zero_division`` (0 by default, scikit-learn's convention), and an F-score
is 0 whenever precision + recall is 0. So with the default, a label with no positives and no predicted
positives scores F = 0 (scikit-learn's ``zero_division=0``), and with ``zero_division=1`` it scores F = 1.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray

from fashionlens.errors import ConfigError, DataError

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
BoolArray = NDArray[np.bool_]


def as_multilabel_truth(y_true: ArrayLike) -> FloatArray:
    """Validate multi-label truth: a non-empty 2-D matrix of 1, 0 or NaN (unlabelled), returned as float."""
    try:
        truth = np.asarray(y_true, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DataError(f"y_true must be a numeric (samples, labels) matrix of 1/0/NaN: {exc}") from exc
    if truth.ndim != 2 or truth.size == 0:
        raise DataError(f"y_true must be a non-empty 2-D (samples, labels) matrix, got shape {truth.shape}")
    bad = ~(np.isnan(truth) | (truth == 0) | (truth == 1))
    if bad.any():
        row, label = np.argwhere(bad)[0]
        raise DataError(f"y_true must hold 1, 0 or NaN (unlabelled); found {truth[row, label]} at row {row}, "
                        f"label {label}")
    return truth


def as_scores(scores: ArrayLike, shape: tuple[int, ...] | None = None, name: str = "scores") -> FloatArray:
    """Validate a finite 2-D score matrix (of ``shape`` when given), returned as float."""
    try:
        values = np.asarray(scores, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{name} must be a numeric matrix: {exc}") from exc
    if values.ndim != 2 or (shape is not None and values.shape != shape):
        expected = f"{shape} to match y_true" if shape is not None else "a 2-D (samples, labels) matrix"
        raise DataError(f"{name} has shape {values.shape}, expected {expected}")
    if not np.isfinite(values).all():
        row, column = np.argwhere(~np.isfinite(values))[0]
        raise DataError(f"{name} must be finite; found {values[row, column]} at row {row}, column {column}")
    return values


def _binary(y_pred: ArrayLike, shape: tuple[int, ...]) -> BoolArray:
    pred = np.asarray(y_pred)
    if pred.shape != shape:
        raise DataError(f"y_pred has shape {pred.shape}, expected {shape} to match y_true")
    if pred.dtype != np.bool_ and not np.isin(pred, (0, 1)).all():
        raise DataError("y_pred must be binary (bool or 0/1); turn scores into decisions with "
                        "fashionlens.tasks.tagging.apply_thresholds first")
    return pred.astype(bool)


def _ratio(numerator: FloatArray, denominator: FloatArray, default: float) -> FloatArray:
    out = np.full(np.broadcast(numerator, denominator).shape, default, dtype=np.float64)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def precision_recall_fbeta(tp: ArrayLike, fp: ArrayLike, fn: ArrayLike, beta: float = 2.0,
                           zero_division: float = 0.0) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Precision, recall and F-beta = (1+β²)PR / (β²P + R) from confusion counts, elementwise.

    Args:
        tp: True positive counts.
        fp: False positive counts.
        fn: False negative counts.
        beta: Weight of recall: β = 2 (F2) counts a missed tag as four times as bad as a spurious one.
        zero_division: Precision when nothing is predicted and recall when nothing is positive: 0 or 1.

    Returns:
        ``(precision, recall, fbeta)`` arrays; F-beta is 0 where precision + recall is 0.
    """
    if not beta > 0:
        raise ConfigError(f"beta must be positive, got {beta}")
    if zero_division not in (0.0, 1.0):
        raise ConfigError(f"zero_division must be 0 or 1, got {zero_division}")
    tp_, fp_, fn_ = (np.asarray(counts, dtype=np.float64) for counts in (tp, fp, fn))
    precision = _ratio(tp_, tp_ + fp_, zero_division)
    recall = _ratio(tp_, tp_ + fn_, zero_division)
    fbeta = _ratio((1 + beta**2) * precision * recall, beta**2 * precision + recall, 0.0)
    return precision, recall, fbeta


def _confusion(truth: FloatArray, pred: BoolArray, axis: int) -> tuple[IntArray, IntArray, IntArray]:
    """Counts over labelled entries along ``axis`` (0: per label, 1: per sample); NaN truth counts nowhere."""
    positive, negative = truth == 1, truth == 0
    return (positive & pred).sum(axis), (negative & pred).sum(axis), (positive & ~pred).sum(axis)


def per_label_scores(y_true: ArrayLike, y_pred_binary: ArrayLike, beta: float = 2.0,
                     names: Sequence[str] | None = None, zero_division: float = 0.0) -> pd.DataFrame:
    """One row per label of counts and scores, over that label's labelled rows only.

    Args:
        y_true: ``(n, L)`` truth of 1/0/NaN.
        y_pred_binary: ``(n, L)`` decisions (bool or 0/1).
        beta: β of the ``f_beta`` column (``f1`` is always reported too).
        names: Label names for the ``label`` column; label indices when omitted.
        zero_division: See the module docstring.

    Returns:
        Columns ``label, support_pos, support, tp, fp, fn, precision, recall, f_beta, f1``; ``support`` counts
        labelled rows, ``support_pos`` positive ones. Scores are NaN for a label with no labelled rows.
    """
    truth = as_multilabel_truth(y_true)
    pred = _binary(y_pred_binary, truth.shape)
    if names is not None and len(names) != truth.shape[1]:
        raise DataError(f"{len(names)} label names given for {truth.shape[1]} labels")
    tp, fp, fn = _confusion(truth, pred, axis=0)
    support = (~np.isnan(truth)).sum(axis=0)
    precision, recall, fbeta = precision_recall_fbeta(tp, fp, fn, beta, zero_division)
    f1 = precision_recall_fbeta(tp, fp, fn, 1.0, zero_division)[2]
    unlabelled = support == 0
    return pd.DataFrame({
        "label": list(names) if names is not None else np.arange(truth.shape[1]),
        "support_pos": tp + fn, "support": support, "tp": tp, "fp": fp, "fn": fn,
        **{key: np.where(unlabelled, np.nan, value)
           for key, value in (("precision", precision), ("recall", recall), ("f_beta", fbeta), ("f1", f1))},
    })


def macro_fbeta(y_true: ArrayLike, y_pred: ArrayLike, beta: float = 2.0, zero_division: float = 0.0) -> float:
    """Mean over labels of per-label F-beta (the JD AI Fashion challenge's macro F2 with ``beta=2``).

    Labels with no labelled rows are skipped; labels with rows but no positives count (as 0 by default).
    """
    fbeta = per_label_scores(y_true, y_pred, beta, zero_division=zero_division)["f_beta"].to_numpy()
    if np.isnan(fbeta).all():
        raise DataError("macro F-beta is undefined: y_true has no labelled entries")
    return float(np.nanmean(fbeta))


def micro_fbeta(y_true: ArrayLike, y_pred: ArrayLike, beta: float = 1.0, zero_division: float = 0.0) -> float:
    """F-beta of the confusion counts pooled over every labelled entry (the iMaterialist leaderboard's micro F1).

    Equal to scikit-learn's ``fbeta_score(average="micro")`` on data without NaN; NaN entries are dropped.
    """
    truth = as_multilabel_truth(y_true)
    pred = _binary(y_pred, truth.shape)
    if np.isnan(truth).all():
        raise DataError("micro F-beta is undefined: y_true has no labelled entries")
    tp, fp, fn = (counts.sum() for counts in _confusion(truth, pred, axis=0))
    return float(precision_recall_fbeta(tp, fp, fn, beta, zero_division)[2])


def sample_f1(y_true: ArrayLike, y_pred: ArrayLike, zero_division: float = 1.0) -> float:
    """Mean over samples of per-sample F1 over that sample's labelled entries (iMaterialist's metric).

    A sample with no true and no predicted positives is a perfect answer and scores ``zero_division`` = 1, as
    scikit-learn's ``f1_score(average="samples", zero_division=1)``; samples with no labelled entry are skipped.
    """
    truth = as_multilabel_truth(y_true)
    pred = _binary(y_pred, truth.shape)
    f1 = precision_recall_fbeta(*_confusion(truth, pred, axis=1), beta=1.0, zero_division=zero_division)[2]
    labelled = (~np.isnan(truth)).any(axis=1)
    if not labelled.any():
        raise DataError("sample F1 is undefined: y_true has no labelled entries")
    return float(f1[labelled].mean())


@dataclass(frozen=True)
class RankedCounts:
    """Per-label confusion counts for every cut of the ranking, i.e. every threshold of ``score >= t``.

    Each ``(n_samples, n_labels)`` array is sorted per label by descending score: row ``i`` describes
    predicting positive the ``i + 1`` best-scored samples. Unlabelled samples are ranked last (score ``-inf``)
    and add nothing to the counts.

    Attributes:
        scores: Sorted scores.
        tp: True positives among rows ``0..i``.
        fp: False positives among rows ``0..i``.
        cut: Where a threshold can fall just below row ``i``: it is labelled and the next score is lower, so
            tied scores, which no threshold separates, form a single cut.
        n_pos: Positives per label.
    """

    scores: FloatArray
    tp: IntArray
    fp: IntArray
    cut: BoolArray
    n_pos: IntArray


def iter_ranked_counts(y_true: ArrayLike, scores: ArrayLike, max_cells: int = 1 << 22) -> Iterator[RankedCounts]:
    """Yield :class:`RankedCounts` for consecutive blocks of labels, in order.

    One sort per label gives the counts at every threshold at once, which makes average precision and the
    exact threshold search O(n log n); blocks of at most ``max_cells`` entries bound the memory used.
    """
    truth = as_multilabel_truth(y_true)
    values = as_scores(scores, truth.shape)
    n_rows, n_labels = truth.shape
    step = max(1, max_cells // n_rows)
    for start in range(0, n_labels, step):
        block = truth[:, start:start + step]
        labelled = ~np.isnan(block)
        ranked = np.where(labelled, values[:, start:start + step], -np.inf)
        order = np.argsort(-ranked, axis=0, kind="stable")
        ranked = np.take_along_axis(ranked, order, axis=0)
        tp = np.cumsum(np.take_along_axis(block == 1, order, axis=0), axis=0)
        fp = np.cumsum(np.take_along_axis(block == 0, order, axis=0), axis=0)
        last_of_tie = np.ones_like(labelled)
        last_of_tie[:-1] = ranked[:-1] > ranked[1:]
        yield RankedCounts(ranked, tp, fp, last_of_tie & np.take_along_axis(labelled, order, axis=0), tp[-1])


def average_precision_per_label(y_true: ArrayLike, scores: ArrayLike) -> FloatArray:
    """Average precision per label over labelled rows: Σ (R_n − R_{n−1}) P_n over distinct thresholds.

    Identical to scikit-learn's ``average_precision_score`` (tied scores enter together); NaN for a label
    with no positives, where AP is undefined.
    """
    per_block = []
    for counts in iter_ranked_counts(y_true, scores):
        tp_at_cut = np.where(counts.cut, counts.tp, 0)
        tp_before = np.maximum.accumulate(np.vstack([np.zeros_like(tp_at_cut[:1]), tp_at_cut[:-1]]), axis=0)
        gained = np.where(counts.cut, counts.tp - tp_before, 0)
        precision = _ratio(counts.tp.astype(np.float64), (counts.tp + counts.fp).astype(np.float64), 0.0)
        total = (gained * precision).sum(axis=0)
        per_block.append(_ratio(total, counts.n_pos.astype(np.float64), np.nan))
    return np.concatenate(per_block)


def mean_average_precision(y_true: ArrayLike, scores: ArrayLike) -> float:
    """Mean of :func:`average_precision_per_label` over labels with at least one labelled positive."""
    ap = average_precision_per_label(y_true, scores)
    if np.isnan(ap).all():
        raise DataError("mAP is undefined: no label has a labelled positive")
    return float(np.nanmean(ap))


@dataclass(frozen=True)
class MultiLabelMetric:
    """A multi-label metric ``metric(y_true, y) -> float``; ``y`` is scores if ``needs_scores`` else decisions."""

    fn: Callable[[ArrayLike, ArrayLike], float]
    needs_scores: bool

    def __call__(self, y_true: ArrayLike, y: ArrayLike) -> float:
        return self.fn(y_true, y)


METRICS: dict[str, MultiLabelMetric] = {
    "macro_f2": MultiLabelMetric(partial(macro_fbeta, beta=2.0), needs_scores=False),
    "macro_f1": MultiLabelMetric(partial(macro_fbeta, beta=1.0), needs_scores=False),
    "sample_f1": MultiLabelMetric(sample_f1, needs_scores=False),
    "micro_f1": MultiLabelMetric(partial(micro_fbeta, beta=1.0), needs_scores=False),
    "mAP": MultiLabelMetric(mean_average_precision, needs_scores=True),
}


def _class_ids(labels: ArrayLike, n_classes: int, name: str) -> IntArray:
    ids = np.asarray(labels)
    if ids.ndim != 1 or ids.size == 0 or not np.issubdtype(ids.dtype, np.integer):
        raise DataError(f"{name} must be a non-empty 1-D integer array, got dtype {ids.dtype} shape {ids.shape}")
    outside = (ids < 0) | (ids >= n_classes)
    if outside.any():
        raise DataError(f"{name} must lie in 0..{n_classes - 1}; found {ids[outside][0]}")
    return ids.astype(np.int64)


def topk_accuracy(labels: ArrayLike, scores: ArrayLike, k: int) -> float:
    """Fraction of samples whose true class is among the ``k`` best-scored classes.

    Ties count against the prediction: the true class is in the top k only if fewer than ``k`` other classes
    score at least as high, so a constant score earns nothing.
    """
    if k < 1:
        raise ConfigError(f"top-k accuracy needs k >= 1, got {k}")
    values = as_scores(scores)
    ids = _class_ids(labels, values.shape[1], "labels")
    if len(ids) != len(values):
        raise DataError(f"{len(ids)} labels for {len(values)} score rows")
    true_score = values[np.arange(len(ids)), ids]
    rivals = (values >= true_score[:, None]).sum(axis=1) - 1
    return float((rivals < k).mean())


def topk_accuracies(labels: ArrayLike, scores: ArrayLike, ks: Sequence[int] = (1, 3, 5)) -> dict[str, float]:
    """:func:`topk_accuracy` for each ``k``, keyed ``"top{k}"``."""
    return {f"top{k}": topk_accuracy(labels, scores, k) for k in ks}


def confusion_matrix(labels: ArrayLike, predictions: ArrayLike, n_classes: int) -> IntArray:
    """``(n_classes, n_classes)`` counts; rows are true classes, columns predicted ones (scikit-learn's layout)."""
    truth = _class_ids(labels, n_classes, "labels")
    pred = _class_ids(predictions, n_classes, "predictions")
    if len(truth) != len(pred):
        raise DataError(f"{len(truth)} labels for {len(pred)} predictions")
    return np.bincount(truth * n_classes + pred, minlength=n_classes**2).reshape(n_classes, n_classes)


def per_class_table(labels: ArrayLike, predictions: ArrayLike, class_names: Sequence[str]) -> pd.DataFrame:
    """Per-class ``precision, recall, f1, support`` (true count), with the module's zero-division convention."""
    matrix = confusion_matrix(labels, predictions, len(class_names))
    tp = np.diag(matrix)
    precision, recall, f1 = precision_recall_fbeta(tp, matrix.sum(axis=0) - tp, matrix.sum(axis=1) - tp, beta=1.0)
    return pd.DataFrame({"class": list(class_names), "precision": precision, "recall": recall, "f1": f1,
                         "support": matrix.sum(axis=1)})


def relevance_matrix(query_keys: Sequence[object] | np.ndarray,
                     result_keys: Sequence[Sequence[object]] | np.ndarray) -> BoolArray:
    """Which ranked results share their query's key (e.g. ``item_id``: the same product).

    Args:
        query_keys: ``(n_queries,)`` keys.
        result_keys: ``(n_queries, k)`` keys of the ranked results, of the same type as the query keys;
            ``-1`` or ``None`` marks padding (fewer than ``k`` results) and is never relevant.

    Returns:
        ``(n_queries, k)`` bool matrix for :func:`retrieval_metrics`.
    """
    queries = np.asarray(query_keys, dtype=object)
    results = np.asarray(result_keys, dtype=object)
    if queries.ndim != 1 or results.ndim != 2 or len(results) != len(queries):
        raise DataError(f"result keys of shape {results.shape} do not match {queries.shape} query keys")
    padding = (results == np.array(None, dtype=object)) | (results == -1)
    return np.asarray(results == queries[:, None], dtype=bool) & ~padding


def retrieval_metrics(relevance: ArrayLike, n_relevant: ArrayLike,
                      ks: Sequence[int] = (1, 5, 10, 20)) -> dict[str, float]:
    """Street-to-shop retrieval scores of ranked result lists.

    Queries with no relevant gallery item (``n_relevant == 0``) cannot be answered and are left out.

    Args:
        relevance: ``(n_queries, depth)`` bool, whether each ranked result is relevant (see
            :func:`relevance_matrix`).
        n_relevant: ``(n_queries,)`` relevant items in the whole gallery, found or not.
        ks: Cut-offs, each at most ``depth``.

    Returns:
        ``recall@K``: the HIT RATE, i.e. the fraction of queries with at least one relevant item in the top K
        (the street-to-shop "top-K accuracy" of DeepFashion and Street2Shop, not the fraction of relevant items
        found); ``precision@K``: the mean fraction of the top K that is relevant; ``mAP``: the mean over
        queries of Σ_j P@j·rel_j / min(n_relevant, depth), so a list that puts every relevant item it has room
        for at the top scores 1.
    """
    rel = np.asarray(relevance)
    counts = np.asarray(n_relevant)
    if rel.ndim != 2 or rel.dtype != np.bool_:
        raise DataError(f"relevance must be a 2-D bool matrix, got dtype {rel.dtype} shape {rel.shape}")
    if counts.shape != (len(rel),) or not np.issubdtype(counts.dtype, np.integer):
        raise DataError(f"n_relevant must be {len(rel)} integers, got dtype {counts.dtype} shape {counts.shape}")
    found = rel.sum(axis=1)
    if (found > counts).any():
        query = int(np.argmax(found > counts))
        raise DataError(f"query {query} has {found[query]} relevant results but n_relevant is {counts[query]}")
    answerable = counts > 0
    if not answerable.any():
        raise DataError("no query has a relevant gallery item")
    rel, counts = rel[answerable], counts[answerable]
    depth = rel.shape[1]
    scores: dict[str, float] = {}
    for k in ks:
        if not 1 <= k <= depth:
            raise ConfigError(f"retrieval cut-off K={k} must lie in 1..{depth}, the length of the result lists")
        scores[f"recall@{k}"] = float(rel[:, :k].any(axis=1).mean())
        scores[f"precision@{k}"] = float(rel[:, :k].mean(axis=1).mean())
    precision_at = np.cumsum(rel, axis=1) / np.arange(1, depth + 1)
    scores["mAP"] = float(((precision_at * rel).sum(axis=1) / np.minimum(counts, depth)).mean())
    return scores
