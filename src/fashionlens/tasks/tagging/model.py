"""A trained tagger (:class:`Tagger`): its heads, its predictions and its threshold sets."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np
import torch
from torch import nn

from fashionlens.data.records import Manifest
from fashionlens.errors import ModelError
from fashionlens.models.backbones import Backbone
from fashionlens.models.heads import TaggingHead
from fashionlens.tasks.base import TaskModel, load_head
from fashionlens.tasks.common.model_dir import WEIGHTS_FILE, head_in_features
from fashionlens.tasks.labels import LabelSpace
from fashionlens.tasks.registry import register_model
from fashionlens.tasks.tagging.config import DECISION_BETA, TaggingConfig
from fashionlens.tasks.tagging.thresholds import apply_thresholds


@dataclass
class Predictions:
    """Probabilities of a tagger on some rows: tags ``(n, L)`` and, per head, ``(n, classes)``."""

    tags: np.ndarray
    heads: dict[str, np.ndarray] = field(default_factory=dict)

    def subset(self, rows: np.ndarray) -> Predictions:
        """The predictions of ``rows`` (indices or a boolean mask)."""
        return Predictions(self.tags[rows], {head: probs[rows] for head, probs in self.heads.items()})


class PerLabelHeads(nn.Module):
    """One independent :class:`TaggingHead` per tag and per multi-class head (the one-model-per-label mode)."""

    def __init__(self, in_features: int, labels: LabelSpace, hidden: int, dropout: float):
        super().__init__()
        self.tag_models = nn.ModuleList(TaggingHead(in_features, 1, None, hidden, dropout) for _ in labels.tags)
        self.head_models = nn.ModuleDict({h: TaggingHead(in_features, 0, {h: len(c)}, hidden, dropout)
                                          for h, c in labels.heads.items()})

    def forward(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        """Concatenated tag logits and each head's logits."""
        out: dict[str, torch.Tensor] = {}
        if len(self.tag_models):
            out["tags"] = torch.cat([m(features)["tags"] for m in self.tag_models], dim=1)
        for name, model in self.head_models.items():
            out[name] = model(features)[name]
        return out


