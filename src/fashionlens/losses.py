"""Multi-label losses with unlabelled entries masked out and class-imbalance weights.

The weighted binary cross-entropy of the JD style / street-fashion attribute papers is

    L = -Σ_labels mean_rows [ A·y·ln p + B·(1-y)·ln(1-p) ]

with per-label weights A (positives) and B (negatives) derived from the training set's label ratio, so that a
label with 5 % positives is not learned as "always no". Rows whose target is NaN (unlabelled) contribute nothing.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def label_weights(targets: np.ndarray, positive_weight: float = 1.0, max_weight: float = 20.0,
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Per-label (A, B) from the positive:negative ratio of the labelled training rows.

    ``A = K · n / (2·n_pos)`` and ``B = n / (2·n_neg)`` (n = labelled rows), the "balanced" weighting: both
    classes contribute equally in expectation, and ``K`` (the street-fashion paper's user-set positive weight)
    then shifts the balance towards recall. Weights are clipped to ``max_weight`` so that a label with a handful of
    positives cannot dominate; a label with no positives (or no negatives) gets weight 1 on both sides.

    Args:
        targets: ``(n, L)`` array of 1/0 with NaN for unlabelled.
        positive_weight: The user-set factor ``K`` on positives.
        max_weight: Upper bound on any weight.
    """
    labelled = ~np.isnan(targets)
    n = labelled.sum(axis=0).astype(np.float64)
    n_pos = np.nansum(targets, axis=0).astype(np.float64)
    n_neg = n - n_pos
    degenerate = (n_pos == 0) | (n_neg == 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        pos = np.where(degenerate, 1.0, n / (2.0 * n_pos))
        neg = np.where(degenerate, 1.0, n / (2.0 * n_neg))
    pos = np.clip(np.where(degenerate, 1.0, pos * positive_weight), 0.0, max_weight)
    neg = np.clip(neg, 0.0, max_weight)
    return pos.astype(np.float32), neg.astype(np.float32)


def masked_bce(logits: torch.Tensor, targets: torch.Tensor, pos_weight: torch.Tensor | None = None,
               neg_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Sum over labels of the (weighted) BCE averaged over each label's labelled rows.

    Args:
        logits: ``(n, L)`` raw scores.
        targets: ``(n, L)`` 1/0 with NaN for unlabelled (masked out, never treated as negative).
        pos_weight: ``(L,)`` weight A on positive terms (default 1).
        neg_weight: ``(L,)`` weight B on negative terms (default 1).
    """
    mask = ~torch.isnan(targets)
    safe_targets = torch.where(mask, targets, torch.zeros_like(targets))
    # log σ(x) and log(1-σ(x)) computed stably.
    log_p = F.logsigmoid(logits)
    log_not_p = F.logsigmoid(-logits)
    pos_term = safe_targets * log_p
    neg_term = (1.0 - safe_targets) * log_not_p
    if pos_weight is not None:
        pos_term = pos_term * pos_weight
    if neg_weight is not None:
        neg_term = neg_term * neg_weight
    per_entry = -(pos_term + neg_term) * mask
    counts = mask.sum(dim=0).clamp(min=1)
    return (per_entry.sum(dim=0) / counts).sum()


def masked_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Softmax cross-entropy of a multi-class head; targets of -1 (unlabelled) are ignored.

    Returns zero (with a gradient path) when no row of the batch is labelled.
    """
    if bool((targets >= 0).any()):
        return F.cross_entropy(logits, targets, ignore_index=-1)
    return logits.sum() * 0.0
