"""Hierarchical category classification (masterCategory > subCategory > articleType) with HMCN-F.

A :class:`~fashionlens.taxonomy.Taxonomy` is built from the manifest's label columns (or a user-written YAML tree),
with its inconsistencies and rare classes resolved and reported; then a head on pooled backbone features predicts one
class per level. Variants:

* ``flat`` -- one softmax over the last level; upper levels are sums of their leaves (the baseline);
* ``hmcn`` -- HMCN-F (:class:`~fashionlens.models.hmcn.HMCNF`) with the local and global losses summed;
* ``hmcn_mtl`` -- HMCN-F with the two losses weighted by learned uncertainty.

Training modes, as for tagging: ``features`` (the head on cached frozen features) and ``finetune`` (backbone and head
end to end on images). Predictions are paths through the taxonomy with per-level probabilities; because HMCN-F's
levels are predicted separately, a greedy per-level path can break the tree, so the default answer is the best
*consistent* path and the evaluation reports how often the greedy one is inconsistent.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
from rich.console import Console
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fashionlens import metrics
from fashionlens.data.readers.fashion_product import HIERARCHY
from fashionlens.data.records import Manifest
from fashionlens.data.transforms import eval_transform, train_transform
from fashionlens.distributed import unwrap
from fashionlens.engine import TrainConfig, Trainer, TrainResult
from fashionlens.errors import ConfigError, DataError, ModelError
from fashionlens.io import write_json, write_text
from fashionlens.models.backbones import Backbone, BackboneConfig, build_backbone
from fashionlens.models.hmcn import HMCNF, FlatHierarchyClassifier, HierarchyHead
from fashionlens.models.network import TaskNetwork
from fashionlens.reports import markdown, plots
from fashionlens.runtime import default_workers, resolve_device, seed_everything
from fashionlens.tasks.base import TaskModel, load_head
from fashionlens.tasks.common import (
    WEIGHTS_FILE,
    fold_legacy_freeze,
    frozen_features,
    image_row_loader,
    state_fingerprint,
    tensor_loader,
)
from fashionlens.tasks.registry import register_model
from fashionlens.tasks.tagging import predict_outputs
from fashionlens.taxonomy import CONFLICT_POLICIES, RARE_POLICIES, ConflictPolicy, EncodedLabels, RarePolicy, Taxonomy

VARIANTS = ("flat", "hmcn", "hmcn_mtl")
MODES = ("features", "finetune")
DECODINGS = ("consistent", "greedy")
TOP_K = (1, 3, 5)


def _default_hierarchy_train() -> TrainConfig:
    return TrainConfig(epochs=60, lr=1e-3, weight_decay=1e-4, optimizer="adamw", batch_size=128, monitor="val_top1",
                       mode="max", plateau_patience=3, early_stop_patience=10)


@dataclass
class TaxonomyConfig:
    """Where the taxonomy comes from and how its label problems are resolved (see :mod:`fashionlens.taxonomy`).

    Attributes:
        levels: Manifest class heads, top level first. ``None``: the YAML's levels when ``file`` is set, else
            Fashion Product Images' masterCategory > subCategory > articleType.
        file: A user-written YAML tree (``levels`` + ``tree``); only its leaf level must be a manifest column.
        conflicts: A child under two parents: ``majority``, ``split`` or ``error``.
        min_count: Classes with fewer training rows than this are handled by ``rare`` (0 keeps all).
        rare: ``other`` (merge into an "Other (<parent>)" class, rows stay scored) or ``drop`` (rows left out of
            training and scoring, and counted).
    """

    levels: list[str] | None = None
    file: str | None = None
    conflicts: ConflictPolicy = "majority"
    min_count: int = 5
    rare: RarePolicy = "other"

    def __post_init__(self) -> None:
        if self.conflicts not in CONFLICT_POLICIES:
            raise ConfigError(f"unknown taxonomy conflicts policy '{self.conflicts}'; use one of {CONFLICT_POLICIES}")
        if self.rare not in RARE_POLICIES:
            raise ConfigError(f"unknown taxonomy rare policy '{self.rare}'; use one of {RARE_POLICIES}")
        if self.min_count < 0:
            raise ConfigError(f"taxonomy min_count must be >= 0, got {self.min_count}")


@dataclass
class HierarchyConfig:
    """How a hierarchy classifier is built and trained (YAML-loadable; shipped configs in ``fashionlens/configs``).

    ``backbone.freeze`` says what stays frozen in ``finetune`` mode; ``features`` mode trains on frozen features.
    """

    migrate_legacy = staticmethod(fold_legacy_freeze)

    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    taxonomy: TaxonomyConfig = field(default_factory=TaxonomyConfig)
    variant: str = "hmcn_mtl"
    hidden: int = 512
    dropout: float = 0.5
    beta: float = 0.7
    decoding: str = "consistent"
    mode: str = "features"
    init_head: str | None = None
    train: TrainConfig = field(default_factory=_default_hierarchy_train)

    def __post_init__(self) -> None:
        if self.init_head is not None and self.mode != "finetune":
            raise ConfigError("init_head only applies to mode 'finetune' (it seeds the head that is fine-tuned)")
        if self.variant not in VARIANTS:
            raise ConfigError(f"unknown hierarchy variant '{self.variant}'; use one of {VARIANTS}")
        if self.mode not in MODES:
            raise ConfigError(f"unknown hierarchy mode '{self.mode}'; use one of {MODES}")
        if self.decoding not in DECODINGS:
            raise ConfigError(f"unknown decoding '{self.decoding}'; use one of {DECODINGS}")
        if not 0.0 <= self.beta <= 1.0:
            raise ConfigError(f"beta must lie in [0, 1], got {self.beta}")

    @property
    def loss_weighting(self) -> str:
        """How HMCN-F's local and global losses are combined: ``uncertainty`` for ``hmcn_mtl``, else ``sum``."""
        return "uncertainty" if self.variant == "hmcn_mtl" else "sum"


