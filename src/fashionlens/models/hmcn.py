"""Hierarchical classification heads on pooled backbone features: HMCN-F and its flat-softmax baseline.

HMCN-F (Wehrmann, Cerri & Barros, "Hierarchical Multi-Label Classification Networks", ICML 2018), in the
single-path variant used for product categories (one class per level, softmax instead of sigmoids):

* the input features go through an FC layer to ``hidden`` units: ``x``;
* a **global flow** runs one layer per level, each seeing the previous level's activations and, as a residual
  connection, ``x`` again: ``A_G^1 = φ(W x + b)``, ``A_G^h = φ(W (A_G^{h-1} ⊕ x) + b)``; its last activations
  predict the last level, ``P_G``;
* a **local flow** branches off the global activations at each level ``h`` and predicts that level's classes,
  ``P_L^h``, so every level gets its own supervision;
* the final last-level prediction fuses both: ``P_F = β·P_L^{|H|} + (1-β)·P_G``.

Each FC layer is followed by batch normalisation, ReLU and dropout, as in the paper. The training loss is the
local losses (summed over levels) plus the global loss, either plainly summed or weighted by learned homoscedastic
uncertainty (Kendall, Gal & Cipolla, CVPR 2018): ``L_L/σ₁² + L_G/σ₂² + log σ₁ + log σ₂``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from torch import nn

from fashionlens.errors import ConfigError
from fashionlens.losses import masked_cross_entropy

LossWeightingMode = Literal["sum", "uncertainty"]
GLOBAL_KEY = "global"


def local_key(level: int) -> str:
    """Output key of the local-flow logits of ``level`` (0 = top)."""
    return f"local{level}"


def dense_block(in_features: int, out_features: int, dropout: float) -> nn.Sequential:
    """FC → batch norm → ReLU → dropout: every hidden layer of HMCN-F."""
    return nn.Sequential(nn.Linear(in_features, out_features), nn.BatchNorm1d(out_features), nn.ReLU(inplace=True),
                         nn.Dropout(dropout))


class LossWeighting(nn.Module):
    """Combine task losses by plain summation or by learned uncertainty (Kendall et al. 2018).

    With ``uncertainty``, the module learns ``s_i = log σ_i²`` and returns ``Σ_i exp(-s_i)·L_i + s_i/2``, which is
    ``Σ_i L_i/σ_i² + log σ_i``: a noisier task gets a larger σ and a smaller weight, and the ``log σ`` term stops
    σ from growing without bound. Learning ``log σ²`` rather than σ keeps the weights positive and the optimisation
    stable.
    """

    def __init__(self, n_losses: int, mode: LossWeightingMode = "uncertainty"):
        super().__init__()
        if mode not in ("sum", "uncertainty"):
            raise ConfigError(f"unknown loss weighting '{mode}'; use 'sum' or 'uncertainty'")
        self.mode = mode
        self.log_variance = nn.Parameter(torch.zeros(n_losses)) if mode == "uncertainty" else None

    def forward(self, losses: torch.Tensor) -> torch.Tensor:
        """The combined scalar loss of a ``(n_losses,)`` vector."""
        if self.log_variance is None:
            return losses.sum()
        return (torch.exp(-self.log_variance) * losses + 0.5 * self.log_variance).sum()

    def sigmas(self) -> list[float]:
        """The learned σ_i (all 1 for plain summation)."""
        if self.log_variance is None:
            return []
        return torch.exp(0.5 * self.log_variance.detach()).cpu().tolist()


class HierarchyHead(nn.Module):
    """What the hierarchy task needs of a head: logits, per-level probabilities, and a training loss.

    Args:
        level_sizes: Classes per level, top first.
    """

    def __init__(self, level_sizes: Sequence[int]):
        super().__init__()
        if not level_sizes or any(n < 1 for n in level_sizes):
            raise ConfigError(f"a hierarchy head needs at least one class per level, got sizes {list(level_sizes)}")
        self.level_sizes = [int(n) for n in level_sizes]

    def level_probabilities(self, outputs: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        """Per-level ``(B, classes)`` probabilities, top first; the last is the final prediction."""
        raise NotImplementedError

    def loss(self, outputs: dict[str, torch.Tensor], targets: torch.Tensor) -> torch.Tensor:
        """Training loss against ``(B, levels)`` class indices (-1 = no target at that level)."""
        raise NotImplementedError


class HMCNF(HierarchyHead):
    """HMCN-F, feed-forward variant, for single-path hierarchies (see the module docstring).

    Args:
        in_features: Width of the pooled backbone features.
        level_sizes: Classes per level, top first.
        hidden: Width of the input projection and of every global and local layer.
        dropout: Dropout after every hidden layer.
        beta: Weight of the local last-level prediction in the fused output (1 - beta goes to the global one).
        loss_weighting: ``"uncertainty"`` (learned σ) or ``"sum"`` (the plain-sum ablation).
    """

    def __init__(self, in_features: int, level_sizes: Sequence[int], hidden: int = 512, dropout: float = 0.5,
                 beta: float = 0.7, loss_weighting: LossWeightingMode = "uncertainty"):
        super().__init__(level_sizes)
        if not 0.0 <= beta <= 1.0:
            raise ConfigError(f"HMCN-F fusion weight beta must lie in [0, 1], got {beta}")
        self.beta = beta
        self.stem = dense_block(in_features, hidden, dropout)
        self.global_layers = nn.ModuleList(dense_block(hidden if h == 0 else 2 * hidden, hidden, dropout)
                                           for h in range(len(self.level_sizes)))
        self.local_layers = nn.ModuleList(nn.Sequential(dense_block(hidden, hidden, dropout), nn.Linear(hidden, n))
                                          for n in self.level_sizes)
        self.global_output = nn.Linear(hidden, self.level_sizes[-1])
        self.weighting = LossWeighting(2, loss_weighting)

    def forward(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits: ``local<h>`` per level and ``global`` (last level)."""
        x = self.stem(features)
        activation = x
        outputs: dict[str, torch.Tensor] = {}
        for h, (global_layer, local_layer) in enumerate(zip(self.global_layers, self.local_layers, strict=True)):
            activation = global_layer(x if h == 0 else torch.cat([activation, x], dim=1))
            outputs[local_key(h)] = local_layer(activation)
        outputs[GLOBAL_KEY] = self.global_output(activation)
        return outputs

    def level_probabilities(self, outputs: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        """Local softmax per level; the last level is ``β·P_L + (1-β)·P_G``."""
        levels = [torch.softmax(outputs[local_key(h)].float(), dim=1) for h in range(len(self.level_sizes))]
        levels[-1] = self.beta * levels[-1] + (1 - self.beta) * torch.softmax(outputs[GLOBAL_KEY].float(), dim=1)
        return levels

    def loss_terms(self, outputs: dict[str, torch.Tensor], targets: torch.Tensor) -> torch.Tensor:
        """``(L_local, L_global)``: summed per-level cross-entropies, and the global cross-entropy."""
        local = sum((masked_cross_entropy(outputs[local_key(h)].float(), targets[:, h])
                     for h in range(len(self.level_sizes))), torch.zeros((), device=targets.device))
        global_ = masked_cross_entropy(outputs[GLOBAL_KEY].float(), targets[:, -1])
        return torch.stack([local, global_])

    def loss(self, outputs: dict[str, torch.Tensor], targets: torch.Tensor) -> torch.Tensor:
        """The local and global losses, combined by :class:`LossWeighting`."""
        return self.weighting(self.loss_terms(outputs, targets))


class FlatHierarchyClassifier(HierarchyHead):
    """The flat baseline: FC(hidden) → BN → ReLU → dropout → one softmax over the last level.

    Upper-level probabilities are the sums of their leaves' probabilities, so its paths are always consistent.

    Args:
        in_features: Width of the pooled backbone features.
        leaf_paths: ``(leaves, levels)`` class index at every level of each leaf's path (``Taxonomy.leaf_paths``).
        hidden: Width of the hidden layer.
        dropout: Dropout after the hidden layer.
    """

    def __init__(self, in_features: int, leaf_paths: np.ndarray, hidden: int = 512, dropout: float = 0.5):
        paths = torch.as_tensor(np.asarray(leaf_paths), dtype=torch.long)
        super().__init__([int(paths[:, h].max()) + 1 for h in range(paths.shape[1])])
        self.register_buffer("leaf_paths", paths)
        self.stem = dense_block(in_features, hidden, dropout)
        self.output = nn.Linear(hidden, self.level_sizes[-1])

    def forward(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits of the last level, under the same key as HMCN-F's global output."""
        return {GLOBAL_KEY: self.output(self.stem(features))}

    def level_probabilities(self, outputs: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        """Leaf softmax, summed up the tree for the upper levels."""
        leaf = torch.softmax(outputs[GLOBAL_KEY].float(), dim=1)
        paths: torch.Tensor = self.leaf_paths  # type: ignore[assignment]
        upper = [leaf.new_zeros(len(leaf), n).index_add_(1, paths[:, h], leaf)
                 for h, n in enumerate(self.level_sizes[:-1])]
        return [*upper, leaf]

    def loss(self, outputs: dict[str, torch.Tensor], targets: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of the last level."""
        return masked_cross_entropy(outputs[GLOBAL_KEY].float(), targets[:, -1])
