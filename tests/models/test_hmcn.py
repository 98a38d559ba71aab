"""HMCN-F and the flat baseline: output shapes, fusion of local and global predictions, losses."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fashionlens.errors import ConfigError
from fashionlens.losses import masked_cross_entropy
from fashionlens.models.hmcn import GLOBAL_KEY, HMCNF, FlatHierarchyClassifier, LossWeighting, local_key

SIZES = [3, 5, 7]
# Seven leaves under five middle classes under three top classes.
LEAF_PATHS = np.array([[0, 0, 0], [0, 0, 1], [0, 1, 2], [1, 2, 3], [1, 2, 4], [2, 3, 5], [2, 4, 6]])


def targets(batch: int, seed: int = 0) -> torch.Tensor:
    leaves = torch.randint(0, SIZES[-1], (batch,), generator=torch.Generator().manual_seed(seed))
    return torch.as_tensor(LEAF_PATHS)[leaves]


@pytest.mark.parametrize("head_kind", ["hmcn", "flat"])
def test_output_and_probability_shapes(head_kind: str) -> None:
    torch.manual_seed(0)
    head = HMCNF(16, SIZES, hidden=32) if head_kind == "hmcn" else FlatHierarchyClassifier(16, LEAF_PATHS, hidden=32)
    head.eval()
    outputs = head(torch.randn(4, 16))
    expected = {**{local_key(h): (4, n) for h, n in enumerate(SIZES)}, GLOBAL_KEY: (4, 7)} if head_kind == "hmcn" \
        else {GLOBAL_KEY: (4, 7)}
    assert {k: tuple(v.shape) for k, v in outputs.items()} == expected
    probabilities = head.level_probabilities(outputs)
    assert [tuple(p.shape) for p in probabilities] == [(4, n) for n in SIZES]
    for p in probabilities:
        torch.testing.assert_close(p.sum(dim=1), torch.ones(4))


@pytest.mark.parametrize("beta", [0.0, 0.3, 0.7, 1.0])
def test_final_prediction_fuses_local_and_global(beta: float) -> None:
    torch.manual_seed(0)
    head = HMCNF(16, SIZES, hidden=32, beta=beta).eval()
    outputs = head(torch.randn(5, 16))
    local = torch.softmax(outputs[local_key(2)], dim=1)
    global_ = torch.softmax(outputs[GLOBAL_KEY], dim=1)
    final = head.level_probabilities(outputs)[-1]
    torch.testing.assert_close(final, beta * local + (1 - beta) * global_)
    assert not torch.allclose(local, global_)  # the two flows really are different predictions


def test_global_flow_reuses_the_input_at_every_level() -> None:
    head = HMCNF(16, SIZES, hidden=32)
    widths = [layer[0].in_features for layer in head.global_layers]
    assert widths == [32, 64, 64]  # A_G^h = φ(W (A_G^{h-1} ⊕ x) + b) for h > 1


def test_flat_upper_levels_are_sums_of_leaves() -> None:
    head = FlatHierarchyClassifier(16, LEAF_PATHS, hidden=32).eval()
    top, middle, leaf = head.level_probabilities(head(torch.randn(3, 16)))
    torch.testing.assert_close(top[:, 0], leaf[:, :3].sum(dim=1))
    torch.testing.assert_close(middle[:, 2], leaf[:, 3:5].sum(dim=1))


def test_uncertainty_weighting_formula_and_gradients_reach_sigma() -> None:
    weighting = LossWeighting(2, "uncertainty")
    with torch.no_grad():
        weighting.log_variance.copy_(torch.tensor([np.log(4.0), 0.0]))  # σ1 = 2, σ2 = 1
    losses = torch.tensor([2.0, 3.0], requires_grad=True)
    total = weighting(losses)
    # L1/σ1² + L2/σ2² + log σ1 + log σ2
    torch.testing.assert_close(total, torch.tensor(2.0 / 4 + 3.0 / 1 + np.log(2.0) + 0.0, dtype=torch.float32))
    total.backward()
    assert weighting.log_variance.grad is not None
    # d/ds (e^{-s} L + s/2) = -e^{-s} L + 1/2
    torch.testing.assert_close(weighting.log_variance.grad, torch.tensor([-0.5 + 0.5, -3.0 + 0.5]))
    assert weighting.sigmas() == pytest.approx([2.0, 1.0])


def test_hmcn_loss_trains_sigma_and_sum_mode_is_plain_sum() -> None:
    torch.manual_seed(0)
    features, truth = torch.randn(8, 16), targets(8)
    head = HMCNF(16, SIZES, hidden=32, loss_weighting="uncertainty")
    head.loss(head(features), truth).backward()
    assert head.weighting.log_variance is not None and head.weighting.log_variance.grad is not None
    assert head.weighting.log_variance.grad.abs().sum() > 0
    plain = HMCNF(16, SIZES, hidden=32, loss_weighting="sum").eval()
    outputs = plain(features)
    expected = sum(masked_cross_entropy(outputs[local_key(h)], truth[:, h]) for h in range(3)) + \
        masked_cross_entropy(outputs[GLOBAL_KEY], truth[:, -1])
    torch.testing.assert_close(plain.loss(outputs, truth), expected)
    assert plain.weighting.sigmas() == [] and len(list(plain.weighting.parameters())) == 0


def test_unlabelled_levels_are_ignored_by_the_loss() -> None:
    torch.manual_seed(0)
    head = HMCNF(16, SIZES, hidden=32, loss_weighting="sum").eval()
    outputs = head(torch.randn(4, 16))
    truth = targets(4)
    masked = truth.clone()
    masked[0] = -1
    kept = {k: v[1:] for k, v in outputs.items()}
    torch.testing.assert_close(head.loss(outputs, masked), head.loss(kept, truth[1:]))


def test_invalid_settings_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="beta"):
        HMCNF(16, SIZES, beta=1.5)
    with pytest.raises(ConfigError, match="loss weighting"):
        LossWeighting(2, "mean")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="at least one class"):
        HMCNF(16, [3, 0])
