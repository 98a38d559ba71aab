"""Networks: feature-extractor backbones (timm, with offline ImageNet weights), task heads, and the one composition
of backbone and head every task trains and runs (:class:`TaskNetwork`, :class:`InferenceGraph`)."""

from fashionlens.models.backbones import (
    Backbone,
    BackboneConfig,
    Preprocess,
    build_backbone,
    create_backbone,
    list_backbones,
)
from fashionlens.models.efficientnet_lite import create_classifier
from fashionlens.models.network import InferenceGraph, TaskNetwork

__all__ = [
    "Backbone",
    "BackboneConfig",
    "InferenceGraph",
    "Preprocess",
    "TaskNetwork",
    "build_backbone",
    "create_backbone",
    "create_classifier",
    "list_backbones",
]
