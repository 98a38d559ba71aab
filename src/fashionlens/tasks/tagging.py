"""Multi-label style / attribute tagging (JD AI Fashion style, iMaterialist, street-fashion attributes).

A pretrained CNN's pooled features feed :class:`~fashionlens.models.heads.TaggingHead` (FC(1024) → one sigmoid per
label, plus softmax heads for multi-class attributes). Training modes:

* ``features`` -- the head on cached frozen features (fast, CPU-friendly);
* ``finetune`` -- backbone and head end to end on images, first stages frozen;
* ``per_label`` -- one small model per label, each with its own early stopping (and optionally its own LR/epochs).

``select_epoch: per_label`` gets the per-label models' gain within one joint run (``features`` or ``finetune``): each
tag reads the head snapshot of the epoch where its val F-beta peaked (:class:`EpochSelectedHead`); when fine-tuning,
the snapshots are scored on the val features of the shipped (best-epoch) backbone.

Afterwards each label's decision threshold is moved to the value that maximises its F-beta on held-out predictions
(threshold moving; see :class:`ThresholdConfig` for the methods: out-of-fold, validation, plateau, fixed 0.5). One
threshold set is saved per β (F1 for the decisions a person reads, the config's β -- F2 for the JD paper -- for the
paper's evaluation), and :meth:`Tagger.decide` picks one.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from rich.console import Console
from torch import nn
from torch.utils.data import DataLoader

from fashionlens import metrics
from fashionlens.config import from_dict, to_dict
from fashionlens.data.records import Manifest
from fashionlens.data.transforms import eval_transform, train_transform
from fashionlens.engine import TrainConfig, Trainer, TrainResult
from fashionlens.errors import ConfigError, DataError, ModelError
from fashionlens.losses import DEFAULT_MAX_WEIGHT, importance_vector, label_weights, masked_bce, masked_cross_entropy
from fashionlens.models.backbones import Backbone, BackboneConfig, build_backbone
from fashionlens.models.heads import TaggingHead
from fashionlens.models.network import TaskNetwork
from fashionlens.runtime import default_workers, forward_batches, resolve_device, seed_everything
from fashionlens.tasks.base import TaskModel, load_head
from fashionlens.tasks.common import (
    WEIGHTS_FILE,
    fold_legacy_freeze,
    frozen_features,
    image_row_loader,
    state_fingerprint,
    tensor_loader,
)
from fashionlens.tasks.labels import LabelSpace
from fashionlens.tasks.registry import register_model
from fashionlens.thresholds import AVERAGES, apply_thresholds, select_thresholds

MODES = ("features", "finetune", "per_label")
LOSSES = ("bce", "weighted_bce")
THRESHOLD_METHODS = ("auto", "oof", "val", "plateau", "fixed")
EPOCH_SELECTIONS = ("best", "per_label")
DECISION_BETA = 1.0
"""β of the threshold set :meth:`Tagger.decide` uses by default: F1, a balance a person reading the tags expects."""


@dataclass
class ThresholdConfig:
    """How per-label decision thresholds are chosen (the ``thresholds:`` section of a tagging config).

    Attributes:
        method: ``oof`` -- fit ``folds`` heads on folds of train+val and pick each threshold on the pooled
            out-of-fold predictions, then refit the shipped head on all of train+val (frozen-feature ``features``
            mode only); ``val`` -- the exact F-beta optimum on the validation split; ``plateau`` -- the centre of the
            validation F-beta plateau within one standard error; ``fixed`` -- 0.5 for every label; ``auto`` --
            ``oof`` in ``features`` mode, ``plateau`` otherwise.
        folds: Folds of the ``oof`` method.
        average: ``macro`` maximises each label's own F-beta; ``micro`` the F-beta pooled over labels
            (iMaterialist's leaderboard metric).
        shrink: Pull each threshold this fraction of the way towards 0.5 (0 = not at all).
    """

    method: str = "auto"
    folds: int = 5
    average: str = "macro"
    shrink: float = 0.0

    def __post_init__(self) -> None:
        if self.method not in THRESHOLD_METHODS:
            raise ConfigError(f"unknown thresholds.method '{self.method}'; use one of {THRESHOLD_METHODS}")
        if self.folds < 2:
            raise ConfigError(f"thresholds.folds must be >= 2, got {self.folds}")
        if self.average not in AVERAGES:
            raise ConfigError(f"unknown thresholds.average '{self.average}'; use one of {AVERAGES}")
        if not 0.0 <= self.shrink <= 1.0:
            raise ConfigError(f"thresholds.shrink must lie in [0, 1], got {self.shrink}")

    def resolved(self, mode: str) -> str:
        """The method actually used in training ``mode`` (``auto`` resolved)."""
        if self.method == "auto":
            return "oof" if mode == "features" else "plateau"
        return self.method


def _default_tagging_train() -> TrainConfig:
    return TrainConfig(epochs=40, lr=1e-3, monitor="val_map", mode="max", early_stop_patience=6, batch_size=128)


@dataclass
class TaggingConfig:
    """How a tagger is built and trained (YAML-loadable; shipped configs in ``fashionlens/configs``).

    ``backbone.freeze`` says what stays frozen in ``finetune`` mode; the other modes train on frozen features.
    """

    migrate_legacy = staticmethod(fold_legacy_freeze)

    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    tags: list[str] | None = None
    heads: list[str] | None = None
    expand_heads: list[str] = field(default_factory=list)
    min_class_count: int = 2
    loss: str = "weighted_bce"
    positive_weight: float = 1.0
    max_weight: float | None = DEFAULT_MAX_WEIGHT
    label_importance: dict[str, float] = field(default_factory=dict)
    hidden: int = 1024
    dropout: float = 0.5
    mode: str = "features"
    beta: float = 2.0
    thresholds: ThresholdConfig = field(default_factory=ThresholdConfig)
    positive_names: dict[str, str] = field(default_factory=dict)
    select_epoch: str = "best"
    train: TrainConfig = field(default_factory=_default_tagging_train)
    per_label_train: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"unknown tagging mode '{self.mode}'; use one of {MODES}")
        if self.loss not in LOSSES:
            raise ConfigError(f"unknown tagging loss '{self.loss}'; use one of {LOSSES}")
        if self.beta <= 0:
            raise ConfigError(f"beta must be > 0, got {self.beta}")
        if not self.positive_weight > 0:
            raise ConfigError(f"positive_weight must be > 0, got {self.positive_weight}")
        if self.max_weight is not None and not self.max_weight > 0:
            raise ConfigError(f"max_weight must be > 0 (or null for no cap), got {self.max_weight}")
        bad = {k: v for k, v in self.label_importance.items() if not (isinstance(v, int | float) and v >= 0)}
        if bad:
            raise ConfigError(f"label_importance values must be non-negative numbers, got {bad}")
        if self.select_epoch not in EPOCH_SELECTIONS:
            raise ConfigError(f"unknown select_epoch '{self.select_epoch}'; use one of {EPOCH_SELECTIONS}")
        if self.select_epoch == "per_label" and (self.mode == "per_label"
                                                 or self.thresholds.resolved(self.mode) == "oof"):
            raise ConfigError("select_epoch 'per_label' keeps head snapshots of one joint run: it needs mode "
                              "'features' or 'finetune' and a thresholds.method chosen on val (val, plateau or fixed), "
                              "not oof")
        if self.thresholds.resolved(self.mode) == "oof" and self.mode != "features":
            raise ConfigError(f"thresholds.method 'oof' refits the head on {self.thresholds.folds} folds and is "
                              f"offered for mode 'features' only; use val, plateau or fixed in mode '{self.mode}'")


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


def _build_head(config: TaggingConfig, labels: LabelSpace, in_features: int, snapshots: int = 1) -> nn.Module:
    if config.mode == "per_label":
        return PerLabelHeads(in_features, labels, config.hidden, config.dropout)
    if config.select_epoch == "per_label":
        return EpochSelectedHead([_joint_head(config, labels, in_features) for _ in range(snapshots)],
                                 [0] * len(labels.tags))
    return _joint_head(config, labels, in_features)


def _joint_head(config: TaggingConfig, labels: LabelSpace, in_features: int) -> TaggingHead:
    """One joint head (what a training run trains; :class:`EpochSelectedHead` holds several)."""
    return TaggingHead(in_features, len(labels.tags), {h: len(c) for h, c in labels.heads.items()}, config.hidden,
                       config.dropout)


class TaggingObjective:
    """Loss and batched prediction of a tagging model over rows addressed by index.

    Batches are ``(inputs, row_indices)``: inputs are features or images, and targets are looked up by row, so the
    same objective serves cached features and images alike. The tag loss is :func:`masked_bce` with the weights of
    :func:`label_weights` on ``train_rows``: balanced for ``weighted_bce``, ``K`` on positives and 1 on negatives
    for ``bce`` (the street-fashion paper's eq. 1), times each label's ``importance``.
    """

    def __init__(self, labels: LabelSpace, tag_targets: np.ndarray, head_targets: Mapping[str, np.ndarray],
                 loss: str, positive_weight: float, train_rows: np.ndarray,
                 max_weight: float | None = DEFAULT_MAX_WEIGHT, importance: Mapping[str, float] | None = None):
        self.labels = labels
        self.tag_targets = torch.as_tensor(tag_targets)
        self.head_targets = {h: torch.as_tensor(t) for h, t in head_targets.items()}
        self.pos_weight: torch.Tensor | None = None
        self.neg_weight: torch.Tensor | None = None
        if labels.tags:
            factors = importance_vector(labels.tags, importance or {})
            pos, neg = label_weights(tag_targets[train_rows], positive_weight=positive_weight, max_weight=max_weight,
                                     balanced=loss == "weighted_bce", importance=factors)
            self.pos_weight, self.neg_weight = torch.as_tensor(pos), torch.as_tensor(neg)

    @classmethod
    def from_config(cls, config: TaggingConfig, labels: LabelSpace, tag_targets: np.ndarray,
                    head_targets: Mapping[str, np.ndarray], train_rows: np.ndarray) -> TaggingObjective:
        """The objective ``config`` describes, with weights from ``train_rows``."""
        return cls(labels, tag_targets, head_targets, config.loss, config.positive_weight, train_rows,
                   config.max_weight, {k: v for k, v in config.label_importance.items() if k in labels.tags})

    def loss_from_outputs(self, outputs: Mapping[str, torch.Tensor], rows: torch.Tensor) -> torch.Tensor:
        """Sum of the per-label (weighted) BCE and each head's cross-entropy."""
        device = next(iter(outputs.values())).device
        total = torch.zeros((), device=device)
        if "tags" in outputs:
            pos = self.pos_weight.to(device) if self.pos_weight is not None else None
            neg = self.neg_weight.to(device) if self.neg_weight is not None else None
            total = total + masked_bce(outputs["tags"].float(), self.tag_targets[rows].to(device), pos, neg)
        for head in self.labels.heads:
            if head in outputs:
                total = total + masked_cross_entropy(outputs[head].float(), self.head_targets[head][rows].to(device))
        return total

    def loss(self, model: nn.Module, batch: Sequence[torch.Tensor], device: torch.device) -> torch.Tensor:
        """Engine callback: the loss of one ``(inputs, rows)`` batch."""
        inputs, rows = batch[0], batch[1]
        return self.loss_from_outputs(model(inputs.to(device)), rows)


def predict_outputs(model: nn.Module, loader: DataLoader[Any] | Sequence[Any], n_rows: int,
                    device: torch.device) -> tuple[dict[str, np.ndarray], list[int]]:
    """Raw outputs (logits) per output name of ``model`` in eval mode over ``(inputs, rows)`` batches, aligned to
    rows, and the rows seen (:func:`~fashionlens.runtime.forward_batches`)."""
    model.eval()
    return forward_batches(model, loader, n_rows, device)


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


def validation_metrics(predictions: Predictions, tag_targets: np.ndarray, head_targets: Mapping[str, np.ndarray],
                       beta: float) -> dict[str, float]:
    """Threshold-free and 0.5-threshold validation figures used to pick the best epoch."""
    out: dict[str, float] = {}
    if tag_targets.shape[1]:
        has_positive = bool(np.nansum(tag_targets) > 0)
        out["val_map"] = (metrics.mean_average_precision(tag_targets, predictions.tags) if has_positive
                          else float("nan"))
        out[f"val_macro_f{beta:g}@0.5"] = metrics.macro_fbeta(tag_targets, predictions.tags >= 0.5, beta=beta)
    for head, probs in predictions.heads.items():
        target = head_targets[head]
        labelled = target >= 0
        if labelled.any():
            out[f"val_acc_{head}"] = float((probs[labelled].argmax(axis=1) == target[labelled]).mean())
    if "val_map" not in out:
        accuracies = [v for k, v in out.items() if k.startswith("val_acc_")]
        out["val_map"] = float(np.mean(accuracies)) if accuracies else float("nan")
    return out


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
        in_features = backbone.num_features if backbone is not None else _head_in_features(head_state)
        snapshots = len({k.split(".")[1] for k in head_state if k.startswith("snapshots.")})
        shape = config if snapshots else replace(config, select_epoch="best")  # no tags: no snapshots were taken
        head = load_head(_build_head(shape, labels, in_features, snapshots), state, path, "labels.json/config.json")
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


def _head_in_features(head_state: Mapping[str, torch.Tensor]) -> int:
    first = next(k for k in head_state if k.endswith("hidden.0.weight"))
    return int(head_state[first].shape[1])


def tune_thresholds(tag_targets: np.ndarray, tag_probs: np.ndarray, labels: LabelSpace, beta: float,
                    console: Console | None = None, rule: str = "exact", average: str = "macro",
                    shrink: float = 0.0) -> np.ndarray:
    """Per-label thresholds for F-beta on held-out predictions (see
    :func:`~fashionlens.thresholds.select_thresholds`); labels without held-out positives keep 0.5."""
    if not labels.tags:
        return np.zeros(0, dtype=np.float32)
    result = select_thresholds(tag_targets, tag_probs, beta=beta, rule=rule, average=average, shrink=shrink,
                               fallback=0.5)
    if result.no_positive_labels and console is not None:
        names = [labels.tags[i] for i in result.no_positive_labels]
        console.print(f"[yellow]warning: no held-out positives for {names}; their threshold stays 0.5")
    return np.asarray(result.thresholds, dtype=np.float32)


def threshold_betas(config: TaggingConfig) -> list[float]:
    """The β of every threshold set a tagger trained with ``config`` saves: F1 (decisions) and ``config.beta``."""
    return sorted({DECISION_BETA, float(config.beta)})


def threshold_sets_from(config: TaggingConfig, labels: LabelSpace, truth: np.ndarray, probs: np.ndarray,
                        method: str, console: Console | None = None) -> dict[float, np.ndarray]:
    """One threshold set per :func:`threshold_betas` from held-out ``probs`` (validation or out-of-fold).

    ``method`` ``fixed`` gives 0.5 everywhere; ``plateau`` the plateau rule; ``val`` and ``oof`` the exact optimum.
    """
    if method == "fixed":
        return {beta: np.full(len(labels.tags), 0.5, dtype=np.float32) for beta in threshold_betas(config)}
    rule = "plateau" if method == "plateau" else "exact"
    options = config.thresholds
    return {beta: tune_thresholds(truth, probs, labels, beta, console if beta == config.beta else None, rule,
                                  options.average, options.shrink) for beta in threshold_betas(config)}


def fold_assignment(n_rows: int, folds: int, seed: int) -> np.ndarray:
    """A seeded, balanced assignment of ``n_rows`` rows to ``folds`` folds (fold ids 0..folds-1)."""
    if n_rows < folds:
        raise DataError(f"{folds} threshold folds need at least {folds} train+val rows, got {n_rows}")
    return np.random.default_rng(seed).permutation(np.arange(n_rows) % folds)


def train_tagger(manifest: Manifest, config: TaggingConfig, out_dir: str | Path | None = None,
                 console: Console | None = None, show_progress: bool = True,
                 features: np.ndarray | None = None) -> Tagger:
    """Train a tagger on the ``train`` split, select epochs and thresholds, and save it to ``out_dir``.

    Epochs are selected on ``val``. Thresholds follow ``config.thresholds``: with ``oof`` (the default in
    ``features`` mode) ``folds`` heads are trained on folds of train+val for the selected number of epochs, each
    label's thresholds are chosen on their pooled out-of-fold predictions, and the shipped head is refit on all of
    train+val for the same number of epochs; the other methods choose on the ``val`` predictions.

    Args:
        manifest: Rows with ``split`` set (``train`` and ``val`` are required).
        config: Model and training settings.
        out_dir: Model directory to write (``None``: don't save).
        console: Where progress messages go.
        show_progress: Draw progress bars.
        features: Precomputed frozen features aligned with ``manifest`` (skips extraction; features modes only).
    """
    console = console or Console(stderr=True)
    split = manifest.frame["split"].to_numpy()
    train_rows, val_rows = np.flatnonzero(split == "train"), np.flatnonzero(split == "val")
    for name, rows in (("train", train_rows), ("val", val_rows)):
        if len(rows) == 0:
            raise DataError(f"split '{name}' of manifest '{manifest.name}' is empty; split the manifest first "
                            f"(fashionlens data split)")
    labels = LabelSpace.from_manifest(manifest.subset(split == "train"), config.tags, config.heads,
                                      config.expand_heads, config.min_class_count)
    importance_vector(labels.tags, config.label_importance)  # names an unknown label before any training
    tag_targets = labels.tag_targets(manifest)
    head_targets = labels.head_targets(manifest)
    if labels.tags:
        no_pos = [t for t, n in zip(labels.tags, np.nansum(tag_targets[train_rows], axis=0), strict=True) if n == 0]
        if no_pos:
            warnings.warn(f"label(s) {no_pos} have no positives in training; their threshold falls back to 0.5",
                          stacklevel=2)
            console.print(f"[yellow]warning: no training positives for {no_pos}")
    objective = TaggingObjective.from_config(config, labels, tag_targets, head_targets, train_rows)
    run_dir = Path(out_dir).with_name(Path(out_dir).name + ".run") if out_dir else None
    backbone: Backbone | None = None
    if config.mode != "finetune" and features is None:
        backbone = build_backbone(config.backbone)  # kept by the tagger: its weights id is saved with the head
        features = frozen_features(manifest, config.backbone, backbone=backbone, show_progress=show_progress)
    seed_everything(config.train.seed)  # initial weights repeat with the seed (whether or not features were cached)
    best_epoch = config.train.epochs
    if config.mode == "finetune":
        head, backbone = _train_finetune(manifest, config, labels, objective, train_rows, val_rows, run_dir,
                                         console, show_progress)
    elif config.mode == "per_label":
        assert features is not None
        head = _train_per_label(features, config, labels, objective, train_rows, val_rows, run_dir, console,
                                show_progress)
    else:
        assert features is not None
        head, best_epoch = _train_joint(features, config, labels, objective, train_rows, val_rows, run_dir, console,
                                        show_progress)
    tagger = Tagger(config, labels, head, np.full(len(labels.tags), 0.5, dtype=np.float32), backbone=backbone)
    val_predictions = (tagger.predict_features(features[val_rows]) if features is not None
                       else tagger.predict(manifest.subset(split == "val"), show_progress=show_progress))
    summary = validation_metrics(val_predictions, tag_targets[val_rows],
                                 {h: t[val_rows] for h, t in head_targets.items()}, config.beta)
    method = config.thresholds.resolved(config.mode)
    summary_extra: dict[str, Any] = {"threshold_method": method}
    if method == "oof" and labels.tags:
        assert features is not None
        pooled = np.concatenate([train_rows, val_rows])
        console.print(f"thresholds: {config.thresholds.folds}-fold out-of-fold predictions on train+val "
                      f"({len(pooled)} rows, {best_epoch} epochs each)")
        probs = out_of_fold_probs(features, config, labels, tag_targets, head_targets, pooled, best_epoch,
                                   show_progress)
        sets = threshold_sets_from(config, labels, tag_targets[pooled], probs, method, console)
        summary_extra[f"oof_macro_f{config.beta:g}@0.5"] = metrics.macro_fbeta(tag_targets[pooled], probs >= 0.5,
                                                                                 beta=config.beta)
        summary_extra[f"oof_macro_f{config.beta:g}@tuned"] = metrics.macro_fbeta(
            tag_targets[pooled], apply_thresholds(probs, sets[config.beta]), beta=config.beta)
        refit_objective = TaggingObjective.from_config(config, labels, tag_targets, head_targets, pooled)
        console.print(f"refitting the head on train+val ({len(pooled)} rows)")
        seed_everything(config.train.seed)
        head = _train_fixed_epochs(features, config, labels, refit_objective, pooled, best_epoch, show_progress)
        summary_extra["refit_epochs"] = best_epoch
    else:
        sets = threshold_sets_from(config, labels, tag_targets[val_rows], val_predictions.tags, method, console)
    tagger = Tagger(config, labels, head, sets.get(config.beta, np.zeros(0, dtype=np.float32)), backbone=backbone,
                    threshold_sets=sets)
    if labels.tags and method != "oof":
        tuned = metrics.macro_fbeta(tag_targets[val_rows], apply_thresholds(val_predictions.tags,
                                                                            sets[config.beta]), beta=config.beta)
        summary[f"val_macro_f{config.beta:g}@tuned"] = tuned
    tagger.metrics = {**summary, **summary_extra}
    if out_dir:
        tagger.save(out_dir)
        console.print(f"saved tagger to {out_dir}")
    return tagger


def out_of_fold_probs(features: np.ndarray, config: TaggingConfig, labels: LabelSpace, tag_targets: np.ndarray,
                       head_targets: Mapping[str, np.ndarray], pooled: np.ndarray, epochs: int,
                       show_progress: bool) -> np.ndarray:
    """``(len(pooled), L)`` tag probabilities of each pooled row from a head trained without its fold.

    Fold ``k`` of :func:`fold_assignment` (seeded by ``config.train.seed``) is predicted by a head trained for
    ``epochs`` epochs on the other folds, with loss weights from those rows and seed ``config.train.seed + 1 + k``.
    """
    fold = fold_assignment(len(pooled), config.thresholds.folds, config.train.seed)
    probs = np.zeros((len(pooled), len(labels.tags)), dtype=np.float32)
    for k in range(config.thresholds.folds):
        fit_rows, held_out = pooled[fold != k], fold == k
        objective = TaggingObjective.from_config(config, labels, tag_targets, head_targets, fit_rows)
        seed_everything(config.train.seed + 1 + k)
        head = _train_fixed_epochs(features, config, labels, objective, fit_rows, epochs, show_progress)
        loader = tensor_loader([features[pooled[held_out]].astype(np.float32), np.arange(held_out.sum())],
                               batch_size=1024, shuffle=False)
        logits, _ = predict_outputs(head, loader, int(held_out.sum()), torch.device("cpu"))
        probs[held_out] = logits_to_predictions(logits, labels, int(held_out.sum())).tags
    return probs


def _train_fixed_epochs(features: np.ndarray, config: TaggingConfig, labels: LabelSpace,
                        objective: TaggingObjective, rows: np.ndarray, epochs: int, show_progress: bool) -> nn.Module:
    """A joint head trained on ``rows`` for exactly ``epochs`` epochs (no validation rows to select on)."""
    train_config = replace(config.train, epochs=epochs, monitor="train_loss", mode="min", early_stop_patience=None)
    head = _build_head(config, labels, features.shape[1])
    loader = tensor_loader([features[rows], torch.as_tensor(rows)], train_config.batch_size, shuffle=True,
                           seed=train_config.seed)
    return _fit(head, objective.loss, None, loader, train_config, None, Console(quiet=True), show_progress)[0]


def _fit(model: nn.Module, objective_loss: Callable[..., torch.Tensor],
         evaluate: Callable[[nn.Module], dict[str, float]] | None, train_loader: Any, train_config: TrainConfig,
         run_dir: Path | None, console: Console, show_progress: bool) -> tuple[nn.Module, TrainResult]:
    trainer = Trainer(model, train_config, objective_loss, evaluate, run_dir=run_dir, console=console,
                      show_progress=show_progress)
    result = trainer.fit(train_loader)
    return trainer.model.cpu().eval(), result


def _evaluator(objective: TaggingObjective, loader: Any, n_rows: int, val_rows: np.ndarray, labels: LabelSpace,
               beta: float, device: torch.device) -> Callable[[nn.Module], dict[str, float]]:
    """Engine callback: validation loss and metrics of a model over the ``(inputs, rows)`` batches of ``loader``."""

    def evaluate(model: nn.Module) -> dict[str, float]:
        logits, _ = predict_outputs(model, loader, n_rows, device)
        with torch.no_grad():
            outputs = {k: torch.as_tensor(v[val_rows]) for k, v in logits.items()}
            val_loss = float(objective.loss_from_outputs(outputs, torch.as_tensor(val_rows)))
        predictions = logits_to_predictions({k: v[val_rows] for k, v in logits.items()}, labels, len(val_rows))
        head_targets = {h: t[val_rows].numpy() for h, t in objective.head_targets.items()}
        return {"val_loss": val_loss, **validation_metrics(predictions, objective.tag_targets[val_rows].numpy(),
                                                           head_targets, beta)}

    return evaluate


def _feature_evaluator(objective: TaggingObjective, features: np.ndarray, val_rows: np.ndarray, labels: LabelSpace,
                       beta: float, device: torch.device) -> Callable[[nn.Module], dict[str, float]]:
    loader = tensor_loader([features[val_rows], torch.as_tensor(val_rows)], batch_size=2048, shuffle=False)
    return _evaluator(objective, loader, len(features), val_rows, labels, beta, device)


def _train_joint(features: np.ndarray, config: TaggingConfig, labels: LabelSpace, objective: TaggingObjective,
                 train_rows: np.ndarray, val_rows: np.ndarray, run_dir: Path | None, console: Console,
                 show_progress: bool) -> tuple[nn.Module, int]:
    """The joint head with early stopping on ``val``, and its best epoch (1-based)."""
    device = resolve_device(config.train.device)
    head = _joint_head(config, labels, features.shape[1])  # per-label snapshots are assembled after training
    loader = tensor_loader([features[train_rows], torch.as_tensor(train_rows)], config.train.batch_size,
                           shuffle=True, seed=config.train.seed)
    evaluate = _feature_evaluator(objective, features, val_rows, labels, config.beta, device)
    tracker = _PerLabelEpochs(objective.tag_targets[val_rows].numpy(), config.beta, evaluate).bind(
        features[val_rows]) if config.select_epoch == "per_label" and labels.tags else None
    model, result = _fit(head, objective.loss, tracker or evaluate, loader, config.train, run_dir, console,
                         show_progress)
    if tracker is not None:
        model = tracker.selected(model, result, config, labels, features.shape[1], console)
    return model, max(result.best_epoch, 1)


class _PerLabelEpochs:
    """Engine evaluate callback that keeps the head state of every epoch and, per tag, the epoch where its val
    F-beta (at its best threshold) peaked; :meth:`selected` assembles those heads into an :class:`EpochSelectedHead`.

    On frozen features (:meth:`bind` before training) each epoch is scored as it ends, and only the states some tag
    still peaks at are kept. When fine-tuning, the backbone moves between epochs, so every head state is kept and
    scored after training on the val features of the shipped backbone (the monitor's best epoch, given to
    :meth:`selected`): the features inference will see.
    """

    def __init__(self, val_truth: np.ndarray, beta: float, evaluate: Callable[[nn.Module], dict[str, float]]):
        self.val_truth, self.beta, self.evaluate = val_truth, beta, evaluate
        self.best = np.full(val_truth.shape[1], -np.inf)
        self.best_epoch = np.zeros(val_truth.shape[1], dtype=np.int64)
        self.states: dict[int, dict[str, torch.Tensor]] = {}
        self.scores: dict[int, np.ndarray] = {}
        self.epoch = 0
        self.scored_through = 0  # epochs up to this one are scored
        self._rows = np.arange(len(val_truth))
        self._loader: DataLoader[Any] | None = None

    def __call__(self, model: nn.Module) -> dict[str, float]:
        self.epoch += 1
        out = self.evaluate(model)
        head = model.head if isinstance(model, TaskNetwork) else model
        self.states[self.epoch] = {k: v.detach().cpu().clone() for k, v in head.state_dict().items()}
        if self._loader is not None:
            self._score(head, self.epoch)
        return out

    def _score(self, head: nn.Module, epoch: int) -> None:
        """Score ``head`` (of ``epoch``) on the bound val features; drop the states no tag peaks at any more."""
        assert self._loader is not None
        logits, _ = predict_outputs(head, self._loader, len(self._rows), next(head.parameters()).device)
        probs = logits_to_predictions(logits, LabelSpace(tags=[""] * self.val_truth.shape[1]), len(self._rows)).tags
        score = np.nan_to_num(select_thresholds(self.val_truth, probs, beta=self.beta).best_fbeta, nan=-1.0)
        self.scores[epoch] = score
        improved = score > self.best + 1e-12
        self.best[improved], self.best_epoch[improved] = score[improved], epoch
        self.scored_through = max(self.scored_through, epoch)
        peaks = set(self.best_epoch.tolist())
        self.states = {e: s for e, s in self.states.items() if e in peaks or e > self.scored_through}

    def bind(self, features: np.ndarray) -> _PerLabelEpochs:
        """Attach the val features the heads are scored on (rows aligned with ``val_truth``)."""
        self._loader = tensor_loader([features.astype(np.float32), self._rows], batch_size=2048, shuffle=False)
        return self

    def selected(self, best_model: nn.Module, result: TrainResult, config: TaggingConfig, labels: LabelSpace,
                 in_features: int, console: Console, val_features: np.ndarray | None = None) -> EpochSelectedHead:
        """Snapshot 0: the monitor's best epoch (``best_model``); then one snapshot per other epoch some tag peaked
        at (strictly above its score at the monitor's epoch). Epochs not scored yet are scored first, on
        ``val_features`` when given (else the bound ones)."""
        if val_features is not None:
            self.bind(val_features)
        for epoch in sorted(e for e in self.states if e > self.scored_through):
            snapshot = _joint_head(config, labels, in_features)
            snapshot.load_state_dict(self.states[epoch])
            self._score(snapshot, epoch)
        offset = result.resumed_from or 0  # this process counts epochs from its start
        best_epoch = result.best_epoch - offset
        if best_epoch < 1:  # the best epoch came before a resume: the shipped head is a candidate too
            self._score(best_model, best_epoch)
        if best_epoch in self.scores:  # a tie goes to the monitor's epoch (snapshot 0)
            self.best_epoch[self.scores[best_epoch] >= self.best - 1e-12] = best_epoch
        others = sorted(set(self.best_epoch.tolist()) - {best_epoch})
        snapshots: list[nn.Module] = [best_model]
        for epoch in others:
            snapshot = _joint_head(config, labels, in_features)
            snapshot.load_state_dict(self.states[epoch])
            snapshots.append(snapshot)
        index = {epoch: i + 1 for i, epoch in enumerate(others)}
        console.print(f"per-label epochs: {dict(zip(labels.tags, (self.best_epoch + offset).tolist(), strict=True))}")
        return EpochSelectedHead(snapshots, [index.get(int(e), 0) for e in self.best_epoch]).eval()


def _train_per_label(features: np.ndarray, config: TaggingConfig, labels: LabelSpace, objective: TaggingObjective,
                     train_rows: np.ndarray, val_rows: np.ndarray, run_dir: Path | None, console: Console,
                     show_progress: bool) -> nn.Module:
    """Train one model per tag (and per head), each on the rows labelled for it, with its own early stopping."""
    model = PerLabelHeads(features.shape[1], labels, config.hidden, config.dropout)
    device = resolve_device(config.train.device)
    unknown = sorted(set(config.per_label_train) - set(labels.tags) - set(labels.heads))
    if unknown:
        raise ConfigError(f"per_label_train names unknown label(s) {unknown}")
    jobs: list[tuple[str, nn.Module, LabelSpace, np.ndarray]] = []
    for j, tag in enumerate(labels.tags):
        jobs.append((tag, model.tag_models[j], LabelSpace(tags=[tag]), objective.tag_targets[:, j:j + 1].numpy()))
    for head in labels.heads:
        jobs.append((head, model.head_models[head], LabelSpace(tags=[], heads={head: labels.heads[head]}),
                     np.zeros((len(features), 0), dtype=np.float32)))
    for index, (name, submodel, space, sub_tags) in enumerate(jobs):
        head_targets = {h: objective.head_targets[h].numpy() for h in space.heads}
        labelled = ~np.isnan(sub_tags).all(axis=1) if space.tags else head_targets[name] >= 0
        sub_train, sub_val = train_rows[labelled[train_rows]], val_rows[labelled[val_rows]]
        if len(sub_train) == 0 or len(sub_val) == 0:
            console.print(f"[yellow]warning: label '{name}' has no labelled train/val rows; left untrained")
            continue
        sub_objective = TaggingObjective.from_config(config, space, sub_tags, head_targets, sub_train)
        overrides = dict(config.per_label_train.get(name, {}))
        if space.tags and np.nansum(sub_tags[sub_val]) == 0 and config.train.monitor == "val_map":
            console.print(f"[yellow]warning: label '{name}' has no validation positives; selecting on val_loss")
            overrides = {"monitor": "val_loss", "mode": "min", **overrides}
        sub_config = from_dict(TrainConfig, {**to_dict(config.train), **overrides},
                               where=f"per_label_train.{name}")
        console.print(f"[bold]label {index + 1}/{len(jobs)}: {name}")
        loader = tensor_loader([features[sub_train], torch.as_tensor(sub_train)], sub_config.batch_size,
                               shuffle=True, seed=sub_config.seed)
        evaluate = _feature_evaluator(sub_objective, features, sub_val, space, config.beta, device)
        label_dir = run_dir / f"label-{index:03d}" if run_dir else None
        _fit(submodel, sub_objective.loss, evaluate, loader, sub_config, label_dir, Console(quiet=True),
             show_progress)
    return model.eval()


def _train_finetune(manifest: Manifest, config: TaggingConfig, labels: LabelSpace, objective: TaggingObjective,
                    train_rows: np.ndarray, val_rows: np.ndarray, run_dir: Path | None, console: Console,
                    show_progress: bool) -> tuple[nn.Module, Backbone]:
    """Fine-tune backbone + head end to end on images (stem and first ``backbone.freeze`` stages frozen).

    The backbone of the monitor's best epoch is shipped. With ``select_epoch: per_label`` every epoch's head state
    is kept, scored on the val features of that backbone, and each tag read from the head where it scored best.
    """
    backbone = build_backbone(config.backbone, finetune=True)
    net = TaskNetwork(backbone, _joint_head(config, labels, backbone.num_features))
    workers = default_workers() if config.backbone.num_workers is None else config.backbone.num_workers
    train_loader = image_row_loader(manifest, train_rows, train_transform(backbone.preprocess),
                                    config.train.batch_size, True, workers, config.train.seed)
    val_loader = image_row_loader(manifest, val_rows, eval_transform(backbone.preprocess), config.backbone.batch_size,
                                  False, workers, config.train.seed)
    device = resolve_device(config.train.device)

    evaluate = _evaluator(objective, val_loader, len(manifest), val_rows, labels, config.beta, device)
    tracker = (_PerLabelEpochs(objective.tag_targets[val_rows].numpy(), config.beta, evaluate)
               if config.select_epoch == "per_label" and labels.tags else None)
    result = _fit(net, objective.loss, tracker or evaluate, train_loader, config.train, run_dir, console,
                  show_progress)[1]
    backbone_out: Any = net.backbone
    backbone_out.weights_id = state_fingerprint(backbone_out)
    head: nn.Module = net.head
    if tracker is not None:  # val features through the cache, as inference (and the threshold step) reads them
        val_features = frozen_features(manifest.subset(np.isin(np.arange(len(manifest)), val_rows)),
                                       config.backbone, backbone=backbone_out, show_progress=show_progress)
        head = tracker.selected(head, result, config, labels, backbone_out.num_features, console, val_features)
    return head, backbone_out