def build_taxonomy(manifest: Manifest, config: TaxonomyConfig) -> Taxonomy:
    """The taxonomy of ``config`` over ``manifest`` (rare classes counted on its ``train`` rows)."""
    if config.file is None:
        return Taxonomy.from_manifest(manifest, config.levels or list(HIERARCHY), config.conflicts, config.min_count,
                                      config.rare)
    taxonomy = Taxonomy.from_yaml(config.file, config.conflicts)  # read once for its levels, then with row counts
    if config.levels is not None and list(config.levels) != list(taxonomy.levels):
        raise ConfigError(f"taxonomy.levels {config.levels} disagree with the levels {list(taxonomy.levels)} of "
                          f"{config.file}; leave taxonomy.levels unset")
    train = manifest.frame["split"] == "train"
    leaf = manifest.class_column(taxonomy.leaf_level)
    counts = {str(k): int(v) for k, v in leaf[train if train.any() else slice(None)].value_counts().items()}
    return Taxonomy.from_yaml(config.file, config.conflicts, counts, config.min_count, config.rare)


def build_head(config: HierarchyConfig, taxonomy: Taxonomy, in_features: int) -> HierarchyHead:
    """The head of ``config.variant`` for ``taxonomy``."""
    if config.variant == "flat":
        return FlatHierarchyClassifier(in_features, taxonomy.leaf_paths(), config.hidden, config.dropout)
    return HMCNF(in_features, taxonomy.sizes, config.hidden, config.dropout, config.beta,
                 "uncertainty" if config.loss_weighting == "uncertainty" else "sum")


def _head_of(model: nn.Module) -> HierarchyHead:
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
        if "stem.0.weight" not in head_state:
            raise ModelError(f"{path}/{WEIGHTS_FILE} holds no hierarchy head weights")
        head = load_head(build_head(config, taxonomy, _head_in_features(head_state)), state, path,
                         "labels.json/config.json")
        return cls(config, taxonomy, head, backbone=backbone,  # type: ignore[arg-type]
                   metrics_summary=documents.get("metrics"), weights_id=weights_id)


