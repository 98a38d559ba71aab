"""A trained hierarchy classifier (:class:`HierarchyClassifier`), its head and its predicted paths."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
from torch import nn

from fashionlens.distributed import unwrap
from fashionlens.errors import ConfigError, DataError, ModelError
from fashionlens.models.backbones import Backbone
from fashionlens.models.hmcn import HMCNF, FlatHierarchyClassifier, HierarchyHead
from fashionlens.models.network import TaskNetwork
from fashionlens.tasks.base import TaskModel, load_head
from fashionlens.tasks.common.model_dir import WEIGHTS_FILE, head_in_features
from fashionlens.tasks.hierarchy.config import HierarchyConfig
from fashionlens.tasks.hierarchy.taxonomy import Taxonomy
from fashionlens.tasks.registry import register_model

FIRST_LAYER = "stem.0.weight"
"""The first dense weight of a saved hierarchy head (both head kinds start with a ``stem`` dense block)."""


def build_head(config: HierarchyConfig, taxonomy: Taxonomy, in_features: int) -> HierarchyHead:
    """The head of ``config.variant`` for ``taxonomy``."""
    if config.variant == "flat":
        return FlatHierarchyClassifier(in_features, taxonomy.leaf_paths(), config.hidden, config.dropout)
    return HMCNF(in_features, taxonomy.sizes, config.hidden, config.dropout, config.beta,
                 "uncertainty" if config.loss_weighting == "uncertainty" else "sum")


def head_of(model: nn.Module) -> HierarchyHead:
    model = unwrap(model)
    head = model.head if isinstance(model, TaskNetwork) else model
    if not isinstance(head, HierarchyHead):
        raise ModelError(f"expected a hierarchy head, got {type(head).__name__}")
    return head


@dataclass
class HierarchyPredictions:
    """Predicted paths through a taxonomy with per-level probabilities.

    Attributes:
        taxonomy: The taxonomy predicted into.
        probabilities: Per level, ``(n, classes)`` probabilities (the last level is the fused final prediction).
        paths: ``(n, levels)`` the answer: class index per level (consistent or greedy decoding, per the config).
        greedy: ``(n, levels)`` per-level argmax, which may break the tree.
    """

    taxonomy: Taxonomy
    probabilities: list[np.ndarray]
    paths: np.ndarray
    greedy: np.ndarray

    @classmethod
    def from_probabilities(cls, taxonomy: Taxonomy, probabilities: Sequence[np.ndarray],
                           decoding: str = "consistent") -> HierarchyPredictions:
        """Decode per-level probabilities into greedy and (by default) consistent paths."""
        levels = [np.asarray(p, dtype=np.float32) for p in probabilities]
        greedy = np.stack([p.argmax(axis=1) for p in levels], axis=1)
        paths = taxonomy.decode_consistent(levels) if decoding == "consistent" else greedy
        return cls(taxonomy, levels, paths, greedy)

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def consistent(self) -> np.ndarray:
        """Whether each greedy path follows the tree."""
        return self.taxonomy.is_consistent(self.greedy)

    def path_probabilities(self) -> np.ndarray:
        """``(n, levels)`` probability of each class on the answer path."""
        rows = np.arange(len(self.paths))
        return np.stack([p[rows, self.paths[:, h]] for h, p in enumerate(self.probabilities)], axis=1)

    def table(self, image_paths: Sequence[str], top_k: int = 3) -> pd.DataFrame:
        """One row per image: the path, each level's class and probability, greedy consistency, leaf alternatives."""
        if len(image_paths) != len(self):
            raise DataError(f"{len(image_paths)} image paths for {len(self)} predictions")
        taxonomy, probs = self.taxonomy, self.path_probabilities()
        columns: dict[str, Any] = {"path": list(image_paths)}
        columns["category"] = [" > ".join(taxonomy.path_names(p)) for p in self.paths]
        for h, level in enumerate(taxonomy.levels):
            columns[f"class:{level}"] = [taxonomy.classes[h][i] for i in self.paths[:, h]]
            columns[f"p:{level}"] = np.round(probs[:, h], 4)
        columns["greedy_consistent"] = self.consistent
        leaves = np.argsort(-self.probabilities[-1], axis=1)[:, :top_k]
        columns[f"top{top_k}:{taxonomy.leaf_level}"] = [
            "; ".join(f"{taxonomy.classes[-1][j]} {self.probabilities[-1][i, j]:.3f}" for j in row)
            for i, row in enumerate(leaves)]
        return pd.DataFrame(columns)


@register_model
class HierarchyClassifier(TaskModel[HierarchyPredictions]):
    """A trained hierarchy classifier: taxonomy, head, and the backbone that makes its features (fine-tuned, or built
    on first use).

    Load one with :meth:`load` (or :func:`~fashionlens.tasks.registry.load_model`); predict with :meth:`predict` (a
    manifest), :meth:`predict_paths` (image files) or :meth:`predict_features`.
    """

    kind: ClassVar[str] = "hierarchy"
    config_class: ClassVar[type] = HierarchyConfig
    required_documents: ClassVar[tuple[str, ...]] = ("labels",)
    config: HierarchyConfig
    head: HierarchyHead

    def __init__(self, config: HierarchyConfig, taxonomy: Taxonomy, head: HierarchyHead,
                 backbone: Backbone | None = None, metrics_summary: dict[str, Any] | None = None,
                 weights_id: str | None = None):
        if head.level_sizes != taxonomy.sizes:
            raise ModelError(f"head predicts {head.level_sizes} classes per level, taxonomy has {taxonomy.sizes}")
        super().__init__(config, head, backbone, weights_id, metrics_summary)
        self.taxonomy = taxonomy

    @property
    def output_names(self) -> list[str]:
        """``level:<level>`` per taxonomy level, top first."""
        return [f"level:{level}" for level in self.taxonomy.levels]

    def activate(self, raw_outputs: Any) -> dict[str, torch.Tensor]:
        """Per-level class probabilities (the last level is the fused final prediction)."""
        probabilities = self.head.level_probabilities(raw_outputs)
        return dict(zip(self.output_names, probabilities, strict=True))

    def from_outputs(self, outputs: Mapping[str, np.ndarray], n_rows: int) -> HierarchyPredictions:
        """Paths (decoded as ``config.decoding`` says) and per-level probabilities."""
        return HierarchyPredictions.from_probabilities(self.taxonomy, [outputs[name] for name in self.output_names],
                                                       self.config.decoding)

    def documents(self) -> dict[str, Any]:
        """``labels.json``: the taxonomy."""
        return {"labels": self.taxonomy.to_json()}

    @classmethod
    def from_saved(cls, path: Path, config: Any, state: Mapping[str, Any], documents: Mapping[str, Any],
                   backbone: Backbone | None, weights_id: str | None) -> HierarchyClassifier:
        """The classifier of a saved directory (see :meth:`TaskModel.load`)."""
        try:
            taxonomy = Taxonomy.from_json(documents["labels"])
        except ConfigError as error:
            raise ModelError(f"{path}: {error}") from error
        head_state = state.get("head", {})
        if FIRST_LAYER not in head_state:
            raise ModelError(f"{path}/{WEIGHTS_FILE} holds no hierarchy head weights")
        head = load_head(build_head(config, taxonomy, head_in_features(head_state, FIRST_LAYER)), state, path,
                         "labels.json/config.json")
        return cls(config, taxonomy, head, backbone=backbone,  # type: ignore[arg-type]
                   metrics_summary=documents.get("metrics"), weights_id=weights_id)


