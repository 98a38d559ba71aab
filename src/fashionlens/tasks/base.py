"""The common base of the task models (:class:`~fashionlens.tasks.tagging.Tagger`,
:class:`~fashionlens.tasks.hierarchy.HierarchyClassifier`, :class:`~fashionlens.tasks.retrieval.Embedder`).

A task model is a backbone and a head (:class:`~fashionlens.models.network.TaskNetwork`) plus what the task knows
about its outputs (labels, a taxonomy, a metric). The base holds everything they share:

* ``backbone`` -- the fine-tuned backbone, or (feature-mode models) the pretrained one built on first use and checked
  against the weights the head was trained on;
* prediction -- :meth:`~TaskModel.predict` (a manifest, features through the shared cache),
  :meth:`~TaskModel.predict_paths` and :meth:`~TaskModel.predict_features`, all through :meth:`~TaskModel.activate`,
  the torch-level output activation the exported :meth:`~TaskModel.inference_graph` uses too;
* the saved directory -- ``model.safetensors`` (head, and backbone when fine-tuned), ``config.json`` (the config,
  the model's ``kind``, the fashionlens version that saved it and the backbone ``weights_id``), ``metrics.json``,
  and the task's own documents.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar, Generic, Self, TypeVar

import numpy as np
import torch
from torch import nn

from fashionlens import __version__
from fashionlens.config import from_dict, to_dict
from fashionlens.data.records import Manifest
from fashionlens.errors import ConfigError, ModelError
from fashionlens.models.backbones import Backbone, build_backbone
from fashionlens.models.network import InferenceGraph, TaskNetwork
from fashionlens.runtime import forward_batches
from fashionlens.tasks.common import (
    WEIGHTS_FILE,
    frozen_features,
    manifest_of_paths,
    read_model_dir,
    save_model_dir,
    state_fingerprint,
)
from fashionlens.tasks.registry import KIND_KEY, VERSION_KEY, check_kind

WEIGHTS_KEY = "weights_id"
"""``config.json`` key of the backbone weights id (absent in models saved by earlier versions: then unchecked)."""
HEAD_BATCH = 4096
"""Feature rows per head forward pass: heads are small, so large batches cost little memory."""

PredictionsT = TypeVar("PredictionsT")


class TaskModel(ABC, Generic[PredictionsT]):
    """A trained task model: config, head, backbone (fine-tuned or built lazily) and training figures.

    Subclasses set :attr:`kind` and :attr:`config_class`, and implement :attr:`output_names`, :meth:`activate`,
    :meth:`from_outputs` (activated outputs → the task's predictions), :meth:`documents` (their own JSON files) and
    :meth:`from_saved` (rebuild the model from a directory).

    Args:
        config: The task config; it has ``backbone`` (:class:`~fashionlens.models.backbones.BackboneConfig`) and
            ``mode`` (``finetune`` means the backbone was trained with the head).
        head: Pooled features → raw outputs.
        backbone: The fine-tuned backbone (``finetune`` mode), or an already built frozen one; ``None`` builds the
            pretrained one on first use. The model owns it from now on: it is frozen whole, for inference.
        weights_id: Identity of the backbone weights the head expects (``None``: unknown, not checked).
        metrics_summary: Training figures saved with the model.
    """

    kind: ClassVar[str]
    config_class: ClassVar[type]
    required_documents: ClassVar[tuple[str, ...]] = ()
    optional_documents: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: Any, head: nn.Module, backbone: Backbone | None = None, weights_id: str | None = None,
                 metrics_summary: Mapping[str, Any] | None = None):
        self.config = config
        self.head = head.eval()
        if backbone is not None:
            backbone.freeze("all")
        self._backbone = backbone
        self.weights_id = weights_id if weights_id is not None else getattr(backbone, "weights_id", None)
        self.metrics: dict[str, Any] = dict(metrics_summary or {})

    # ------------------------------------------------------------------------------------------------- network
    @property
    def finetuned(self) -> bool:
        """Whether the backbone was trained with the head (and is saved with it)."""
        return bool(self.config.mode == "finetune")

    @property
    def backbone(self) -> Backbone:
        """The image backbone: the fine-tuned one, or the pretrained one built on first use (fully frozen).

        Raises:
            ModelError: The pretrained backbone now loads other weights than the head was trained on.
        """
        if self._backbone is None:
            network = build_backbone(self.config.backbone)
            if self.weights_id is not None and network.weights_id != self.weights_id:
                raise ModelError(f"this {self.kind} was trained on backbone weights {self.weights_id!r} but "
                                 f"{self.config.backbone.name} now loads {network.weights_id!r}")
            self._backbone = network
        return self._backbone

    def network(self) -> TaskNetwork:
        """Backbone + head (images → raw outputs)."""
        return TaskNetwork(self.backbone, self.head).eval()

    def inference_graph(self) -> InferenceGraph:
        """Images → the activated outputs of :attr:`output_names`, in that order (what an ONNX export runs)."""
        return InferenceGraph(self.network(), self.activate, self.output_names).eval()

    @property
    @abstractmethod
    def output_names(self) -> list[str]:
        """Names of the activated outputs, in the order :meth:`inference_graph` returns them."""

    @abstractmethod
    def activate(self, raw_outputs: Any) -> dict[str, torch.Tensor]:
        """The head's raw output → ``{name: probabilities or embeddings}`` (torch, differentiable, exportable)."""

    @abstractmethod
    def from_outputs(self, outputs: Mapping[str, np.ndarray], n_rows: int) -> PredictionsT:
        """The task's predictions from activated outputs ``{name: (n_rows, ...)}``."""

    # ---------------------------------------------------------------------------------------------- prediction
    def head_outputs(self, features: np.ndarray) -> dict[str, np.ndarray]:
        """Activated outputs ``{name: (n, ...)}`` of pooled backbone features ``(n, in_features)``."""
        rows = np.arange(len(features))
        inputs = torch.as_tensor(np.asarray(features, dtype=np.float32))
        batches = ((inputs[i:i + HEAD_BATCH], rows[i:i + HEAD_BATCH]) for i in range(0, len(rows), HEAD_BATCH))
        self.head.eval()
        outputs, _ = forward_batches(lambda x: self.activate(self.head(x)), batches, len(rows))
        return outputs

    def predict_features(self, features: np.ndarray) -> PredictionsT:
        """Predictions from pooled backbone features."""
        return self.from_outputs(self.head_outputs(features), len(features))

    def predict(self, manifest: Manifest, device: str | None = None, show_progress: bool = True,
                skip_bad_images: bool = False, runtime: str | None = None) -> PredictionsT:
        """Predictions for every row of ``manifest`` (features come through the shared cache).

        Args:
            manifest: The images.
            device: Where the backbone runs (``None``: automatic).
            show_progress: Draw a progress bar.
            skip_bad_images: Give unreadable images NaN rows instead of raising a :class:`DataError`.
            runtime: Where the backbone runs (``None``: the config's ``backbone.runtime``, ``auto`` by default).
        """
        features = frozen_features(manifest, self.config.backbone, backbone=self.backbone, device=device,
                                   show_progress=show_progress, skip_bad_images=skip_bad_images, runtime=runtime)
        return self.predict_features(features)

    def predict_paths(self, paths: Sequence[str | Path], show_progress: bool = False,
                      runtime: str | None = None) -> PredictionsT:
        """Predictions for image files."""
        return self.predict(manifest_of_paths(paths), show_progress=show_progress, runtime=runtime)

    # ---------------------------------------------------------------------------------------------- save / load
    @abstractmethod
    def documents(self) -> dict[str, Any]:
        """The task's own JSON documents (``{name: content}``, written as ``<name>.json``)."""

    def save(self, path: str | Path) -> Path:
        """Write the model directory atomically: the weights, ``config.json`` (with the kind, the fashionlens version
        and the weights id), ``metrics.json`` and the task's documents."""
        state: dict[str, Any] = {"head": self.head.state_dict()}
        if self.finetuned:
            state["backbone"] = self.backbone.state_dict()
        weights_id = self._backbone.weights_id if self._backbone is not None else self.weights_id
        config = {KIND_KEY: self.kind, VERSION_KEY: __version__, WEIGHTS_KEY: weights_id, **to_dict(self.config)}
        documents = {"config": config, "metrics": self.metrics, **self.documents()}
        return save_model_dir(path, state, documents)

    @classmethod
    def load(cls, path: str | Path) -> Self:
        """Load a model directory written by :meth:`save` (or by an earlier version of it).

        Raises:
            ModelError: Missing, unreadable or inconsistent files, or a directory of another kind of model.
        """
        check_kind(path, cls.kind)  # first: another kind's directory is named as such, not by a missing file
        state, docs = read_model_dir(path, ["config", *cls.required_documents],
                                     optional_json=["metrics", *cls.optional_documents])
        saved = dict(docs["config"])
        saved.pop(KIND_KEY, None)  # models of earlier versions record no kind, nor version
        saved.pop(VERSION_KEY, None)
        weights_id = saved.pop(WEIGHTS_KEY, None)
        try:
            config: Any = from_dict(cls.config_class, saved, where=f"{path}/config.json")
        except ConfigError as error:
            raise ModelError(str(error)) from error
        backbone = None
        if config.mode == "finetune":
            if "backbone" not in state:
                raise ModelError(f"{path}/{WEIGHTS_FILE} holds no backbone weights, but the model was fine-tuned")
            backbone = build_backbone(replace(config.backbone, pretrained=False, weights=None))
            try:
                backbone.load_state_dict(state["backbone"])
            except RuntimeError as error:
                raise ModelError(f"{path}/{WEIGHTS_FILE} does not match backbone {config.backbone.name}: "
                                 f"{str(error).splitlines()[0]}") from error
            backbone.weights_id = state_fingerprint(backbone)
            weights_id = backbone.weights_id
        return cls.from_saved(Path(path), config, state, docs, backbone, weights_id)

    @classmethod
    @abstractmethod
    def from_saved(cls, path: Path, config: Any, state: Mapping[str, Any], documents: Mapping[str, Any],
                   backbone: Backbone | None, weights_id: str | None) -> Self:
        """The model of a saved directory, from its parsed config, weights and documents (the backbone
        already restored when fine-tuned)."""


def load_head(head: nn.Module, state: Mapping[str, Any], path: Path, against: str) -> nn.Module:
    """Load ``state["head"]`` into ``head``; a one-line ModelError naming the weights file when it does not fit."""
    try:
        head.load_state_dict(state["head"])
    except (RuntimeError, KeyError) as error:
        raise ModelError(f"{path}/{WEIGHTS_FILE} does not match {against}: {str(error).splitlines()[0]}") from error
    return head
