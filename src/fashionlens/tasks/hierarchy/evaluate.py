"""Evaluation of a hierarchy classifier on a split, and its markdown report."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from fashionlens import metrics
from fashionlens.data.records import Manifest
from fashionlens.errors import DataError
from fashionlens.reports import markdown, plots
from fashionlens.tasks.common.report import MarkdownReport
from fashionlens.tasks.hierarchy.model import HierarchyClassifier, HierarchyPredictions
from fashionlens.tasks.hierarchy.taxonomy import EncodedLabels, Taxonomy

TOP_K = (1, 3, 5)


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
    taxonomy = classifier.taxonomy
    report = MarkdownReport(out_dir, title, [f"Variant `{classifier.config.variant}`, taxonomy " + " > ".join(
        f"{level} ({n})" for level, n in zip(taxonomy.levels, taxonomy.sizes, strict=True)), ""])
    report.summaries(evaluations)
    decisions = taxonomy.report.lines()
    if decisions:
        report.add("## Taxonomy decisions", "", *[f"- {line}" for line in decisions], "")
    report.training_curves(history)
    for evaluation in evaluations[:1]:
        report.add(f"## Per-class results, {taxonomy.leaf_level} ({evaluation.split})", "",
                   markdown.table(evaluation.per_class.sort_values("support", ascending=False)), "")
        for h, level in enumerate(taxonomy.levels[:-1]):
            plots.plot_confusion(evaluation.confusions[level], taxonomy.classes[h],
                                 report.out / f"confusion_{level}.png", title=f"{level} ({evaluation.split})")
            report.add(f"![confusion {level}](confusion_{level}.png)", "")
    return report.save(evaluations)
