"""Masked multi-label losses: unlabelled entries contribute nothing; imbalance weights match the paper formula."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fashionlens.errors import ConfigError
from fashionlens.losses import DEFAULT_MAX_WEIGHT, importance_vector, label_weights, masked_bce, masked_cross_entropy

NAN = np.nan


def test_label_weights_by_hand() -> None:
    targets = np.array([[1, 1, 1], [0, 1, 1], [0, NAN, 1], [NAN, 0, 1]], dtype=np.float32)
    # label 0: n=3, 1 pos, 2 neg; label 1: n=3, 2 pos, 1 neg; label 2: only positives (degenerate).
    pos, neg = label_weights(targets, positive_weight=2.0)
    np.testing.assert_allclose(pos, [2 * 3 / 2, 2 * 3 / 4, 1.0])
    np.testing.assert_allclose(neg, [3 / 4, 3 / 2, 1.0])
    assert pos.dtype == neg.dtype == np.float32


def test_label_weights_are_clipped() -> None:
    targets = np.zeros((50, 1), dtype=np.float32)
    targets[0, 0] = 1.0  # 1 positive in 50: A = 50 / 2 = 25
    pos, neg = label_weights(targets, max_weight=10.0)
    np.testing.assert_allclose(pos, [10.0])
    np.testing.assert_allclose(neg, [50 / 98], rtol=1e-6)


@pytest.mark.parametrize("positive_weight", [1.0, 3.0])
@pytest.mark.parametrize("column", [[0, 0, 0], [1, 1, NAN], [NAN, NAN, NAN]], ids=["no-pos", "no-neg", "unlabelled"])
def test_degenerate_labels_get_weight_one(column: list[float], positive_weight: float) -> None:
    targets = np.array(column, dtype=np.float32)[:, None]
    pos, neg = label_weights(targets, positive_weight=positive_weight)
    np.testing.assert_allclose(pos, [1.0])
    np.testing.assert_allclose(neg, [1.0])


def _reference_bce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Sum over labels of torch's BCE-with-logits over that label's labelled rows only."""
    total = torch.zeros(())
    for j in range(targets.shape[1]):
        keep = ~torch.isnan(targets[:, j])
        if keep.any():
            total = total + F.binary_cross_entropy_with_logits(logits[keep, j], targets[keep, j])
    return total


def test_masked_bce_matches_torch_on_labelled_entries() -> None:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(16, 5, generator=generator) * 3
    targets = (torch.rand(16, 5, generator=generator) > 0.6).float()
    targets[torch.rand(16, 5, generator=generator) < 0.3] = math.nan
    targets[:, 4] = math.nan  # a label with no labelled row adds nothing
    assert torch.isnan(targets[:, :4]).any()
    torch.testing.assert_close(masked_bce(logits, targets), _reference_bce(logits, targets))
    dense = targets.nan_to_num(0.0)[:, :4]  # treating unlabelled as negative would give another value
    assert not torch.isclose(masked_bce(logits, targets), masked_bce(logits[:, :4], dense))


def test_unlabelled_entries_change_nothing_and_get_no_gradient() -> None:
    logits = torch.tensor([[0.3, -1.2], [2.0, 0.5], [-0.7, 1.1]], requires_grad=True)
    targets = torch.tensor([[1.0, math.nan], [0.0, 1.0], [math.nan, 0.0]])
    loss = masked_bce(logits, targets)
    loss.backward()
    assert logits.grad is not None
    unlabelled = torch.isnan(targets)
    assert torch.all(logits.grad[unlabelled] == 0)
    assert torch.all(logits.grad[~unlabelled] != 0)
    moved = logits.detach().clone()
    moved[unlabelled] = torch.tensor([50.0, -50.0])
    torch.testing.assert_close(masked_bce(moved, targets), loss.detach())


def test_weighted_bce_by_hand() -> None:
    logits = torch.tensor([[0.0, 1.0], [math.log(3.0), -1.0]])  # label 0: p = 0.5 (pos), p = 0.75 (neg)
    targets = torch.tensor([[1.0, math.nan], [0.0, math.nan]])
    pos_weight, neg_weight = torch.tensor([2.0, 5.0]), torch.tensor([3.0, 5.0])
    expected = (2 * math.log(2.0) + 3 * math.log(4.0)) / 2  # mean of -A·ln 0.5 and -B·ln 0.25
    loss = masked_bce(logits, targets, pos_weight=pos_weight, neg_weight=neg_weight)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_masked_cross_entropy_ignores_unlabelled_rows() -> None:
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.1, 0.2, 0.3], [5.0, -5.0, 0.0]])
    targets = torch.tensor([0, -1, 2])
    expected = F.cross_entropy(logits[[0, 2]], targets[[0, 2]])
    torch.testing.assert_close(masked_cross_entropy(logits, targets), expected)