class EpochSelectedHead(nn.Module):
    """Head snapshots of one training run, each tag read from the snapshot of the epoch where it scored best.

    The JD paper's per-label models, within one run: ``snapshots[0]`` is the epoch the monitored metric selected (it
    also gives every multi-class head), and tag ``j`` comes from ``snapshots[choice[j]]``.
    """

    def __init__(self, snapshots: Sequence[nn.Module], choice: Sequence[int]):
        super().__init__()
        self.snapshots = nn.ModuleList(snapshots)
        self.register_buffer("choice", torch.as_tensor(list(choice), dtype=torch.long))

    def forward(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each tag's logit from its chosen snapshot; multi-class heads from the first."""
        outputs = [snapshot(features) for snapshot in self.snapshots]
        out = dict(outputs[0])
        if "tags" in out:
            stacked = torch.stack([o["tags"] for o in outputs])  # (snapshots, n, L)
            columns = torch.arange(stacked.shape[2], device=stacked.device)
            choice: torch.Tensor = self.choice  # type: ignore[assignment]
            out["tags"] = stacked[choice.to(stacked.device), :, columns].T
        return out


def build_head(config: TaggingConfig, labels: LabelSpace, in_features: int, snapshots: int = 1) -> nn.Module:
    if config.mode == "per_label":
        return PerLabelHeads(in_features, labels, config.hidden, config.dropout)
    if config.select_epoch == "per_label":
        return EpochSelectedHead([joint_head(config, labels, in_features) for _ in range(snapshots)],
                                 [0] * len(labels.tags))
    return joint_head(config, labels, in_features)


def joint_head(config: TaggingConfig, labels: LabelSpace, in_features: int) -> TaggingHead:
    """One joint head (what a training run trains; :class:`EpochSelectedHead` holds several)."""
    return TaggingHead(in_features, len(labels.tags), {h: len(c) for h, c in labels.heads.items()}, config.hidden,
                       config.dropout)


def tagging_activation(raw_outputs: Mapping[str, torch.Tensor], heads: Sequence[str]) -> dict[str, torch.Tensor]:
    """Tagging logits → probabilities: ``tags`` through a sigmoid, each head's logits through a softmax as
    ``class:<head>``."""
    out: dict[str, torch.Tensor] = {}
    if "tags" in raw_outputs:
        out["tags"] = torch.sigmoid(raw_outputs["tags"].float())
    for head in heads:
        out[f"class:{head}"] = torch.softmax(raw_outputs[head].float(), dim=1)
    return out


def _as_predictions(outputs: Mapping[str, np.ndarray], labels: LabelSpace, n_rows: int) -> Predictions:
    """:class:`Predictions` of activated outputs (see :func:`tagging_activation`)."""
    tags = outputs.get("tags", np.zeros((n_rows, len(labels.tags)), dtype=np.float32))
    return Predictions(tags=np.asarray(tags, dtype=np.float32),
                       heads={head: np.asarray(outputs[f"class:{head}"], dtype=np.float32) for head in labels.heads})


def logits_to_predictions(logits: Mapping[str, np.ndarray], labels: LabelSpace, n_rows: int) -> Predictions:
    """Sigmoid for tags, softmax for heads (:func:`tagging_activation` on NumPy logits)."""
    probabilities = tagging_activation({name: torch.as_tensor(value) for name, value in logits.items()},
                                       list(labels.heads))
    return _as_predictions({name: value.numpy() for name, value in probabilities.items()}, labels, n_rows)


class TagPredictor(Protocol):
    """Anything that predicts tag probabilities for a manifest: a :class:`Tagger` or a :class:`TaggerEnsemble`."""

    labels: LabelSpace
    threshold_sets: dict[float, np.ndarray]

    @property
    def thresholds(self) -> np.ndarray: ...

    @property
    def tag_names(self) -> list[str]: ...

    def thresholds_for(self, beta: float | None = None) -> np.ndarray: ...

    def predict(self, manifest: Manifest, device: str | None = None, show_progress: bool = True,
                skip_bad_images: bool = False, runtime: str | None = None) -> Predictions: ...

    def decide(self, predictions: Predictions, beta: float | None = None) -> np.ndarray: ...


@register_model
class Tagger(TaskModel[Predictions]):
    """A trained tagger: label space, threshold sets, and the network from images to probabilities.

    Load one with :meth:`load` (or :func:`~fashionlens.tasks.registry.load_model`); predict with :meth:`predict` (a
    manifest), :meth:`predict_paths` (image files) or :meth:`predict_features`; turn probabilities into tags with
    :meth:`decide`, which uses the F1 threshold set unless told another β.

    Args:
        config: The training config (``config.beta`` names the paper-evaluation set).
        labels: What the model predicts.
        head: The tagging head.
        thresholds: The ``config.beta`` threshold set, ``(L,)``.
        backbone: The fine-tuned backbone (``None``: built from ``config.backbone`` when needed).
        metrics_summary: Training figures saved with the model.
        threshold_sets: Further sets by β (e.g. ``{1.0: ...}``).
        weights_id: Identity of the backbone weights the head expects (``None``: the backbone's, or unchecked).
    """

    kind: ClassVar[str] = "tagger"
    config_class: ClassVar[type] = TaggingConfig
    required_documents: ClassVar[tuple[str, ...]] = ("labels", "thresholds")
    optional_documents: ClassVar[tuple[str, ...]] = ("threshold_sets",)
    config: TaggingConfig

    def __init__(self, config: TaggingConfig, labels: LabelSpace, head: nn.Module, thresholds: np.ndarray,
                 backbone: Backbone | None = None, metrics_summary: dict[str, Any] | None = None,
                 threshold_sets: Mapping[float, np.ndarray] | None = None, weights_id: str | None = None):
        super().__init__(config, head, backbone, weights_id, metrics_summary)
        self.labels = labels
        self.threshold_sets: dict[float, np.ndarray] = {}
        for beta, values in {**(threshold_sets or {}), config.beta: thresholds}.items():
            array = np.asarray(values, dtype=np.float32)
            if array.shape != (len(labels.tags),):
                raise ModelError(f"tagger has {array.size} F{beta:g} thresholds for {len(labels.tags)} labels")
            self.threshold_sets[float(beta)] = array

    @property
    def decision_beta(self) -> float:
        """β of the set :meth:`decide` uses by default: F1 when the model has it (older models: ``config.beta``)."""
        return DECISION_BETA if DECISION_BETA in self.threshold_sets else self.config.beta

    @property
    def thresholds(self) -> np.ndarray:
        """The default decision thresholds (the :attr:`decision_beta` set)."""
        return self.threshold_sets[self.decision_beta]

    def thresholds_for(self, beta: float | None = None) -> np.ndarray:
        """The threshold set tuned for F-beta (``None``: the default decision set).

        Raises:
            ModelError: The model has no set for ``beta``.
        """
        return threshold_set(self.threshold_sets, beta, self.thresholds, "tagger")

    @property
    def tag_names(self) -> list[str]:
        """Names that say what a positive means (``positive_names`` of the config, e.g. ``gender=female``)."""
        return [self.config.positive_names.get(tag, tag) for tag in self.labels.tags]

    @property
    def output_names(self) -> list[str]:
        """``tags`` (when the model has tags), then ``class:<head>`` per multi-class head."""
        return (["tags"] if self.labels.tags else []) + [f"class:{head}" for head in self.labels.heads]

    def activate(self, raw_outputs: Any) -> dict[str, torch.Tensor]:
        """Tag probabilities (sigmoid) and each head's class probabilities (softmax)."""
        return tagging_activation(raw_outputs, list(self.labels.heads))

    def from_outputs(self, outputs: Mapping[str, np.ndarray], n_rows: int) -> Predictions:
        """:class:`Predictions` of activated outputs."""
        return _as_predictions(outputs, self.labels, n_rows)

    def decide(self, predictions: Predictions, beta: float | None = None) -> np.ndarray:
        """Boolean tag decisions with the threshold set tuned for F-beta (default: :attr:`decision_beta`)."""
        return apply_thresholds(predictions.tags, self.thresholds_for(beta))

    def documents(self) -> dict[str, Any]:
        """``labels.json``; ``thresholds.json``, the ``config.beta`` set as ``{label: threshold}``; and
        ``threshold_sets.json``, every set as ``{"<beta>": {label: threshold}}``."""
        sets = {f"{beta:g}": dict(zip(self.labels.tags, map(float, values), strict=True))
                for beta, values in sorted(self.threshold_sets.items())}
        return {"labels": self.labels.to_json(), "thresholds": sets[f"{self.config.beta:g}"], "threshold_sets": sets}

    @classmethod
    def from_saved(cls, path: Path, config: Any, state: Mapping[str, Any], documents: Mapping[str, Any],
                   backbone: Backbone | None, weights_id: str | None) -> Tagger:
        """The tagger of a saved directory (see :meth:`TaskModel.load`)."""
        labels = LabelSpace.from_json(documents["labels"])
        thresholds = threshold_array(documents["thresholds"], labels, f"{path}/thresholds.json")
        sets_doc = documents.get("threshold_sets") or {}
        if not isinstance(sets_doc, dict):
            raise ModelError(f"{path}/threshold_sets.json must map beta to {{label: threshold}}")
        try:
            sets = {float(beta): threshold_array(doc, labels, f"{path}/threshold_sets.json[{beta}]")
                    for beta, doc in sets_doc.items()}
        except ValueError as error:
            raise ModelError(f"{path}/threshold_sets.json has a key that is not a beta: {error}") from error
        head_state = state.get("head", {})
        if not any(key.endswith("hidden.0.weight") for key in head_state):
            raise ModelError(f"{path}/{WEIGHTS_FILE} holds no tagging head weights")
        in_features = backbone.num_features if backbone is not None else head_in_features(head_state, "hidden.0.weight")
        snapshots = len({k.split(".")[1] for k in head_state if k.startswith("snapshots.")})
        shape = config if snapshots else replace(config, select_epoch="best")  # no tags: no snapshots were taken
        head = load_head(build_head(shape, labels, in_features, snapshots), state, path, "labels.json/config.json")
        return cls(config, labels, head, thresholds, backbone=backbone, metrics_summary=documents.get("metrics"),
                   threshold_sets=sets, weights_id=weights_id)


def threshold_set(sets: Mapping[float, np.ndarray], beta: float | None, default: np.ndarray,
                  owner: str) -> np.ndarray:
    """The set tuned for F-``beta`` among ``sets`` (``None``: ``default``); a one-line ModelError when absent."""
    if beta is None:
        return default
    if float(beta) not in sets:
        raise ModelError(f"this {owner} has threshold sets for beta {sorted(sets)}, not {beta:g}")
    return sets[float(beta)]


def threshold_array(doc: Any, labels: LabelSpace, where: str) -> np.ndarray:
    """``{label: threshold}`` as an array in label order; a one-line ModelError when it does not fit."""
    if not isinstance(doc, dict):
        raise ModelError(f"{where} must map each label to its threshold")
    missing = [t for t in labels.tags if t not in doc]
    if missing or len(doc) != len(labels.tags):
        raise ModelError(f"{where} has {len(doc)} thresholds for {len(labels.tags)} labels (missing: {missing[:5]})")
    try:
        values = np.array([float(doc[t]) for t in labels.tags], dtype=np.float32)
    except (TypeError, ValueError) as error:
        raise ModelError(f"{where} holds a threshold that is not a number: {error}") from error
    if not np.isfinite(values).all():
        raise ModelError(f"{where} holds a threshold that is not finite")
    return values


