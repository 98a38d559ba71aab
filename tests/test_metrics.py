"""Metrics: hand-computed cases, agreement with scikit-learn, and NaN (unlabelled) masking."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from fashionlens.errors import ConfigError, DataError
from fashionlens.metrics import (
    METRICS,
    average_precision_per_label,
    confusion_matrix,
    iter_ranked_counts,
    macro_fbeta,
    mean_average_precision,
    micro_fbeta,
    per_class_table,
    per_label_scores,
    relevance_matrix,
    retrieval_metrics,
    sample_f1,
    topk_accuracies,
    topk_accuracy,
)

NAN = np.nan


def random_multilabel(seed: int, n: int = 60, n_labels: int = 7, nan_fraction: float = 0.0):
    """Truth with per-label prevalence from 5% to 60%, scores correlated with it, and 0.5-cut decisions."""
    rng = np.random.default_rng(seed)
    truth = (rng.random((n, n_labels)) < np.linspace(0.05, 0.6, n_labels)).astype(float)
    truth[0, :] = 1.0  # every label has a positive, so AP is defined everywhere
    scores = np.clip(0.35 * truth + rng.random((n, n_labels)) * 0.7, 0, 1)
    if nan_fraction:
        truth[rng.random((n, n_labels)) < nan_fraction] = NAN
        truth[0, :] = 1.0
    return truth, scores, scores >= 0.5


def test_per_label_scores_by_hand():
    truth = np.array([[1, 0], [1, NAN], [0, 1], [0, 0], [1, 0]])
    pred = np.array([[1, 1], [0, 1], [1, 1], [0, 0], [1, 0]])
    table = per_label_scores(truth, pred, beta=2.0, names=["collar", "scarf"])
    assert table["label"].tolist() == ["collar", "scarf"]
    # collar: tp 2, fp 1, fn 1 -> P 2/3, R 2/3. scarf: rows 0,2,3,4 labelled (row 1 NaN predicted positive is not
    # a false positive): tp 1, fp 1, fn 0 -> P 1/2, R 1, F2 = 5*0.5/(4*0.5+1) = 5/6, F1 = 2/3.
    assert table[["support_pos", "support", "tp", "fp", "fn"]].to_numpy().tolist() == [[3, 5, 2, 1, 1],
                                                                                      [1, 4, 1, 1, 0]]
    np.testing.assert_allclose(table["precision"], [2 / 3, 1 / 2])
    np.testing.assert_allclose(table["recall"], [2 / 3, 1.0])
    np.testing.assert_allclose(table["f_beta"], [2 / 3, 5 / 6])
    np.testing.assert_allclose(table["f1"], [2 / 3, 2 / 3])
    assert macro_fbeta(truth, pred, beta=2.0) == pytest.approx((2 / 3 + 5 / 6) / 2)


def test_zero_division_and_unlabelled_labels():
    # label 0: no positives, nothing predicted; label 1: never labelled; label 2: perfect.
    truth = np.array([[0, NAN, 1], [0, NAN, 0]])
    pred = np.array([[0, 1, 1], [0, 1, 0]])
    table = per_label_scores(truth, pred)
    assert table["f_beta"][0] == 0.0 and np.isnan(table["f_beta"][1]) and table["f_beta"][2] == 1.0
    assert per_label_scores(truth, pred, zero_division=1.0)["f_beta"][0] == 1.0
    assert macro_fbeta(truth, pred) == pytest.approx(0.5)  # the unlabelled label is skipped, not counted as 0
    assert macro_fbeta(truth, pred, zero_division=1.0) == pytest.approx(1.0)


def test_sample_f1_by_hand():
    truth = np.array([[1, 0, NAN], [0, 0, 0], [NAN, NAN, NAN], [1, 1, 0]])
    pred = np.array([[1, 1, 1], [0, 0, 0], [1, 1, 1], [1, 0, 0]])
    # sample 0: tp 1, fp 1 -> 2/3 (its NaN entry is ignored); sample 1: no true, no predicted -> 1;
    # sample 2: nothing labelled, skipped; sample 3: tp 1, fn 1 -> 2/3.
    assert sample_f1(truth, pred) == pytest.approx((2 / 3 + 1 + 2 / 3) / 3)
    assert sample_f1(truth, pred, zero_division=0.0) == pytest.approx((2 / 3 + 0 + 2 / 3) / 3)


def test_average_precision_by_hand():
    truth = np.array([[1, 1], [0, 0], [1, 0], [0, 1], [NAN, 0]])
    scores = np.array([[0.9, 0.9], [0.8, 0.9], [0.7, 0.7], [0.1, 0.1], [0.95, 0.05]])
    # label 0: hits at ranks 1 and 3 (the NaN row's top score is ignored) -> (1 + 2/3) / 2.
    # label 1: the 0.9 tie enters together (P 1/2 at R 1/2), then R 1 at P 2/4 -> 1/2.
    np.testing.assert_allclose(average_precision_per_label(truth, scores), [5 / 6, 1 / 2])
    no_positive = np.hstack([truth, np.zeros((5, 1))])
    ap = average_precision_per_label(no_positive, np.hstack([scores, np.ones((5, 1))]))
    assert np.isnan(ap[2])
    assert mean_average_precision(no_positive, np.hstack([scores, np.ones((5, 1))])) == pytest.approx(2 / 3)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_agrees_with_sklearn_without_nan(seed):
    truth, scores, pred = random_multilabel(seed)
    truth[:, -1] = 0  # a label with no positives exercises zero division
    table = per_label_scores(truth, pred, beta=2.0)
    precision, recall, f2, support = skm.precision_recall_fscore_support(truth, pred, beta=2.0, average=None,
                                                                         zero_division=0)
    np.testing.assert_allclose(table["precision"], precision)
    np.testing.assert_allclose(table["recall"], recall)
    np.testing.assert_allclose(table["f_beta"], f2)
    np.testing.assert_array_equal(table["support_pos"], support)
    np.testing.assert_allclose(table["f1"], skm.f1_score(truth, pred, average=None, zero_division=0))
    for beta in (1.0, 2.0):
        assert macro_fbeta(truth, pred, beta) == pytest.approx(
            skm.fbeta_score(truth, pred, beta=beta, average="macro", zero_division=0))
    assert sample_f1(truth, pred) == pytest.approx(skm.f1_score(truth, pred, average="samples", zero_division=1))
    with_positives = truth[:, :-1]
    expected_ap = [skm.average_precision_score(with_positives[:, j], scores[:, j]) for j in range(truth.shape[1] - 1)]
    np.testing.assert_allclose(average_precision_per_label(with_positives, scores[:, :-1]), expected_ap)
    assert mean_average_precision(truth, scores) == pytest.approx(np.mean(expected_ap))


def test_average_precision_with_ties_agrees_with_sklearn():
    truth, scores, _ = random_multilabel(3, n=200)
    coarse = np.round(scores, 1)  # many tied scores
    expected = [skm.average_precision_score(truth[:, j], coarse[:, j]) for j in range(truth.shape[1])]
    np.testing.assert_allclose(average_precision_per_label(truth, coarse), expected)


@pytest.mark.parametrize("seed", [0, 1])
def test_nan_entries_equal_dropping_them(seed):
    truth, scores, pred = random_multilabel(seed, nan_fraction=0.3)
    table = per_label_scores(truth, pred)
    ap = average_precision_per_label(truth, scores)
    for j in range(truth.shape[1]):
        rows = ~np.isnan(truth[:, j])
        assert table["f_beta"][j] == pytest.approx(
            skm.fbeta_score(truth[rows, j], pred[rows, j], beta=2.0, zero_division=0))
        assert table["support"][j] == rows.sum()
        assert ap[j] == pytest.approx(skm.average_precision_score(truth[rows, j], scores[rows, j]))
    per_sample = [skm.f1_score(truth[i, ~np.isnan(truth[i])], pred[i, ~np.isnan(truth[i])], zero_division=1)
                  for i in range(len(truth))]
    assert sample_f1(truth, pred) == pytest.approx(np.mean(per_sample))


@pytest.mark.parametrize("name", sorted(METRICS))
def test_registry_metrics_ignore_unlabelled_entries(name):
    metric = METRICS[name]
    truth, scores, pred = random_multilabel(4, nan_fraction=0.3)
    y = scores if metric.needs_scores else pred.astype(float)
    scrambled = np.where(np.isnan(truth), 1.0 - y, y)  # change the output only where the truth is unknown
    assert metric(truth, scrambled) == pytest.approx(metric(truth, y))
    as_negatives = np.nan_to_num(truth)  # were unlabelled entries counted as negatives, the change would show
    assert metric(as_negatives, scrambled) != pytest.approx(metric(as_negatives, y))


@pytest.mark.parametrize("name", sorted(METRICS))
def test_registry_metrics_perfect_and_bad_input(name):
    metric = METRICS[name]
    truth, _, _ = random_multilabel(5, nan_fraction=0.2)
    perfect = np.nan_to_num(truth, nan=0.0)
    assert metric(truth, perfect if metric.needs_scores else perfect.astype(bool)) == pytest.approx(1.0)
    with pytest.raises(DataError, match="shape"):
        metric(truth, perfect[:, :-1])
    with pytest.raises(DataError, match="y_true"):
        metric(np.where(np.isnan(truth), 2.0, truth), perfect)


def test_binary_metrics_reject_scores():
    truth, scores, _ = random_multilabel(6)
    with pytest.raises(DataError, match="binary"):
        macro_fbeta(truth, scores)


def test_ranked_counts_blocks_match_one_block():
    truth, scores, _ = random_multilabel(7, nan_fraction=0.2)
    (whole,) = iter_ranked_counts(truth, scores)
    blocks = list(iter_ranked_counts(truth, scores, max_cells=2 * len(truth)))
    assert len(blocks) == 4
    for field in ("scores", "tp", "fp", "cut", "n_pos"):
        np.testing.assert_array_equal(np.concatenate([getattr(b, field) for b in blocks], axis=-1),
                                      getattr(whole, field))


def test_topk_accuracy_by_hand():
    labels = np.array([0, 1, 2, 2])
    scores = np.array([[0.5, 0.3, 0.2], [0.5, 0.3, 0.2], [0.5, 0.3, 0.2], [0.4, 0.4, 0.4]])
    # ranks of the true class: 1, 2, 3, and a three-way tie, which counts as rank 3.
    assert topk_accuracies(labels, scores, ks=(1, 2, 3)) == {"top1": 0.25, "top2": 0.5, "top3": 1.0}
    with pytest.raises(DataError, match="labels"):
        topk_accuracy(np.array([0, 3, 1, 1]), scores, 1)
    with pytest.raises(ConfigError, match="k >= 1"):
        topk_accuracy(labels, scores, 0)


def test_multiclass_agrees_with_sklearn():
    rng = np.random.default_rng(8)
    labels = rng.integers(0, 6, 300)
    scores = rng.random((300, 6)) + np.eye(6)[labels] * 0.4
    for k in (1, 3, 5):
        assert topk_accuracy(labels, scores, k) == pytest.approx(
            skm.top_k_accuracy_score(labels, scores, k=k, labels=range(6)))
    predictions = scores.argmax(axis=1)
    predictions[predictions == 5] = 4  # class 5 is never predicted: zero-division precision
    np.testing.assert_array_equal(confusion_matrix(labels, predictions, 6),
                                  skm.confusion_matrix(labels, predictions, labels=range(6)))
    table = per_class_table(labels, predictions, [f"c{i}" for i in range(6)])
    precision, recall, f1, support = skm.precision_recall_fscore_support(labels, predictions, labels=range(6),
                                                                         zero_division=0)
    np.testing.assert_allclose(table[["precision", "recall", "f1"]].to_numpy().T, [precision, recall, f1])
    np.testing.assert_array_equal(table["support"], support)
    assert table["class"].tolist()[5] == "c5"


def test_relevance_matrix_ignores_padding():
    relevance = relevance_matrix(["a", "b", "c"], [["x", "a", None, "a"], ["b", -1, "c", "d"], [None] * 4])
    np.testing.assert_array_equal(relevance, [[0, 1, 0, 1], [1, 0, 0, 0], [0, 0, 0, 0]])
    np.testing.assert_array_equal(relevance_matrix([-1, 7], [[-1, 7], [7, -1]]), [[0, 0], [1, 0]])
    with pytest.raises(DataError, match="query keys"):
        relevance_matrix(["a"], [["a"], ["b"]])


def test_retrieval_metrics_by_hand():
    relevance = np.array([[0, 1, 0, 1], [1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]], dtype=bool)
    n_relevant = np.array([3, 1, 2, 0])  # the last query has nothing to find: left out
    scores = retrieval_metrics(relevance, n_relevant, ks=(1, 2, 4))
    expected = {
        "recall@1": 1 / 3, "precision@1": 1 / 3,
        "recall@2": 2 / 3, "precision@2": (1 / 2 + 1 / 2 + 0) / 3,
        "recall@4": 2 / 3, "precision@4": (2 / 4 + 1 / 4 + 0) / 3,
        # AP: (1/2 + 2/4) / min(3, 4), 1/1, 0.
        "mAP": (1 / 3 + 1 + 0) / 3,
    }
    assert scores == pytest.approx(expected)
    assert list(scores) == list(expected)
    with pytest.raises(ConfigError, match="K=5"):
        retrieval_metrics(relevance, n_relevant, ks=(5,))
    with pytest.raises(DataError, match="query 1"):
        retrieval_metrics(relevance, np.array([3, 0, 2, 0]))


def test_retrieval_map_normalises_by_list_length():
    # 5 relevant items but a list of 2: both slots relevant is the best possible list.
    assert retrieval_metrics(np.ones((1, 2), dtype=bool), np.array([5]), ks=(1,))["mAP"] == pytest.approx(1.0)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("beta", [1.0, 2.0])
def test_micro_fbeta_agrees_with_sklearn(seed, beta):
    truth, _, pred = random_multilabel(seed)
    expected = skm.fbeta_score(truth, pred, beta=beta, average="micro", zero_division=0)
    assert micro_fbeta(truth, pred, beta=beta) == pytest.approx(expected)


def test_micro_fbeta_by_hand_pools_counts_and_drops_unlabelled():
    truth = np.array([[1, 0], [1, NAN], [0, 1]], dtype=float)
    pred = np.array([[1, 1], [0, 1], [0, 1]], dtype=bool)
    # labelled entries: tp = 2 (row 0 label 0, row 2 label 1), fp = 1 (row 0 label 1), fn = 1 (row 1 label 0)
    assert micro_fbeta(truth, pred) == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
    assert micro_fbeta(np.nan_to_num(truth), pred) == pytest.approx(4 / 7)  # the NaN entry as a negative: one more FP