def test_masked_cross_entropy_all_unlabelled_is_zero_with_gradient() -> None:
    logits = torch.randn(4, 3, requires_grad=True)
    loss = masked_cross_entropy(logits, torch.full((4,), -1))
    assert loss.item() == 0.0
    loss.backward()
    assert logits.grad is not None
    assert torch.all(logits.grad == 0)


def test_unbalanced_weights_are_the_street_fashion_papers_eq1() -> None:
    """``loss: bce`` with K: weight K on every positive term, 1 on every negative, whatever the label ratio."""
    targets = np.array([[1, 0], [0, 0], [0, 1], [NAN, 1]], dtype=np.float32)
    pos, neg = label_weights(targets, positive_weight=2.0, balanced=False)
    np.testing.assert_allclose(pos, [2.0, 2.0])
    np.testing.assert_allclose(neg, [1.0, 1.0])
    logits = torch.tensor([[0.3, -1.0], [-0.2, 0.5], [1.0, 2.0], [0.0, -0.4]])
    target = torch.as_tensor(targets)
    loss = masked_bce(logits, target, torch.as_tensor(pos), torch.as_tensor(neg))
    by_hand = 0.0
    for j in range(2):
        terms = []
        for i in range(4):
            y = float(targets[i, j])
            if math.isnan(y):
                continue
            p = 1 / (1 + math.exp(-float(logits[i, j])))
            terms.append(-(2.0 * y * math.log(p) + (1 - y) * math.log(1 - p)))
        by_hand += sum(terms) / len(terms)
    assert float(loss) == pytest.approx(by_hand, rel=1e-5)


def test_importance_multiplies_both_weights_of_a_label() -> None:
    targets = np.array([[1, 1], [0, 0], [0, 1], [0, 0]], dtype=np.float32)
    plain_pos, plain_neg = label_weights(targets, positive_weight=2.0)
    pos, neg = label_weights(targets, positive_weight=2.0, importance=[3.0, 1.0])
    np.testing.assert_allclose(pos, plain_pos * [3.0, 1.0])
    np.testing.assert_allclose(neg, plain_neg * [3.0, 1.0])
    logits = torch.randn(4, 2, generator=torch.Generator().manual_seed(0))
    target = torch.as_tensor(targets)
    per_label = [masked_bce(logits[:, [j]], target[:, [j]], torch.as_tensor(plain_pos[[j]]),
                            torch.as_tensor(plain_neg[[j]])) for j in range(2)]
    weighted = masked_bce(logits, target, torch.as_tensor(pos), torch.as_tensor(neg))
    assert float(weighted) == pytest.approx(float(3.0 * per_label[0] + per_label[1]), rel=1e-5)
    with pytest.raises(ConfigError, match="importance"):
        label_weights(targets, importance=[1.0, -1.0])
    with pytest.raises(ConfigError, match="importance"):
        label_weights(targets, importance=[1.0])


def test_weight_cap_is_configurable_and_can_be_lifted() -> None:
    """The JD paper's Sport label (1:527): the default cap of 20 flattens its weight, a higher cap or none keeps it."""
    targets = np.zeros((528, 1), dtype=np.float32)
    targets[0, 0] = 1.0
    uncapped = 528 / 2
    assert label_weights(targets)[0][0] == pytest.approx(DEFAULT_MAX_WEIGHT)
    assert label_weights(targets, max_weight=100.0)[0][0] == pytest.approx(100.0)
    assert label_weights(targets, max_weight=None)[0][0] == pytest.approx(uncapped)
    with pytest.raises(ConfigError, match="max_weight"):
        label_weights(targets, max_weight=0.0)
    with pytest.raises(ConfigError, match="positive_weight"):
        label_weights(targets, positive_weight=0.0)


def test_importance_vector_names_unknown_labels() -> None:
    np.testing.assert_allclose(importance_vector(["a", "b"], {"b": 2.0}), [1.0, 2.0])
    with pytest.raises(ConfigError, match="nope"):
        importance_vector(["a"], {"nope": 2.0})
