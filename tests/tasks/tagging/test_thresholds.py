"""Per-label threshold search: analytic optima, brute-force comparison, fallback, decoding."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import fbeta_score

from fashionlens.errors import ConfigError, DataError, ModelError
from fashionlens.metrics import micro_fbeta
from fashionlens.tasks.tagging.thresholds import (
    apply_thresholds,
    best_thresholds,
    fbeta_curve,
    micro_thresholds,
    plateau_thresholds,
    select_thresholds,
    shrink_thresholds,
    topk_decode,
)

NAN = np.nan
# Ranked: pos 0.9, neg 0.8, neg 0.7, pos 0.6, neg 0.2. F2 at each cut: 5/9, 1/2, 5/11, 10/12, 10/13;
# F1: 2/3, 1/2, 2/5, 2/3, 4/7 (a tie between the 0.9 and the 0.6 cut).
CONSTRUCTED_TRUTH = np.array([[1.0], [0.0], [0.0], [1.0], [0.0]])
CONSTRUCTED_SCORES = np.array([[0.9], [0.8], [0.7], [0.6], [0.2]])


def test_separable_scores_give_f1_at_the_midpoint():
    truth = np.array([[1, 0], [1, 1], [1, 0], [0, 0], [0, 1], [0, 0]], dtype=float)
    scores = np.array([[0.8, 0.1], [0.9, 0.6], [0.7, 0.2], [0.1, 0.3], [0.3, 0.9], [0.2, 0.5]])
    result = best_thresholds(truth, scores, beta=2.0)
    np.testing.assert_allclose(result.thresholds, [0.5, 0.55])
    np.testing.assert_allclose(result.best_fbeta, [1.0, 1.0])
    assert result.no_positive_labels == []


def test_constructed_f2_and_f1_optima():
    f2 = best_thresholds(CONSTRUCTED_TRUTH, CONSTRUCTED_SCORES, beta=2.0)
    assert f2.thresholds[0] == pytest.approx(0.4)
    assert f2.best_fbeta[0] == pytest.approx(10 / 12)
    f1 = best_thresholds(CONSTRUCTED_TRUTH, CONSTRUCTED_SCORES, beta=1.0)
    assert f1.thresholds[0] == pytest.approx(0.85)  # tie: the higher cut wins
    assert f1.best_fbeta[0] == pytest.approx(2 / 3)


def test_fbeta_curve_by_hand():
    curve = fbeta_curve(CONSTRUCTED_TRUTH[:, 0], CONSTRUCTED_SCORES[:, 0], [0.95, 0.85, 0.6, 0.4, 0.0], beta=2.0)
    np.testing.assert_allclose(curve, [0.0, 5 / 9, 10 / 12, 10 / 12, 10 / 13])


def test_lowest_cut_uses_the_lowest_score():
    truth = np.array([[1.0], [1.0], [0.0], [NAN]])
    scores = np.array([[0.3], [0.9], [0.5], [0.1]])  # F2 is best predicting every labelled row
    assert best_thresholds(truth, scores).thresholds[0] == pytest.approx(0.3)


def test_unlabelled_rows_do_not_move_the_threshold():
    truth = np.array([[1.0], [NAN], [0.0], [NAN], [1.0], [0.0]])
    scores = np.array([[0.9], [0.75], [0.6], [0.5], [0.8], [0.1]])
    masked = best_thresholds(truth, scores)
    labelled = ~np.isnan(truth[:, 0])
    dropped = best_thresholds(truth[labelled], scores[labelled])
    np.testing.assert_allclose(masked.thresholds, dropped.thresholds)
    assert masked.thresholds[0] == pytest.approx(0.7)


@pytest.mark.parametrize("beta", [1.0, 2.0])
def test_exact_search_beats_brute_force(beta):
    rng = np.random.default_rng(0)
    n, n_labels = 150, 6
    truth = (rng.random((n, n_labels)) < np.linspace(0.05, 0.5, n_labels)).astype(float)
    truth[0] = 1.0
    truth[rng.random((n, n_labels)) < 0.2] = NAN
    scores = np.round(np.clip(0.3 * np.nan_to_num(truth) + 0.7 * rng.random((n, n_labels)), 0, 1), 3)
    result = best_thresholds(truth, scores, beta=beta)
    grid = np.linspace(0, 1, 2001)
    decisions = apply_thresholds(scores, result.thresholds)
    for j in range(n_labels):
        rows = ~np.isnan(truth[:, j])
        y, s = truth[rows, j], scores[rows, j]
        predicted = s[:, None] >= grid[None, :]
        tp = (predicted & (y[:, None] == 1)).sum(axis=0)
        fp = (predicted & (y[:, None] == 0)).sum(axis=0)
        brute = (1 + beta**2) * tp / ((1 + beta**2) * tp + beta**2 * (y.sum() - tp) + fp)
        assert result.best_fbeta[j] >= brute.max() - 1e-12
        achieved = fbeta_score(y, decisions[rows, j], beta=beta, zero_division=0)
        assert achieved == pytest.approx(result.best_fbeta[j])
        assert result.curves[j].max() <= result.best_fbeta[j] + 1e-12
    assert result.curves.shape == (n_labels, 99)
    np.testing.assert_allclose(result.grid, np.linspace(0.01, 0.99, 99))


def test_labels_without_positives_get_the_fallback():
    truth = np.array([[1, 0, NAN], [0, 0, NAN], [1, 0, NAN]], dtype=float)
    scores = np.array([[0.9, 0.4, 0.2], [0.1, 0.3, 0.7], [0.8, 0.6, 0.1]])
    result = best_thresholds(truth, scores, fallback=0.35, grid=[0.2, 0.5])
    assert result.no_positive_labels == [1, 2]
    np.testing.assert_allclose(result.thresholds, [0.45, 0.35, 0.35])
    assert result.best_fbeta[0] == 1.0 and np.isnan(result.best_fbeta[1:]).all()
    np.testing.assert_allclose(result.curves, [[1.0, 1.0], [0.0, 0.0], [0.0, 0.0]])


def test_logit_scores_get_a_spanning_grid():
    result = best_thresholds(CONSTRUCTED_TRUTH, CONSTRUCTED_SCORES * 10 - 5)
    assert result.grid[0] == pytest.approx(-3.0) and result.grid[-1] == pytest.approx(4.0)
    assert result.thresholds[0] == pytest.approx(-1.0)


def test_apply_thresholds():
    scores = np.array([[0.2, 0.5], [0.6, 0.4]])
    np.testing.assert_array_equal(apply_thresholds(scores, [0.2, 0.45]), [[True, True], [True, False]])
    np.testing.assert_array_equal(apply_thresholds(scores, 0.5), [[False, True], [True, False]])
    with pytest.raises(ModelError, match="3 thresholds for 2 labels"):
        apply_thresholds(scores, [0.5, 0.5, 0.5])
    with pytest.raises(DataError, match="finite"):
        apply_thresholds(np.array([[0.1, NAN]]), [0.5, 0.5])


def test_topk_decode():
    scores = np.array([[0.1, 0.7, 0.3, 0.7], [0.9, 0.1, 0.2, 0.3]])
    np.testing.assert_array_equal(topk_decode(scores, 2), [[0, 1, 0, 1], [1, 0, 0, 1]])
    np.testing.assert_array_equal(topk_decode(scores, 1), [[0, 1, 0, 0], [1, 0, 0, 0]])  # tie -> lower index
    with pytest.raises(ConfigError, match=r"k in 1\.\.4"):
        topk_decode(scores, 5)


def test_plateau_takes_the_centre_of_the_near_best_cuts():
    """Scores 0.9..0.1, positives at 0.9, 0.8, 0.7, 0.3: F1 peaks at the 0.65 cut (6/7); within one SE of it
    (sqrt(F (1-F) / 4) = 0.175) lie the cuts 0.65, 0.55 and 0.25, so the plateau's centre is 0.45."""
    scores = np.array([[0.9], [0.8], [0.7], [0.6], [0.5], [0.4], [0.3], [0.2], [0.1]])
    truth = np.array([[1], [1], [1], [0], [0], [0], [1], [0], [0]], dtype=float)
    exact = best_thresholds(truth, scores, beta=1.0)
    plateau = plateau_thresholds(truth, scores, beta=1.0)
    cuts = np.array([0.85, 0.75, 0.65, 0.55, 0.45, 0.35, 0.25, 0.15])
    fbeta = fbeta_curve(truth[:, 0], scores[:, 0], cuts, beta=1.0)
    best = fbeta.max()
    on_plateau = cuts[fbeta >= best - np.sqrt(best * (1 - best) / 4) - 1e-12]
    assert exact.thresholds[0] == pytest.approx(0.65)
    np.testing.assert_allclose(on_plateau, [0.65, 0.55, 0.25])
    assert plateau.thresholds[0] == pytest.approx(0.45)


