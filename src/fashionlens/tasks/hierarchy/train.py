"""Training a hierarchy classifier on frozen features or end to end."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from torch import nn

from fashionlens import metrics
from fashionlens.data.records import Manifest
from fashionlens.engine import TrainResult
from fashionlens.errors import ConfigError, DataError, ModelError
from fashionlens.io import run_dir
from fashionlens.models.backbones import Backbone, build_backbone
from fashionlens.models.hmcn import HierarchyHead
from fashionlens.runtime import resolve_device, seed_everything
from fashionlens.tasks.common.features import frozen_features
from fashionlens.tasks.common.loaders import tensor_loader
from fashionlens.tasks.common.model_dir import head_in_features
from fashionlens.tasks.common.training import finetune, fit, predict_outputs
from fashionlens.tasks.hierarchy.config import DEFAULT_LEVELS, HierarchyConfig, TaxonomyConfig
from fashionlens.tasks.hierarchy.evaluate import HierarchyEvaluation, evaluate_predictions
from fashionlens.tasks.hierarchy.model import FIRST_LAYER, HierarchyClassifier, build_head, head_of
from fashionlens.tasks.hierarchy.taxonomy import EncodedLabels, Taxonomy


def build_taxonomy(manifest: Manifest, config: TaxonomyConfig) -> Taxonomy:
    """The taxonomy of ``config`` over ``manifest`` (rare classes counted on its ``train`` rows)."""
    if config.file is None:
        return Taxonomy.from_manifest(manifest, config.levels or list(DEFAULT_LEVELS), config.conflicts,
                                      config.min_count, config.rare)
    taxonomy = Taxonomy.from_yaml(config.file, config.conflicts)  # read once for its levels, then with row counts
    if config.levels is not None and list(config.levels) != list(taxonomy.levels):
        raise ConfigError(f"taxonomy.levels {config.levels} disagree with the levels {list(taxonomy.levels)} of "
                          f"{config.file}; leave taxonomy.levels unset")
    train = manifest.frame["split"] == "train"
    leaf = manifest.class_column(taxonomy.leaf_level)
    counts = {str(k): int(v) for k, v in leaf[train if train.any() else slice(None)].value_counts().items()}
    return Taxonomy.from_yaml(config.file, config.conflicts, counts, config.min_count, config.rare)


class HierarchyObjective:
    """Loss and validation metrics over rows addressed by index: batches are ``(inputs, row_indices)``."""

    def __init__(self, taxonomy: Taxonomy, targets: np.ndarray):
        self.taxonomy = taxonomy
        self.targets = torch.as_tensor(targets, dtype=torch.long)

    def loss(self, model: nn.Module, batch: Sequence[torch.Tensor], device: torch.device) -> torch.Tensor:
        """Engine callback: the head's loss on one ``(inputs, rows)`` batch."""
        inputs, rows = batch[0], batch[1]
        return head_of(model).loss(model(inputs.to(device)), self.targets[rows].to(device))

    def evaluator(self, loader: Any, n_rows: int, val_rows: np.ndarray, device: torch.device
                  ) -> Callable[[nn.Module], dict[str, float]]:
        """Engine callback: ``val_loss`` (NLL of the final last-level probabilities, comparable across variants),
        ``val_top1``, ``val_top5``, ``val_acc_<level>`` and ``val_consistency``."""
        truth = self.targets[val_rows].numpy()

        def evaluate(model: nn.Module) -> dict[str, float]:
            logits, _ = predict_outputs(model, loader, n_rows, device)
            outputs = {k: torch.as_tensor(v[val_rows]) for k, v in logits.items()}
            levels = [p.numpy() for p in head_of(model).level_probabilities(outputs)]
            leaf = levels[-1][np.arange(len(truth)), truth[:, -1]]
            greedy = np.stack([p.argmax(axis=1) for p in levels], axis=1)
            out = {"val_loss": float(-np.log(leaf + 1e-12).mean()),
                   **{f"val_{k}": v for k, v in metrics.topk_accuracies(truth[:, -1], levels[-1], (1, 5)).items()}}
            out.update({f"val_acc_{level}": float((greedy[:, h] == truth[:, h]).mean())
                        for h, level in enumerate(self.taxonomy.levels[:-1])})
            out["val_consistency"] = float(self.taxonomy.is_consistent(greedy).mean())
            return out

        return evaluate


