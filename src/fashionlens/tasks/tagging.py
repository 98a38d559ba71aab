"""Multi-label style / attribute tagging (JD AI Fashion style, iMaterialist, street-fashion attributes).

A pretrained CNN's pooled features feed :class:`~fashionlens.models.heads.TaggingHead` (FC(1024) → one sigmoid per
label, plus softmax heads for multi-class attributes). Training modes:

* ``features`` -- the head on cached frozen features (fast, CPU-friendly);
* ``finetune`` -- backbone and head end to end on images, first stages frozen;
* ``per_label`` -- one small model per label, each with its own early stopping (and optionally its own LR/epochs).

Afterwards each label's decision threshold is moved to the value that maximises its F-beta on the validation split
(threshold moving), and the thresholds are saved with the model.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from torch import nn
from torch.utils.data import DataLoader

from fashionlens import metrics
from fashionlens.config import from_dict, to_dict
from fashionlens.data.records import Manifest
from fashionlens.data.transforms import eval_transform, train_transform
from fashionlens.engine import TrainConfig, Trainer
from fashionlens.errors import ConfigError, DataError, ModelError
from fashionlens.losses import label_weights, masked_bce, masked_cross_entropy
from fashionlens.models.heads import TaggingHead
from fashionlens.runtime import default_workers, resolve_device, seed_everything
from fashionlens.tasks.common import (
    BackboneConfig,
    build_backbone,
    frozen_features,
    image_row_loader,
    manifest_of_paths,
    read_model_dir,
    save_model_dir,
    state_fingerprint,
    tensor_loader,
)
from fashionlens.tasks.labels import LabelSpace
from fashionlens.thresholds import apply_thresholds, best_thresholds

MODES = ("features", "finetune", "per_label")
LOSSES = ("bce", "weighted_bce")


def _default_tagging_train() -> TrainConfig:
    return TrainConfig(epochs=40, lr=1e-3, monitor="val_map", mode="max", early_stop_patience=6, batch_size=128)


@dataclass
class TaggingConfig:
    """How a tagger is built and trained (YAML-loadable; see ``configs/`` for examples)."""

    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    tags: list[str] | None = None
    heads: list[str] | None = None
    expand_heads: list[str] = field(default_factory=list)
    min_class_count: int = 2
    loss: str = "weighted_bce"
    positive_weight: float = 1.0
    hidden: int = 1024
    dropout: float = 0.5
    mode: str = "features"
    finetune_freeze: int = 2
    beta: float = 2.0
    train: TrainConfig = field(default_factory=_default_tagging_train)
    per_label_train: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"unknown tagging mode '{self.mode}'; use one of {MODES}")
        if self.loss not in LOSSES:
            raise ConfigError(f"unknown tagging loss '{self.loss}'; use one of {LOSSES}")
        if self.beta <= 0:
            raise ConfigError(f"beta must be > 0, got {self.beta}")


@dataclass
class Predictions:
    """Probabilities of a tagger on some rows: tags ``(n, L)`` and, per head, ``(n, classes)``."""

    tags: np.ndarray
    heads: dict[str, np.ndarray] = field(default_factory=dict)

    def subset(self, rows: np.ndarray) -> Predictions:
        """The predictions of ``rows`` (indices or a boolean mask)."""
        return Predictions(self.tags[rows], {head: probs[rows] for head, probs in self.heads.items()})


class TaggingNet(nn.Module):
    """Backbone + tagging head, for end-to-end fine-tuning and image-level inference."""

    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits per output (see :class:`TaggingHead`)."""
        return self.head(self.backbone(images))


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


def _build_head(config: TaggingConfig, labels: LabelSpace, in_features: int) -> nn.Module:
    if config.mode == "per_label":
        return PerLabelHeads(in_features, labels, config.hidden, config.dropout)
    head_sizes = {h: len(c) for h, c in labels.heads.items()}
    return TaggingHead(in_features, len(labels.tags), head_sizes, config.hidden, config.dropout)


