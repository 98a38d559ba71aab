"""Training a tagger: the three modes, epoch selection and the threshold step."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import replace
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
from fashionlens.engine import TrainConfig
from fashionlens.errors import ConfigError, DataError
from fashionlens.io import run_dir
from fashionlens.losses import importance_vector
from fashionlens.models.backbones import Backbone, build_backbone
from fashionlens.runtime import resolve_device, seed_everything
from fashionlens.tasks.common.features import frozen_features
from fashionlens.tasks.common.loaders import tensor_loader
from fashionlens.tasks.common.training import Evaluate, finetune, fit, predict_outputs
from fashionlens.tasks.labels import LabelSpace
from fashionlens.tasks.tagging.config import DECISION_BETA, TaggingConfig
from fashionlens.tasks.tagging.epoch_selection import PerLabelEpochs
from fashionlens.tasks.tagging.model import PerLabelHeads, Tagger, build_head, joint_head, logits_to_predictions
from fashionlens.tasks.tagging.objective import TaggingObjective, validation_metrics
from fashionlens.tasks.tagging.thresholds import apply_thresholds, tune_thresholds


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
    checkpoints = run_dir(out_dir) if out_dir else None
    backbone: Backbone | None = None
    if config.mode != "finetune" and features is None:
        backbone = build_backbone(config.backbone)  # kept by the tagger: its weights id is saved with the head
        features = frozen_features(manifest, config.backbone, backbone=backbone, show_progress=show_progress)
    seed_everything(config.train.seed)  # initial weights repeat with the seed (whether or not features were cached)
    best_epoch = config.train.epochs
    if config.mode == "finetune":
        head, backbone = _train_finetune(manifest, config, labels, objective, train_rows, val_rows, checkpoints,
                                         console, show_progress)
    elif config.mode == "per_label":
        assert features is not None
        head = _train_per_label(features, config, labels, objective, train_rows, val_rows, checkpoints, console,
                                show_progress)
    else:
        assert features is not None
        head, best_epoch = _train_joint(features, config, labels, objective, train_rows, val_rows, checkpoints, console,
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
    head = build_head(config, labels, features.shape[1])
    loader = tensor_loader([features[rows], torch.as_tensor(rows)], train_config.batch_size, shuffle=True,
                           seed=train_config.seed)
    return fit(head, objective.loss, None, loader, train_config, None, Console(quiet=True), show_progress)[0]


def _evaluator(objective: TaggingObjective, loader: Any, n_rows: int, val_rows: np.ndarray, labels: LabelSpace,
               beta: float, device: torch.device) -> Evaluate:
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
                       beta: float, device: torch.device) -> Evaluate:
    loader = tensor_loader([features[val_rows], torch.as_tensor(val_rows)], batch_size=2048, shuffle=False)
    return _evaluator(objective, loader, len(features), val_rows, labels, beta, device)


def _train_joint(features: np.ndarray, config: TaggingConfig, labels: LabelSpace, objective: TaggingObjective,
                 train_rows: np.ndarray, val_rows: np.ndarray, run_dir: Path | None, console: Console,
                 show_progress: bool) -> tuple[nn.Module, int]:
    """The joint head with early stopping on ``val``, and its best epoch (1-based)."""
    device = resolve_device(config.train.device)
    head = joint_head(config, labels, features.shape[1])  # per-label snapshots are assembled after training
    loader = tensor_loader([features[train_rows], torch.as_tensor(train_rows)], config.train.batch_size,
                           shuffle=True, seed=config.train.seed)
    evaluate = _feature_evaluator(objective, features, val_rows, labels, config.beta, device)
    tracker = PerLabelEpochs(objective.tag_targets[val_rows].numpy(), config.beta, evaluate).bind(
        features[val_rows]) if config.select_epoch == "per_label" and labels.tags else None
    model, result = fit(head, objective.loss, tracker or evaluate, loader, config.train, run_dir, console,
                         show_progress)
    if tracker is not None:
        model = tracker.selected(model, result, config, labels, features.shape[1], console)
    return model, max(result.best_epoch, 1)


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
        fit(submodel, sub_objective.loss, evaluate, loader, sub_config, label_dir, Console(quiet=True),
             show_progress)
    return model.eval()


def _train_finetune(manifest: Manifest, config: TaggingConfig, labels: LabelSpace, objective: TaggingObjective,
                    train_rows: np.ndarray, val_rows: np.ndarray, run_dir: Path | None, console: Console,
                    show_progress: bool) -> tuple[nn.Module, Backbone]:
    """Fine-tune backbone + head end to end on images (:func:`~fashionlens.tasks.common.training.finetune`).

    The backbone of the monitor's best epoch is shipped. With ``select_epoch: per_label`` every epoch's head state
    is kept, scored on the val features of that backbone, and each tag read from the head where it scored best.
    """
    device = resolve_device(config.train.device)
    trackers: list[PerLabelEpochs] = []  # the per-label tracker, once the driver has made the val loader

    def make_evaluate(val_loader: DataLoader[Any]) -> Evaluate:
        evaluate = _evaluator(objective, val_loader, len(manifest), val_rows, labels, config.beta, device)
        if config.select_epoch == "per_label" and labels.tags:
            trackers.append(PerLabelEpochs(objective.tag_targets[val_rows].numpy(), config.beta, evaluate))
            return trackers[0]
        return evaluate

    backbone, head, result = finetune(manifest, config.backbone, config.train,
                                      lambda width: joint_head(config, labels, width), objective.loss, make_evaluate,
                                      train_rows, val_rows, run_dir, console, show_progress)
    if trackers:  # val features through the cache, as inference (and the threshold step) reads them
        val_features = frozen_features(manifest.subset(np.isin(np.arange(len(manifest)), val_rows)),
                                       config.backbone, backbone=backbone, show_progress=show_progress)
        head = trackers[0].selected(head, result, config, labels, backbone.num_features, console, val_features)
    return head, backbone