def _scored_rows(manifest: Manifest, targets: np.ndarray, split: str) -> np.ndarray:
    rows = np.flatnonzero((manifest.frame["split"] == split).to_numpy() & (targets[:, -1] >= 0))
    if len(rows) == 0:
        raise DataError(f"split '{split}' of manifest '{manifest.name}' has no row with a known category; split the "
                        f"manifest first (fashionlens data split) and check the taxonomy levels")
    return rows


def train_hierarchy(manifest: Manifest, config: HierarchyConfig | None = None, out_dir: str | Path | None = None,
                    features: np.ndarray | None = None, console: Console | None = None,
                    show_progress: bool = True) -> HierarchyClassifier:
    """Build the taxonomy, train on the ``train`` split, select the epoch on ``val``, and save to ``out_dir``.

    Args:
        manifest: Rows with ``split`` set (``train`` and ``val`` needed) and the taxonomy's label columns.
        config: Model and training settings (defaults: HMCN-F + uncertainty weighting on EfficientNet-Lite0).
        out_dir: Model directory to write (``None``: don't save). Resumable checkpoints go to ``<out_dir>.run``.
        features: Precomputed frozen features aligned with ``manifest`` (skips extraction; ``features`` mode).
        console: Where progress messages go.
        show_progress: Draw progress bars.
    """
    config = config or HierarchyConfig()
    console = console or Console(stderr=True)
    taxonomy = build_taxonomy(manifest, config.taxonomy)
    for line in taxonomy.report.lines():
        console.print(f"taxonomy: {line}", highlight=False)
    encoded = taxonomy.encode(manifest)
    if encoded.excluded:
        console.print(f"taxonomy: {encoded.excluded} row(s) have no target (unlabelled {encoded.unlabelled}, "
                      f"unknown {encoded.unknown}, dropped {encoded.dropped}, ambiguous {encoded.ambiguous})")
    train_rows, val_rows = _scored_rows(manifest, encoded.targets, "train"), _scored_rows(manifest, encoded.targets,
                                                                                          "val")
    objective = HierarchyObjective(taxonomy, encoded.targets)
    checkpoints = run_dir(out_dir) if out_dir else None
    device = resolve_device(config.train.device)
    frozen: Backbone | None = None
    if config.mode != "finetune" and features is None:
        frozen = build_backbone(config.backbone)  # kept by the classifier: its weights id is saved with the head
        features = frozen_features(manifest, config.backbone, backbone=frozen, show_progress=show_progress)
    seed_everything(config.train.seed)  # initial weights repeat with the seed (whether or not features were cached)
    if config.mode == "finetune":
        head, backbone, result = _train_finetune(manifest, config, taxonomy, objective, train_rows, val_rows,
                                                 checkpoints, console, show_progress)
        classifier = HierarchyClassifier(config, taxonomy, head, backbone=backbone)
        val_predictions = classifier.predict(manifest.subset(np.isin(np.arange(len(manifest)), val_rows)),
                                             show_progress=show_progress)
    else:
        assert features is not None
        if len(features) != len(manifest):
            raise DataError(f"{len(features)} feature rows for {len(manifest)} manifest rows")
        # a last batch of one row is dropped: batch norm cannot train on it
        loader = tensor_loader([features[train_rows], torch.as_tensor(train_rows)], config.train.batch_size,
                               shuffle=True, seed=config.train.seed,
                               drop_last=len(train_rows) % config.train.batch_size == 1)
        val_loader = tensor_loader([features[val_rows], torch.as_tensor(val_rows)], 2048, shuffle=False)
        evaluate = objective.evaluator(val_loader, len(manifest), val_rows, device)
        trained, result = fit(build_head(config, taxonomy, features.shape[1]), objective.loss, evaluate, loader,
                              config.train, checkpoints, console, show_progress)
        classifier = HierarchyClassifier(config, taxonomy, head_of(trained), backbone=frozen)
        val_predictions = classifier.predict_features(features[val_rows])
    val_rows_manifest = manifest.subset(np.isin(np.arange(len(manifest)), val_rows))
    evaluation = evaluate_predictions(taxonomy, val_predictions, val_rows_manifest, "val")
    classifier.metrics = _training_summary(classifier, evaluation, result, encoded)
    if out_dir:
        classifier.save(out_dir)
        console.print(f"saved hierarchy classifier to {out_dir}")
    return classifier


