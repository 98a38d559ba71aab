"""Networks: feature-extractor backbones (timm, with offline ImageNet weights) and what they need to be fed."""

from fashionlens.models.backbones import Backbone, Preprocess, create_backbone, list_backbones
from fashionlens.models.efficientnet_lite import create_classifier

__all__ = ["Backbone", "Preprocess", "create_backbone", "create_classifier", "list_backbones"]
