"""The tagging loss over rows addressed by index, and the validation figures that select epochs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from fashionlens import metrics
from fashionlens.losses import DEFAULT_MAX_WEIGHT, importance_vector, label_weights, masked_bce, masked_cross_entropy
from fashionlens.tasks.labels import LabelSpace
from fashionlens.tasks.tagging.config import TaggingConfig
from fashionlens.tasks.tagging.model import Predictions


class TaggingObjective:
    """Loss and batched prediction of a tagging model over rows addressed by index.

    Batches are ``(inputs, row_indices)``: inputs are features or images, and targets are looked up by row, so the
    same objective serves cached features and images alike. The tag loss is :func:`masked_bce` with the weights of
    :func:`label_weights` on ``train_rows``: balanced for ``weighted_bce``, ``K`` on positives and 1 on negatives
    for ``bce`` (the street-fashion paper's eq. 1), times each label's ``importance``.
    """

    def __init__(self, labels: LabelSpace, tag_targets: np.ndarray, head_targets: Mapping[str, np.ndarray],
                 loss: str, positive_weight: float, train_rows: np.ndarray,
                 max_weight: float | None = DEFAULT_MAX_WEIGHT, importance: Mapping[str, float] | None = None):
        self.labels = labels
        self.tag_targets = torch.as_tensor(tag_targets)
        self.head_targets = {h: torch.as_tensor(t) for h, t in head_targets.items()}
        self.pos_weight: torch.Tensor | None = None
        self.neg_weight: torch.Tensor | None = None
        if labels.tags:
            factors = importance_vector(labels.tags, importance or {})
            pos, neg = label_weights(tag_targets[train_rows], positive_weight=positive_weight, max_weight=max_weight,
                                     balanced=loss == "weighted_bce", importance=factors)
            self.pos_weight, self.neg_weight = torch.as_tensor(pos), torch.as_tensor(neg)

    @classmethod
    def from_config(cls, config: TaggingConfig, labels: LabelSpace, tag_targets: np.ndarray,
                    head_targets: Mapping[str, np.ndarray], train_rows: np.ndarray) -> TaggingObjective:
        """The objective ``config`` describes, with weights from ``train_rows``."""
        return cls(labels, tag_targets, head_targets, config.loss, config.positive_weight, train_rows,
                   config.max_weight, {k: v for k, v in config.label_importance.items() if k in labels.tags})

    def loss_from_outputs(self, outputs: Mapping[str, torch.Tensor], rows: torch.Tensor) -> torch.Tensor:
        """Sum of the per-label (weighted) BCE and each head's cross-entropy."""
        device = next(iter(outputs.values())).device
        total = torch.zeros((), device=device)
        if "tags" in outputs:
            pos = self.pos_weight.to(device) if self.pos_weight is not None else None
            neg = self.neg_weight.to(device) if self.neg_weight is not None else None
            total = total + masked_bce(outputs["tags"].float(), self.tag_targets[rows].to(device), pos, neg)
        for head in self.labels.heads:
            if head in outputs:
                total = total + masked_cross_entropy(outputs[head].float(), self.head_targets[head][rows].to(device))
        return total

    def loss(self, model: nn.Module, batch: Sequence[torch.Tensor], device: torch.device) -> torch.Tensor:
        """Engine callback: the loss of one ``(inputs, rows)`` batch."""
        inputs, rows = batch[0], batch[1]
        return self.loss_from_outputs(model(inputs.to(device)), rows)


def validation_metrics(predictions: Predictions, tag_targets: np.ndarray, head_targets: Mapping[str, np.ndarray],
                       beta: float) -> dict[str, float]:
    """Threshold-free and 0.5-threshold validation figures used to pick the best epoch."""
    out: dict[str, float] = {}
    if tag_targets.shape[1]:
        has_positive = bool(np.nansum(tag_targets) > 0)
        out["val_map"] = (metrics.mean_average_precision(tag_targets, predictions.tags) if has_positive
                          else float("nan"))
        out[f"val_macro_f{beta:g}@0.5"] = metrics.macro_fbeta(tag_targets, predictions.tags >= 0.5, beta=beta)
    for head, probs in predictions.heads.items():
        target = head_targets[head]
        labelled = target >= 0
        if labelled.any():
            out[f"val_acc_{head}"] = float((probs[labelled].argmax(axis=1) == target[labelled]).mean())
    if "val_map" not in out:
        accuracies = [v for k, v in out.items() if k.startswith("val_acc_")]
        out["val_map"] = float(np.mean(accuracies)) if accuracies else float("nan")
    return out
