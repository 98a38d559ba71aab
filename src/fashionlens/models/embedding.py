"""Embedding networks for visual search: pooled backbone features → optional projection → optional L2 norm.

Street-to-shop retrieval compares a photo with catalogue images by the distance between their embeddings. A triplet
network is *one* network applied to the anchor, the positive and the negatives, so it is simply a backbone (global
average pooled, see :class:`~fashionlens.models.backbones.Backbone`) followed by an :class:`EmbeddingHead`, composed
as every task's network is (:class:`~fashionlens.models.network.TaskNetwork`); the untrained baseline is the same with
no projection, i.e. plain ImageNet features.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional


class EmbeddingHead(nn.Module):
    """Maps pooled backbone features to embeddings.

    Args:
        in_features: Width of the pooled backbone features.
        dim: Embedding width; ``None`` keeps the features as they are (no projection), as for the untrained baseline.
        hidden: Width of a hidden ReLU layer before the projection (an MLP, which learns more from frozen features
            than a linear map); ``None`` projects linearly. Ignored when ``dim`` is ``None``.
        normalize: L2-normalise the output. Normalised embeddings compare by cosine similarity and keep triplet
            distances in ``[0, 4]``; the seed paper found unnormalised squared-L2 embeddings with margin 4 best.
    """

    def __init__(self, in_features: int, dim: int | None = 256, hidden: int | None = None, normalize: bool = True):
        super().__init__()
        self.in_features = in_features
        self.normalize = normalize
        self.projection: nn.Module
        if dim is None:
            self.projection = nn.Identity()
        elif hidden is None:
            self.projection = nn.Linear(in_features, dim)
        else:
            self.projection = nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(inplace=True),
                                            nn.Linear(hidden, dim))
        self.out_features = in_features if dim is None else dim

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Embeddings ``(B, out_features)`` of pooled features ``(B, in_features)``."""
        embeddings: torch.Tensor = self.projection(features)
        return functional.normalize(embeddings, dim=1) if self.normalize else embeddings