# ---------------------------------------------------------------------------------------------------- evaluation
@dataclass
class HierarchyEvaluation:
    """Figures of a hierarchy classifier on one split.

    ``summary`` keys: ``rows`` (in the split), ``scored`` (rows with a target), ``excluded`` (unknown, dropped or
    ambiguous labels), ``top1/top3/top5`` (last level, fused probabilities, over scored rows), ``top1_all_rows``
    (excluded rows counted as errors: the honest figure under ``rare: drop``), ``acc_<level>`` (per-level argmax),
    ``consistency`` (share of greedy paths that follow the tree), ``path_acc_greedy`` / ``path_acc`` (whole path
    right, greedy / consistent decoding), ``top1_consistent`` (last level of the consistent path), and
    ``other_share`` (scored rows whose target is a merged "Other" class).
    """

    split: str
    summary: dict[str, float]
    per_class: pd.DataFrame
    confusions: dict[str, np.ndarray] = field(default_factory=dict)


def evaluate_predictions(taxonomy: Taxonomy, predictions: HierarchyPredictions, manifest: Manifest,
                         split: str = "val", encoded: EncodedLabels | None = None) -> HierarchyEvaluation:
    """Score ``predictions`` (aligned with ``manifest``'s rows) against the manifest's labels."""
    encoded = encoded or taxonomy.encode(manifest)
    targets = encoded.targets
    scored = targets[:, -1] >= 0
    if len(targets) != len(predictions):
        raise DataError(f"{len(predictions)} predictions for {len(targets)} rows of manifest '{manifest.name}'")
    if not scored.any():
        raise DataError(f"no row of split '{split}' of manifest '{manifest.name}' has a {taxonomy.leaf_level} "
                        f"label known to the model ({encoded.excluded} excluded)")
    truth, leaf_probs = targets[scored], predictions.probabilities[-1][scored]
    summary: dict[str, float] = {"rows": float(len(targets)), "scored": float(scored.sum()),
                                 "excluded": float(encoded.excluded)}
    summary.update(metrics.topk_accuracies(truth[:, -1], leaf_probs, TOP_K))
    summary["top1_all_rows"] = summary["top1"] * scored.sum() / len(targets)
    greedy, paths = predictions.greedy[scored], predictions.paths[scored]
    for h, level in enumerate(taxonomy.levels):
        summary[f"acc_{level}"] = float((greedy[:, h] == truth[:, h]).mean())
    summary["consistency"] = float(taxonomy.is_consistent(greedy).mean())
    summary["path_acc_greedy"] = float((greedy == truth).all(axis=1).mean())
    summary["path_acc"] = float((paths == truth).all(axis=1).mean())
    summary["top1_consistent"] = float((paths[:, -1] == truth[:, -1]).mean())
    is_other = np.isin(np.asarray(taxonomy.classes[-1], dtype=object), list(taxonomy.catch_all))
    summary["other_share"] = float(is_other[truth[:, -1]].mean())
    per_class = metrics.per_class_table(truth[:, -1], greedy[:, -1], taxonomy.classes[-1])
    confusions = {level: metrics.confusion_matrix(truth[:, h], greedy[:, h], taxonomy.sizes[h])
                  for h, level in enumerate(taxonomy.levels[:-1])}
    return HierarchyEvaluation(split=split, summary=summary, per_class=per_class, confusions=confusions)


