"""Task heads that sit on pooled backbone features."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn


class TaggingHead(nn.Module):
    """The tagging head of the seed papers: FC(hidden) → ReLU → dropout → one logit per label,
    plus one softmax head per multi-class attribute (sleeve length, category...), sharing the hidden layer.

    Args:
        in_features: Width of the pooled backbone features.
        num_tags: Number of binary labels (one sigmoid each).
        head_classes: Multi-class head name → number of classes.
        hidden: Width of the shared hidden layer (1024 in the papers).
        dropout: Dropout before the output layers.
    """

    def __init__(self, in_features: int, num_tags: int, head_classes: Mapping[str, int] | None = None,
                 hidden: int = 1024, dropout: float = 0.5):
        super().__init__()
        self.hidden = nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout))
        self.tags = nn.Linear(hidden, num_tags) if num_tags else None
        self.heads = nn.ModuleDict({name: nn.Linear(hidden, n) for name, n in (head_classes or {}).items()})

    def forward(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits: ``{"tags": (B, num_tags), "<head>": (B, classes)...}``."""
        hidden = self.hidden(features)
        out = {name: layer(hidden) for name, layer in self.heads.items()}
        if self.tags is not None:
            out["tags"] = self.tags(hidden)
        return out