class TaggingObjective:
    """Loss and batched prediction of a tagging model over rows addressed by index.

    Batches are ``(inputs, row_indices)``: inputs are features or images, and targets are looked up by row, so the
    same objective serves cached features and images alike.
    """

    def __init__(self, labels: LabelSpace, tag_targets: np.ndarray, head_targets: Mapping[str, np.ndarray],
                 loss: str, positive_weight: float, train_rows: np.ndarray):
        self.labels = labels
        self.tag_targets = torch.as_tensor(tag_targets)
        self.head_targets = {h: torch.as_tensor(t) for h, t in head_targets.items()}
        self.pos_weight: torch.Tensor | None = None
        self.neg_weight: torch.Tensor | None = None
        if loss == "weighted_bce" and labels.tags:
            pos, neg = label_weights(tag_targets[train_rows], positive_weight=positive_weight)
            self.pos_weight, self.neg_weight = torch.as_tensor(pos), torch.as_tensor(neg)

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


@torch.no_grad()
def predict_outputs(model: nn.Module, loader: DataLoader[Any] | Sequence[Any], n_rows: int,
                    device: torch.device) -> tuple[dict[str, np.ndarray], list[int]]:
    """Run ``model`` over ``(inputs, rows)`` batches; returns logits per output aligned to rows, and the rows seen."""
    model.eval()
    collected: dict[str, np.ndarray] = {}
    seen: list[int] = []
    for inputs, rows in loader:
        if len(rows) == 0:
            continue
        outputs = model(inputs.to(device))
        for name, value in outputs.items():
            if name not in collected:
                collected[name] = np.full((n_rows, value.shape[1]), np.nan, dtype=np.float32)
            collected[name][rows.numpy()] = value.float().cpu().numpy()
        seen += rows.tolist()
    return collected, seen


def logits_to_predictions(logits: Mapping[str, np.ndarray], labels: LabelSpace, n_rows: int) -> Predictions:
    """Sigmoid for tags, softmax for heads."""
    tags = logits.get("tags", np.zeros((n_rows, len(labels.tags)), dtype=np.float32))
    tag_probs = 1.0 / (1.0 + np.exp(-tags))
    heads = {}
    for head in labels.heads:
        values = logits[head]
        shifted = np.exp(values - values.max(axis=1, keepdims=True))
        heads[head] = shifted / shifted.sum(axis=1, keepdims=True)
    return Predictions(tags=tag_probs.astype(np.float32), heads=heads)


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