def evaluate_hierarchy(classifier: HierarchyClassifier, manifest: Manifest, split: str = "val",
                       features: np.ndarray | None = None, show_progress: bool = True
                       ) -> tuple[HierarchyEvaluation, HierarchyPredictions]:
    """Predict one split of ``manifest`` and score it (see :class:`HierarchyEvaluation`).

    Args:
        classifier: The model.
        manifest: Labelled rows with ``split`` set.
        split: Which split to score.
        features: Precomputed features aligned with the whole ``manifest`` (skips extraction).
        show_progress: Draw progress bars.
    """
    rows = manifest.split_subset(split)
    if features is not None:
        if len(features) != len(manifest):
            raise DataError(f"{len(features)} feature rows for {len(manifest)} manifest rows")
        predictions = classifier.predict_features(features[(manifest.frame["split"] == split).to_numpy()])
    else:
        predictions = classifier.predict(rows, show_progress=show_progress)
    return evaluate_predictions(classifier.taxonomy, predictions, rows, split), predictions


def write_hierarchy_report(out_dir: str | Path, classifier: HierarchyClassifier,
                           evaluations: Sequence[HierarchyEvaluation],
                           history: Sequence[Mapping[str, float]] | None = None,
                           title: str = "Hierarchy report") -> Path:
    """A markdown report: summary per split, taxonomy decisions, per-class table of the last level, confusion
    matrix PNGs of the upper levels, training curves."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    taxonomy = classifier.taxonomy
    lines = [f"# {title}", "", f"Variant `{classifier.config.variant}`, taxonomy "
             + " > ".join(f"{level} ({n})" for level, n in zip(taxonomy.levels, taxonomy.sizes, strict=True)), ""]
    for evaluation in evaluations:
        lines += [f"## Summary ({evaluation.split})", "", markdown.key_values(evaluation.summary), ""]
    decisions = taxonomy.report.lines()
    if decisions:
        lines += ["## Taxonomy decisions", "", *[f"- {line}" for line in decisions], ""]
    if history:
        plots.plot_training_curves(history, out / "training_curves.png")
        lines += ["![training curves](training_curves.png)", ""]
    for evaluation in evaluations[:1]:
        lines += [f"## Per-class results, {taxonomy.leaf_level} ({evaluation.split})", "",
                  markdown.table(evaluation.per_class.sort_values("support", ascending=False)), ""]
        for h, level in enumerate(taxonomy.levels[:-1]):
            plots.plot_confusion(evaluation.confusions[level], taxonomy.classes[h], out / f"confusion_{level}.png",
                                 title=f"{level} ({evaluation.split})")
            lines += [f"![confusion {level}](confusion_{level}.png)", ""]
    write_json(out / "metrics.json", {e.split: e.summary for e in evaluations})
    report = out / "report.md"
    write_text(report, "\n".join(lines))
    return report


# ---------------------------------------------------------------------------------------------------- training
class HierarchyObjective:
    """Loss and validation metrics over rows addressed by index: batches are ``(inputs, row_indices)``."""

    def __init__(self, taxonomy: Taxonomy, targets: np.ndarray):
        self.taxonomy = taxonomy
        self.targets = torch.as_tensor(targets, dtype=torch.long)

    def loss(self, model: nn.Module, batch: Sequence[torch.Tensor], device: torch.device) -> torch.Tensor:
        """Engine callback: the head's loss on one ``(inputs, rows)`` batch."""
        inputs, rows = batch[0], batch[1]
        return _head_of(model).loss(model(inputs.to(device)), self.targets[rows].to(device))

    def evaluator(self, loader: Any, n_rows: int, val_rows: np.ndarray, device: torch.device
                  ) -> Callable[[nn.Module], dict[str, float]]:
        """Engine callback: ``val_loss`` (NLL of the final last-level probabilities, comparable across variants),
        ``val_top1``, ``val_top5``, ``val_acc_<level>`` and ``val_consistency``."""
        truth = self.targets[val_rows].numpy()

        def evaluate(model: nn.Module) -> dict[str, float]:
            logits, _ = predict_outputs(model, loader, n_rows, device)
            outputs = {k: torch.as_tensor(v[val_rows]) for k, v in logits.items()}
            levels = [p.numpy() for p in _head_of(model).level_probabilities(outputs)]
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