def _training_summary(classifier: HierarchyClassifier, evaluation: HierarchyEvaluation, result: TrainResult,
                      encoded: EncodedLabels) -> dict[str, Any]:
    summary: dict[str, Any] = {"val": evaluation.summary, "best_epoch": result.best_epoch,
                               "epochs_run": len(result.history), "train_seconds": round(result.seconds, 1),
                               "rows_without_target": encoded.excluded, "labels_rewritten": encoded.rewritten}
    weighting = getattr(classifier.head, "weighting", None)
    if weighting is not None and weighting.sigmas():
        summary["sigma_local"], summary["sigma_global"] = weighting.sigmas()
    return summary


def _probed_head(config: HierarchyConfig, taxonomy: Taxonomy, in_features: int) -> HierarchyHead:
    """The head of ``config.init_head``, checked to fit the model about to be fine-tuned.

    Starting the fine-tune from a head already trained on the frozen features (LP-FT, Kumar et al. 2022) keeps the
    first epochs' gradients from a random head from distorting the pretrained features.

    Raises:
        ModelError: The directory is not a frozen-feature hierarchy model of the same backbone, variant and taxonomy.
    """
    source = HierarchyClassifier.load(str(config.init_head))
    wanted = (config.backbone.name, config.variant, config.hidden, in_features)
    found = (source.config.backbone.name, source.config.variant, source.config.hidden,
             head_in_features(source.head.state_dict(), FIRST_LAYER))
    if source.config.mode == "finetune" or found != wanted:
        raise ModelError(f"init_head {config.init_head} is a {source.config.mode}-mode model of (backbone, variant, "
                         f"hidden, features) {found}; fine-tuning needs a features-mode one of {wanted}")
    if (source.taxonomy.levels, source.taxonomy.classes) != (taxonomy.levels, taxonomy.classes):
        raise ModelError(f"init_head {config.init_head} was trained on another taxonomy than this manifest's "
                         f"(retrain it on the same data and taxonomy settings)")
    return source.head


def _train_finetune(manifest: Manifest, config: HierarchyConfig, taxonomy: Taxonomy, objective: HierarchyObjective,
                    train_rows: np.ndarray, val_rows: np.ndarray, run_dir: Path | None, console: Console,
                    show_progress: bool) -> tuple[HierarchyHead, Backbone, TrainResult]:
    """Fine-tune backbone + head end to end on images (:func:`~fashionlens.tasks.common.training.finetune`), from the
    head of ``config.init_head`` when set."""

    def make_head(width: int) -> HierarchyHead:
        head = build_head(config, taxonomy, width)
        if config.init_head is not None:
            head.load_state_dict(_probed_head(config, taxonomy, width).state_dict())
            console.print(f"fine-tuning from the head of {config.init_head} (linear probe, then fine-tune)")
        return head

    device = resolve_device(config.train.device)
    backbone, head, result = finetune(manifest, config.backbone, config.train, make_head, objective.loss,
                                      lambda val_loader: objective.evaluator(val_loader, len(manifest), val_rows,
                                                                             device),
                                      train_rows, val_rows, run_dir, console, show_progress)
    return head_of(head), backbone, result