def test_plateau_with_many_positives_is_the_exact_optimum():
    rng = np.random.default_rng(0)
    truth = (rng.random((4000, 1)) < 0.5).astype(float)
    scores = np.clip(truth * 0.3 + rng.random((4000, 1)) * 0.7, 0, 1)
    exact = best_thresholds(truth, scores, beta=2.0).thresholds[0]
    assert plateau_thresholds(truth, scores, beta=2.0).thresholds[0] == pytest.approx(exact, abs=0.05)


def test_shrink_thresholds():
    np.testing.assert_allclose(shrink_thresholds([0.1, 0.9], 0.5), [0.3, 0.7])
    np.testing.assert_allclose(shrink_thresholds([0.1, 0.9], 0.0), [0.1, 0.9])
    with pytest.raises(ConfigError, match="shrinkage"):
        shrink_thresholds([0.1], 1.5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_micro_thresholds_beat_per_label_ones_on_micro_f1(seed):
    """Coordinate ascent on the pooled counts: never below the per-label start, and above it where labels differ."""
    rng = np.random.default_rng(seed)
    truth = (rng.random((300, 5)) < [0.5, 0.3, 0.1, 0.05, 0.02]).astype(float)
    scores = np.clip(truth * rng.uniform(0.1, 0.6, 5) + rng.random((300, 5)) * 0.6, 0, 1)
    per_label = best_thresholds(truth, scores, beta=1.0).thresholds
    micro = micro_thresholds(truth, scores, beta=1.0).thresholds
    start = micro_fbeta(truth, apply_thresholds(scores, per_label))
    reached = micro_fbeta(truth, apply_thresholds(scores, micro))
    assert reached >= start - 1e-12
    brute = max(micro_fbeta(truth, scores >= t) for t in np.linspace(0, 1, 101))  # one shared cut
    assert reached >= brute - 1e-12


def test_select_thresholds_dispatches_and_rejects_unknown_rules():
    truth = np.array([[1], [0], [1], [0]], dtype=float)
    scores = np.array([[0.9], [0.2], [0.6], [0.4]])
    np.testing.assert_allclose(select_thresholds(truth, scores, 1.0).thresholds,
                               best_thresholds(truth, scores, 1.0).thresholds)
    np.testing.assert_allclose(select_thresholds(truth, scores, 1.0, shrink=1.0).thresholds, [0.5])
    with pytest.raises(ConfigError, match="rule"):
        select_thresholds(truth, scores, 1.0, rule="magic")
    with pytest.raises(ConfigError, match="average"):
        select_thresholds(truth, scores, 1.0, average="weighted")
