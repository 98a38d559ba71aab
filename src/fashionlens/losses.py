"""Multi-label losses with unlabelled entries masked out and class-imbalance weights.

The weighted binary cross-entropy of the JD style / street-fashion attribute papers is

    L = -Σ_labels w_l · mean_rows [ A·y·ln p + B·(1-y)·ln(1-p) ]

with per-label weights A (positives) and B (negatives) and an optional importance ``w_l`` per label. Two choices
of (A, B) exist (see :func:`label_weights`): the street-fashion paper's eq. 1, ``A = K`` and ``B = 1`` (its best
``K`` is 2), and the "balanced" weighting from the training set's label ratio, so that a label with 5 % positives
is not learned as "always no". Rows whose target is NaN (unlabelled) contribute nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from fashionlens.errors import ConfigError

DEFAULT_MAX_WEIGHT = 20.0
"""Default cap on any balanced weight: a label with a handful of positives cannot dominate the loss."""


def label_weights(targets: np.ndarray, positive_weight: float = 1.0, max_weight: float | None = DEFAULT_MAX_WEIGHT,
                  balanced: bool = True, importance: Sequence[float] | np.ndarray | None = None,
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Per-label (A, B): the weights on positive and negative terms of :func:`masked_bce`.

    With ``balanced`` (``loss: weighted_bce``), ``A = K · n / (2·n_pos)`` and ``B = n / (2·n_neg)`` (n = labelled
    rows): both classes contribute equally in expectation, and ``K`` then shifts the balance towards recall.
    Without it (``loss: bce``), ``A = K`` and ``B = 1``: the street-fashion paper's eq. 1. The balanced weights
    are clipped to ``max_weight`` (``None``: no cap) and a label with no positives (or no negatives) gets 1 on both
    sides before ``K``. Finally both weights of label ``l`` are multiplied by ``importance[l]``.

    Args:
        targets: ``(n, L)`` array of 1/0 with NaN for unlabelled.
        positive_weight: The user-set factor ``K`` on positives (> 0).
        max_weight: Upper bound on a balanced weight (> 0), or ``None`` for none.
        balanced: Derive A and B from each label's ratio (else A = K, B = 1).
        importance: ``(L,)`` non-negative per-label factors (default all 1).
    """
    if not positive_weight > 0:
        raise ConfigError(f"positive_weight must be > 0, got {positive_weight}")
    if max_weight is not None and not max_weight > 0:
        raise ConfigError(f"max_weight must be > 0 (or null for no cap), got {max_weight}")
    n_labels = targets.shape[1]
    if balanced:
        labelled = ~np.isnan(targets)
        n = labelled.sum(axis=0).astype(np.float64)
        n_pos = np.nansum(targets, axis=0).astype(np.float64)
        n_neg = n - n_pos
        degenerate = (n_pos == 0) | (n_neg == 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            pos = np.where(degenerate, 1.0, n / (2.0 * n_pos))
            neg = np.where(degenerate, 1.0, n / (2.0 * n_neg))
        cap = np.inf if max_weight is None else max_weight
        pos = np.minimum(np.where(degenerate, 1.0, pos * positive_weight), cap)
        neg = np.minimum(neg, cap)
    else:
        pos, neg = np.full(n_labels, float(positive_weight)), np.ones(n_labels)
    if importance is not None:
        factors = np.asarray(importance, dtype=np.float64)
        if factors.shape != (n_labels,) or not np.isfinite(factors).all() or (factors < 0).any():
            raise ConfigError(f"label importance must be {n_labels} non-negative numbers, got {factors.tolist()}")
        pos, neg = pos * factors, neg * factors
    return pos.astype(np.float32), neg.astype(np.float32)


def importance_vector(names: Sequence[str], importance: Mapping[str, float]) -> np.ndarray:
    """``(L,)`` factors for labels ``names`` from a ``{label: factor}`` mapping (absent labels: 1)."""
    unknown = sorted(set(importance) - set(names))
    if unknown:
        raise ConfigError(f"label_importance names unknown label(s) {unknown}")
    return np.array([float(importance.get(name, 1.0)) for name in names], dtype=np.float64)


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