class Tagger:
    """A trained tagger: label space, thresholds, and the network from images to probabilities.

    Load one with :meth:`load`; predict with :meth:`predict` (a manifest) or :meth:`predict_paths` (image files).
    """

    def __init__(self, config: TaggingConfig, labels: LabelSpace, head: nn.Module, thresholds: np.ndarray,
                 backbone: nn.Module | None = None, metrics_summary: dict[str, Any] | None = None):
        self.config = config
        self.labels = labels
        self.head = head.eval()
        self.thresholds = np.asarray(thresholds, dtype=np.float32)
        if len(self.thresholds) != len(labels.tags):
            raise ModelError(f"tagger has {len(self.thresholds)} thresholds for {len(labels.tags)} labels")
        self._backbone = backbone
        self.metrics = metrics_summary or {}

    @property
    def backbone(self) -> nn.Module:
        """The image backbone (built lazily for feature-mode taggers, from the saved backbone settings)."""
        if self._backbone is None:
            self._backbone = build_backbone(self.config.backbone, freeze="all")
        return self._backbone

    def predict_features(self, features: np.ndarray) -> Predictions:
        """Probabilities from pooled backbone features."""
        rows = np.arange(len(features))
        loader = tensor_loader([features.astype(np.float32), rows], batch_size=1024, shuffle=False)
        logits, _ = predict_outputs(self.head, loader, len(features), torch.device("cpu"))
        return logits_to_predictions(logits, self.labels, len(features))

    def predict(self, manifest: Manifest, device: str | None = None, show_progress: bool = True,
                skip_bad_images: bool = False) -> Predictions:
        """Probabilities for every row of ``manifest`` (features come through the shared cache).

        With ``skip_bad_images`` the rows of unreadable images are NaN instead of a :class:`DataError`.
        """
        features = frozen_features(manifest, self.config.backbone, backbone=self.backbone, device=device,
                                   show_progress=show_progress, skip_bad_images=skip_bad_images)
        return self.predict_features(features)

    def predict_paths(self, paths: Sequence[str | Path], show_progress: bool = False) -> Predictions:
        """Probabilities for image files."""
        return self.predict(manifest_of_paths(paths), show_progress=show_progress)

    def decide(self, predictions: Predictions) -> np.ndarray:
        """Boolean tag decisions with the saved per-label thresholds."""
        return apply_thresholds(predictions.tags, self.thresholds)

    def save(self, path: str | Path, extra_json: Mapping[str, Any] | None = None) -> Path:
        """Write the model directory (weights, labels, thresholds, config, metrics)."""
        state: dict[str, Any] = {"head": self.head.state_dict()}
        if self.config.mode == "finetune":
            state["backbone"] = self.backbone.state_dict()
        documents = {"config": to_dict(self.config), "labels": self.labels.to_json(),
                     "thresholds": dict(zip(self.labels.tags, map(float, self.thresholds), strict=True)),
                     "metrics": self.metrics, **(extra_json or {})}
        return save_model_dir(path, state, documents)

    @classmethod
    def load(cls, path: str | Path) -> Tagger:
        """Load a model directory written by :meth:`save` (no training config needed)."""
        state, docs = read_model_dir(path, ["config", "labels", "thresholds"], optional_json=["metrics"])
        try:
            config = from_dict(TaggingConfig, docs["config"], where=f"{path}/config.json")
        except ConfigError as error:
            raise ModelError(str(error)) from error
        labels = LabelSpace.from_json(docs["labels"])
        thresholds_doc = docs["thresholds"]
        missing = [t for t in labels.tags if t not in thresholds_doc]
        if missing or len(thresholds_doc) != len(labels.tags):
            raise ModelError(f"{path}/thresholds.json has {len(thresholds_doc)} thresholds for "
                             f"{len(labels.tags)} labels (missing: {missing[:5]})")
        thresholds = np.array([thresholds_doc[t] for t in labels.tags], dtype=np.float32)
        backbone = None
        if config.mode == "finetune":
            backbone = build_backbone(replace(config.backbone, pretrained=False), freeze="all")
            backbone.load_state_dict(state["backbone"])
            backbone.weights_id = state_fingerprint(backbone)
        in_features = backbone.num_features if backbone is not None else _head_in_features(state["head"])
        head = _build_head(config, labels, in_features)
        try:
            head.load_state_dict(state["head"])
        except RuntimeError as error:
            raise ModelError(f"{path}/model.pt does not match labels.json/config.json: "
                             f"{str(error).splitlines()[0]}") from error
        return cls(config, labels, head, thresholds, backbone=backbone, metrics_summary=docs.get("metrics"))


def _head_in_features(head_state: Mapping[str, torch.Tensor]) -> int:
    first = next(k for k in head_state if k.endswith("hidden.0.weight"))
    return int(head_state[first].shape[1])


def tune_thresholds(tag_targets: np.ndarray, tag_probs: np.ndarray, labels: LabelSpace, beta: float,
                    console: Console | None = None) -> np.ndarray:
    """Per-label thresholds maximising F-beta on validation; labels without validation positives keep 0.5."""
    if not labels.tags:
        return np.zeros(0, dtype=np.float32)
    result = best_thresholds(tag_targets, tag_probs, beta=beta, fallback=0.5)
    if result.no_positive_labels and console is not None:
        names = [labels.tags[i] if isinstance(i, (int, np.integer)) else i for i in result.no_positive_labels]
        console.print(f"[yellow]warning: no validation positives for {names}; their threshold stays 0.5")
    return np.asarray(result.thresholds, dtype=np.float32)


