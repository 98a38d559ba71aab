"""Tagging objective (``tasks/tagging/objective.py``): label weights, NaN masking, the positive weight K."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fashionlens.losses import label_weights, masked_bce
from fashionlens.tasks.labels import LabelSpace
from fashionlens.tasks.tagging import TaggingObjective

from .conftest import quick_config, rows_of, synthetic


def test_objective_uses_ratio_weights_and_ignores_unlabelled() -> None:
    manifest, _ = synthetic()
    space = LabelSpace.from_manifest(manifest, heads=[])
    targets = space.tag_targets(manifest)
    train_rows = np.flatnonzero(manifest.frame["split"] == "train")
    objective = TaggingObjective(space, targets, {}, "weighted_bce", 2.0, train_rows)
    expected_pos, expected_neg = label_weights(targets[train_rows], positive_weight=2.0)
    assert objective.pos_weight is not None and objective.neg_weight is not None
    np.testing.assert_allclose(objective.pos_weight.numpy(), expected_pos)
    np.testing.assert_allclose(objective.neg_weight.numpy(), expected_neg)
    assert expected_pos[0] > expected_neg[0]  # the rare label's positives weigh more
    rows = torch.arange(50)
    logits = torch.zeros(50, 2, requires_grad=True)
    objective.loss_from_outputs({"tags": logits}, rows).backward()
    unlabelled = np.isnan(targets[:50, 1])
    assert unlabelled.any()
    assert torch.all(logits.grad[torch.as_tensor(unlabelled), 1] == 0)  # type: ignore[index]


def test_training_loss_is_masked_bce_with_label_weights_on_fixed_logits() -> None:
    manifest, _ = synthetic()
    config = quick_config(heads=[], positive_weight=1.5, max_weight=5.0, label_importance={"common": 2.0})
    space = LabelSpace.from_manifest(manifest, heads=[])
    targets = space.tag_targets(manifest)
    train_rows = rows_of(manifest, "train")
    objective = TaggingObjective.from_config(config, space, targets, {}, train_rows)
    pos, neg = label_weights(targets[train_rows], positive_weight=1.5, max_weight=5.0, importance=[1.0, 2.0])
    logits = torch.linspace(-3, 3, 2 * len(manifest)).reshape(-1, 2)
    rows = torch.arange(len(manifest))
    expected = masked_bce(logits, torch.as_tensor(targets), torch.as_tensor(pos), torch.as_tensor(neg))
    assert float(objective.loss_from_outputs({"tags": logits}, rows)) == pytest.approx(float(expected), rel=1e-6)
    unweighted = masked_bce(logits, torch.as_tensor(targets))
    assert float(expected) != pytest.approx(float(unweighted), rel=1e-3)  # the weights matter on these logits


def test_bce_honours_the_positive_weight_k() -> None:
    """``loss: bce`` is the street-fashion paper's eq. 1: K on positives, 1 on negatives (no longer ignored)."""
    manifest, _ = synthetic()
    space = LabelSpace.from_manifest(manifest, heads=[])
    targets = space.tag_targets(manifest)
    objective = TaggingObjective(space, targets, {}, "bce", 2.0, rows_of(manifest, "train"))
    assert objective.pos_weight is not None and objective.neg_weight is not None
    np.testing.assert_allclose(objective.pos_weight.numpy(), [2.0, 2.0])
    np.testing.assert_allclose(objective.neg_weight.numpy(), [1.0, 1.0])
