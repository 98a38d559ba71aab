"""Plumbing shared by the tagging, hierarchy and retrieval tasks: the legacy-config migration, frozen-feature
extraction with the shared cache, data loaders, the training plumbing (one engine run, the one fine-tuning driver),
the markdown evaluation report and the saved-model directory convention (:mod:`~fashionlens.tasks.common.model_dir`)."""

from __future__ import annotations

from fashionlens.tasks.common.config import fold_legacy_freeze
from fashionlens.tasks.common.features import frozen_features, state_fingerprint
from fashionlens.tasks.common.loaders import image_row_loader, manifest_of_paths, tensor_loader
from fashionlens.tasks.common.model_dir import (
    LEGACY_WEIGHTS_FILE,
    WEIGHTS_FILE,
    head_in_features,
    read_model_dir,
    read_weights,
    save_model_dir,
)
from fashionlens.tasks.common.report import MarkdownReport
from fashionlens.tasks.common.training import finetune, finetune_network, fit, predict_outputs, tuned_parts

__all__ = [
    "LEGACY_WEIGHTS_FILE",
    "WEIGHTS_FILE",
    "MarkdownReport",
    "finetune",
    "finetune_network",
    "fit",
    "fold_legacy_freeze",
    "frozen_features",
    "head_in_features",
    "image_row_loader",
    "manifest_of_paths",
    "predict_outputs",
    "read_model_dir",
    "read_weights",
    "save_model_dir",
    "state_fingerprint",
    "tensor_loader",
    "tuned_parts",
]