def train_tagger(manifest: Manifest, config: TaggingConfig, out_dir: str | Path | None = None,
                 console: Console | None = None, show_progress: bool = True,
                 features: np.ndarray | None = None) -> Tagger:
    """Train a tagger on the ``train`` split, select epochs and thresholds on ``val``, and save it to ``out_dir``.

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
    tag_targets = labels.tag_targets(manifest)
    head_targets = labels.head_targets(manifest)
    if labels.tags:
        no_pos = [t for t, n in zip(labels.tags, np.nansum(tag_targets[train_rows], axis=0), strict=True) if n == 0]
        if no_pos:
            warnings.warn(f"label(s) {no_pos} have no positives in training; their threshold falls back to 0.5",
                          stacklevel=2)
            console.print(f"[yellow]warning: no training positives for {no_pos}")
    objective = TaggingObjective(labels, tag_targets, head_targets, config.loss, config.positive_weight, train_rows)
    run_dir = Path(out_dir).with_name(Path(out_dir).name + ".run") if out_dir else None
    backbone = None
    if config.mode != "finetune" and features is None:
        features = frozen_features(manifest, config.backbone, show_progress=show_progress)
    seed_everything(config.train.seed)  # initial weights repeat with the seed (whether or not features were cached)
    if config.mode == "finetune":
        head, backbone = _train_finetune(manifest, config, labels, objective, train_rows, val_rows, run_dir,
                                         console, show_progress)
    else:
        assert features is not None
        train_fn = _train_per_label if config.mode == "per_label" else _train_joint
        head = train_fn(features, config, labels, objective, train_rows, val_rows, run_dir, console, show_progress)
    tagger = Tagger(config, labels, head, np.full(len(labels.tags), 0.5, dtype=np.float32), backbone=backbone)
    val_predictions = (tagger.predict_features(features[val_rows]) if features is not None
                       else tagger.predict(manifest.subset(split == "val"), show_progress=show_progress))
    tagger.thresholds = tune_thresholds(tag_targets[val_rows], val_predictions.tags, labels, config.beta, console)
    summary = validation_metrics(val_predictions, tag_targets[val_rows],
                                 {h: t[val_rows] for h, t in head_targets.items()}, config.beta)
    if labels.tags:
        tuned = metrics.macro_fbeta(tag_targets[val_rows], tagger.decide(val_predictions), beta=config.beta)
        summary[f"val_macro_f{config.beta:g}@tuned"] = tuned
    tagger.metrics = summary
    if out_dir:
        tagger.save(out_dir)
        console.print(f"saved tagger to {out_dir}")
    return tagger


def _fit(model: nn.Module, objective_loss: Callable[..., torch.Tensor],
         evaluate: Callable[[nn.Module], dict[str, float]], train_loader: Any, train_config: TrainConfig,
         run_dir: Path | None, console: Console, show_progress: bool) -> nn.Module:
    trainer = Trainer(model, train_config, objective_loss, evaluate, run_dir=run_dir, console=console,
                      show_progress=show_progress)
    trainer.fit(train_loader)
    return trainer.model.cpu().eval()


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
                 show_progress: bool) -> nn.Module:
    device = resolve_device(config.train.device)
    head = _build_head(config, labels, features.shape[1])
    loader = tensor_loader([features[train_rows], torch.as_tensor(train_rows)], config.train.batch_size,
                           shuffle=True, seed=config.train.seed)
    evaluate = _feature_evaluator(objective, features, val_rows, labels, config.beta, device)
    return _fit(head, objective.loss, evaluate, loader, config.train, run_dir, console, show_progress)


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
        sub_objective = TaggingObjective(space, sub_tags, head_targets, config.loss, config.positive_weight,
                                         sub_train)
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
                    show_progress: bool) -> tuple[nn.Module, nn.Module]:
    """Fine-tune backbone + head end to end on images (first ``finetune_freeze`` stages frozen)."""
    backbone = build_backbone(config.backbone, freeze=config.finetune_freeze)
    head = _build_head(config, labels, backbone.num_features)
    net = TaggingNet(backbone, head)
    workers = default_workers() if config.backbone.num_workers is None else config.backbone.num_workers
    train_loader = image_row_loader(manifest, train_rows, train_transform(backbone.preprocess),
                                    config.train.batch_size, True, workers, config.train.seed)
    val_loader = image_row_loader(manifest, val_rows, eval_transform(backbone.preprocess), config.backbone.batch_size,
                                  False, workers, config.train.seed)
    device = resolve_device(config.train.device)

    evaluate = _evaluator(objective, val_loader, len(manifest), val_rows, labels, config.beta, device)
    trained = _fit(net, objective.loss, evaluate, train_loader, config.train, run_dir, console, show_progress)
    backbone_out: Any = net.backbone
    backbone_out.weights_id = state_fingerprint(backbone_out)
    return trained.head if isinstance(trained, TaggingNet) else head, backbone_out