def _feature_train_loader(features: np.ndarray, rows: np.ndarray, config: TrainConfig) -> DataLoader[Any]:
    """Shuffled ``(features, rows)`` batches; a last batch of one row is dropped, as batch norm cannot train on it."""
    dataset = TensorDataset(torch.as_tensor(features[rows]), torch.as_tensor(rows))
    return DataLoader(dataset, batch_size=config.batch_size, shuffle=True, drop_last=len(rows) % config.batch_size == 1,
                      generator=torch.Generator().manual_seed(config.seed))


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
    run_dir = Path(out_dir).with_name(Path(out_dir).name + ".run") if out_dir else None
    device = resolve_device(config.train.device)
    frozen: Backbone | None = None
    if config.mode != "finetune" and features is None:
        frozen = build_backbone(config.backbone)  # kept by the classifier: its weights id is saved with the head
        features = frozen_features(manifest, config.backbone, backbone=frozen, show_progress=show_progress)
    seed_everything(config.train.seed)  # initial weights repeat with the seed (whether or not features were cached)
    if config.mode == "finetune":
        head, backbone, result = _train_finetune(manifest, config, taxonomy, objective, train_rows, val_rows,
                                                 run_dir, console, show_progress)
        classifier = HierarchyClassifier(config, taxonomy, head, backbone=backbone)
        val_predictions = classifier.predict(manifest.subset(np.isin(np.arange(len(manifest)), val_rows)),
                                             show_progress=show_progress)
    else:
        assert features is not None
        if len(features) != len(manifest):
            raise DataError(f"{len(features)} feature rows for {len(manifest)} manifest rows")
        model = build_head(config, taxonomy, features.shape[1])
        loader = _feature_train_loader(features, train_rows, config.train)
        val_loader = tensor_loader([features[val_rows], torch.as_tensor(val_rows)], 2048, shuffle=False)
        evaluate = objective.evaluator(val_loader, len(manifest), val_rows, device)
        trainer = Trainer(model, config.train, objective.loss, evaluate, run_dir=run_dir, console=console,
                          show_progress=show_progress)
        result = trainer.fit(loader)
        classifier = HierarchyClassifier(config, taxonomy, _head_of(trainer.model.cpu()), backbone=frozen)
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


def _head_in_features(head_state: Mapping[str, torch.Tensor]) -> int:
    """Width of the features a saved hierarchy head reads (both head kinds start with a ``stem`` dense block)."""
    return int(head_state["stem.0.weight"].shape[1])


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
             _head_in_features(source.head.state_dict()))
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
    """Fine-tune backbone + head end to end on images (stem and first ``backbone.freeze`` stages frozen)."""
    backbone = build_backbone(config.backbone, finetune=True)
    head = build_head(config, taxonomy, backbone.num_features)
    if config.init_head is not None:
        head.load_state_dict(_probed_head(config, taxonomy, backbone.num_features).state_dict())
        console.print(f"fine-tuning from the head of {config.init_head} (linear probe, then fine-tune)")
    net = TaskNetwork(backbone, head)
    workers = default_workers() if config.backbone.num_workers is None else config.backbone.num_workers
    train_loader = image_row_loader(manifest, train_rows, train_transform(backbone.preprocess),
                                    config.train.batch_size, True, workers, config.train.seed)
    val_loader = image_row_loader(manifest, val_rows, eval_transform(backbone.preprocess), config.backbone.batch_size,
                                  False, workers, config.train.seed)
    evaluate = objective.evaluator(val_loader, len(manifest), val_rows, resolve_device(config.train.device))
    trainer = Trainer(net, config.train, objective.loss, evaluate, run_dir=run_dir, console=console,
                      show_progress=show_progress)
    result = trainer.fit(train_loader)
    net = trainer.model.cpu().eval()  # type: ignore[assignment]
    backbone_out: Any = net.backbone
    backbone_out.weights_id = state_fingerprint(backbone_out)
    return _head_of(net), backbone_out, result
