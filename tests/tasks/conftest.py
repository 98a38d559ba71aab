"""Tiny task models of every kind, assembled directly (no training) on timm's ``test_efficientnet`` with random
weights, for the spine tests (registry round trips, inference graphs): each builds in well under a second."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from fashionlens.models import Backbone, BackboneConfig, build_backbone
from fashionlens.models.embedding import EmbeddingHead
from fashionlens.models.heads import TaggingHead
from fashionlens.tasks.common import state_fingerprint
from fashionlens.tasks.hierarchy import HierarchyClassifier, HierarchyConfig, build_head
from fashionlens.tasks.hierarchy.taxonomy import Taxonomy
from fashionlens.tasks.labels import LabelSpace
from fashionlens.tasks.retrieval import Embedder, RetrievalConfig
from fashionlens.tasks.tagging import PerLabelHeads, Tagger, TaggingConfig

TINY = BackboneConfig(name="test_efficientnet", pretrained=False, num_workers=0, freeze=1)
LABELS = LabelSpace(tags=["red", "striped"], heads={"sleeve": ["long", "short", "none"]})
TAXONOMY = Taxonomy.from_json({"levels": ["master", "article"], "classes": [["Apparel", "Footwear"],
                                                                             ["Shirt", "Jeans", "Shoe"]],
                               "parents": [[], [0, 0, 1]]})


def finetuned_backbone() -> Backbone:
    """A backbone as fine-tuning leaves it: trained (here: perturbed) weights, identified by their fingerprint."""
    torch.manual_seed(1)
    backbone = build_backbone(TINY, finetune=True)
    with torch.no_grad():
        for parameter in backbone.parameters():
            parameter.add_(0.01 * torch.randn_like(parameter))
    backbone.weights_id = state_fingerprint(backbone)
    return backbone.eval()


def feature_width() -> int:
    """Width of the tiny backbone's pooled features."""
    return build_backbone(TINY).num_features


def tiny_tagger(mode: str) -> Tagger:
    """A tagger of ``mode`` with two tags and a three-class head (fine-tuned backbone in ``finetune`` mode)."""
    torch.manual_seed(0)
    config = TaggingConfig(backbone=TINY, mode=mode, hidden=8, dropout=0.0, tags=LABELS.tags)
    backbone = finetuned_backbone() if mode == "finetune" else None
    width = backbone.num_features if backbone is not None else feature_width()
    head = (PerLabelHeads(width, LABELS, 8, 0.0) if mode == "per_label"
            else TaggingHead(width, len(LABELS.tags), {"sleeve": 3}, hidden=8, dropout=0.0))
    return Tagger(config, LABELS, head, np.array([0.3, 0.6]), backbone=backbone,
                  threshold_sets={1.0: np.array([0.4, 0.5])}, weights_id=None if backbone else "random")


def tiny_hierarchy(mode: str) -> HierarchyClassifier:
    """An HMCN-F classifier of ``mode`` over a two-level taxonomy."""
    torch.manual_seed(0)
    config = HierarchyConfig(backbone=TINY, mode=mode, variant="hmcn", hidden=8, dropout=0.0)
    backbone = finetuned_backbone() if mode == "finetune" else None
    head = build_head(config, TAXONOMY, backbone.num_features if backbone is not None else feature_width())
    return HierarchyClassifier(config, TAXONOMY, head, backbone=backbone, weights_id=None if backbone else "random")


def tiny_embedder(mode: str) -> Embedder:
    """An embedder of ``mode`` (``features``, ``finetune`` or ``untrained``, the baseline)."""
    torch.manual_seed(0)
    if mode == "untrained":
        return Embedder.untrained(TINY)
    backbone = finetuned_backbone() if mode == "finetune" else None
    head = EmbeddingHead(backbone.num_features if backbone is not None else feature_width(), 8, None, normalize=True)
    config = RetrievalConfig(backbone=TINY, mode=mode, dim=8)
    return Embedder(config, head, backbone.weights_id if backbone is not None else "random", backbone)


#: Every kind and mode, by ``<kind>-<mode>``.
TASK_MODELS: dict[str, Callable[[], Any]] = {
    "tagger-features": lambda: tiny_tagger("features"),
    "tagger-finetune": lambda: tiny_tagger("finetune"),
    "tagger-per_label": lambda: tiny_tagger("per_label"),
    "hierarchy-features": lambda: tiny_hierarchy("features"),
    "hierarchy-finetune": lambda: tiny_hierarchy("finetune"),
    "embedder-features": lambda: tiny_embedder("features"),
    "embedder-finetune": lambda: tiny_embedder("finetune"),
    "embedder-untrained": lambda: tiny_embedder("untrained"),
}
