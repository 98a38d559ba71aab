"""Evaluation of a tagger on a split, its markdown report, and the prediction table."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fashionlens import metrics
from fashionlens.data.records import Manifest
from fashionlens.errors import DataError
from fashionlens.reports import markdown, plots
from fashionlens.tasks.common.report import MarkdownReport
from fashionlens.tasks.labels import LabelSpace
from fashionlens.tasks.tagging.model import Predictions, TagPredictor
from fashionlens.tasks.tagging.thresholds import apply_thresholds, fbeta_curve, topk_decode


@dataclass
class TaggingEvaluation:
    """Figures of a tagger on one split."""

    split: str
    summary: dict[str, float]
    per_label: pd.DataFrame
    head_tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    confusions: dict[str, np.ndarray] = field(default_factory=dict)


def evaluate_predictions(labels: LabelSpace, thresholds: np.ndarray, predictions: Predictions, manifest: Manifest,
                         split: str, beta: float = 2.0, focus: Sequence[str] | None = None,
                         top_k: int = 3) -> TaggingEvaluation:
    """Score ``predictions`` against the labels of ``manifest``.

    Summary keys: ``macro_f{beta}@0.5``, ``macro_f{beta}@tuned``, ``macro_f1@tuned``, ``sample_f1@tuned``,
    ``micro_f1@tuned`` (each also ``@0.5``), ``mAP``, ``macro_f{beta}@top{k}`` (top-k decoding), per-head
    ``acc_<head>``, and, when ``focus`` names a subset of labels, the same macro figures over that subset (suffix
    ``[focus]``). ``thresholds`` are the "tuned" ones: pass the set tuned for ``beta`` to score the paper's metric.
    """
    summary: dict[str, float] = {}
    per_label = pd.DataFrame()
    if labels.tags:
        truth = labels.tag_targets(manifest)
        tuned = apply_thresholds(predictions.tags, thresholds)
        half = predictions.tags >= 0.5
        summary[f"macro_f{beta:g}@0.5"] = metrics.macro_fbeta(truth, half, beta=beta)
        summary[f"macro_f{beta:g}@tuned"] = metrics.macro_fbeta(truth, tuned, beta=beta)
        k = min(top_k, len(labels.tags))
        summary[f"macro_f{beta:g}@top{k}"] = metrics.macro_fbeta(truth, topk_decode(predictions.tags, k), beta=beta)
        summary["macro_f1@0.5"] = metrics.macro_fbeta(truth, half, beta=1.0)
        summary["macro_f1@tuned"] = metrics.macro_fbeta(truth, tuned, beta=1.0)
        summary["sample_f1@0.5"] = metrics.sample_f1(truth, half)
        summary["sample_f1@tuned"] = metrics.sample_f1(truth, tuned)
        summary["micro_f1@0.5"] = metrics.micro_fbeta(truth, half, beta=1.0)
        summary["micro_f1@tuned"] = metrics.micro_fbeta(truth, tuned, beta=1.0)
        summary["mAP"] = metrics.mean_average_precision(truth, predictions.tags)
        per_label = metrics.per_label_scores(truth, tuned, beta=beta, names=labels.tags)
        per_label.insert(1, "threshold", thresholds)
        per_label["ap"] = metrics.average_precision_per_label(truth, predictions.tags)
        if focus:
            missing = [f for f in focus if f not in labels.tags]
            if missing:
                raise DataError(f"focus label(s) {missing} are not predicted by this tagger")
            columns = [labels.tags.index(f) for f in focus]
            summary["macro_f1@tuned[focus]"] = metrics.macro_fbeta(truth[:, columns], tuned[:, columns], beta=1.0)
            summary[f"macro_f{beta:g}@tuned[focus]"] = metrics.macro_fbeta(truth[:, columns], tuned[:, columns],
                                                                            beta=beta)
            summary["macro_f1@0.5[focus]"] = metrics.macro_fbeta(truth[:, columns], half[:, columns], beta=1.0)
    head_tables, confusions = {}, {}
    for head, classes in labels.heads.items():
        target = labels.head_targets(manifest)[head]
        labelled = target >= 0
        if not labelled.any():
            continue
        probs = predictions.heads[head][labelled]
        summary.update({f"{k}_{head}": v for k, v in metrics.topk_accuracies(
            target[labelled], probs, ks=[k for k in (1, 3) if k <= len(classes)]).items()})
        predicted = probs.argmax(axis=1)
        head_tables[head] = metrics.per_class_table(target[labelled], predicted, classes)
        confusions[head] = metrics.confusion_matrix(target[labelled], predicted, len(classes))
    return TaggingEvaluation(split=split, summary=summary, per_label=per_label, head_tables=head_tables,
                             confusions=confusions)


def evaluate_tagger(tagger: TagPredictor, manifest: Manifest, split: str = "val", beta: float = 2.0,
                    focus: Sequence[str] | None = None, show_progress: bool = True
                    ) -> tuple[TaggingEvaluation, Predictions]:
    """Predict one split of ``manifest`` and score it with the tagger's F-``beta`` thresholds (see
    :func:`evaluate_predictions`)."""
    rows = manifest.split_subset(split)
    predictions = tagger.predict(rows, show_progress=show_progress)
    thresholds = tagger.thresholds_for(beta)
    return evaluate_predictions(tagger.labels, thresholds, predictions, rows, split, beta, focus), predictions


def write_report(out_dir: str | Path, tagger: TagPredictor, evaluations: Sequence[TaggingEvaluation],
                 manifests: dict[str, Manifest], predictions: dict[str, Predictions], beta: float = 2.0,
                 history: Sequence[dict[str, float]] | None = None, title: str = "Tagging report") -> Path:
    """A markdown report with the per-label table and PNG plots (threshold curves per split, training curves,
    confusion matrices of the multi-class heads)."""
    report = MarkdownReport(out_dir, title)
    report.summaries(evaluations)
    labels = tagger.labels
    if labels.tags and evaluations:
        first = evaluations[0]
        report.add(f"## Per-label results ({first.split}, tuned thresholds, F{beta:g})", "",
                   markdown.table(first.per_label), "")
        grid = np.linspace(0.01, 0.99, 99)
        curves = {}
        for split, manifest in manifests.items():
            truth = labels.tag_targets(manifest)
            curves[split] = np.stack([fbeta_curve(truth[:, j], predictions[split].tags[:, j], grid, beta)
                                      for j in range(len(labels.tags))])
        plots.plot_threshold_curves(grid, curves, labels.tags, tagger.thresholds_for(beta),
                                    report.out / "threshold_curves.png", beta)
        report.add(f"![F{beta:g} vs threshold](threshold_curves.png)", "")
    report.training_curves(history)
    for evaluation in evaluations[:1]:
        for head, table in evaluation.head_tables.items():
            report.add(f"## Head `{head}` ({evaluation.split})", "", markdown.table(table), "")
            plots.plot_confusion(evaluation.confusions[head], labels.heads[head],
                                 report.out / f"confusion_{head}.png", title=head)
            report.add(f"![confusion {head}](confusion_{head}.png)", "")
    return report.save(evaluations)


def predictions_table(paths: Sequence[str], predictor: TagPredictor, predictions: Predictions,
                      beta: float | None = None) -> pd.DataFrame:
    """One row per image: the tags decided with the F-``beta`` threshold set (default F1), ``tag_probs`` (each
    decided tag with its probability, for reading), each tag's probability, each head's top class and probability.

    Tags carry the names that say what a positive means (:attr:`Tagger.tag_names`, e.g. ``gender=female``).
    """
    decisions = predictor.decide(predictions, beta)
    names = predictor.tag_names
    columns: dict[str, Any] = {"path": list(paths)}
    columns["tags"] = [";".join(t for t, d in zip(names, row, strict=True) if d) for row in decisions]
    columns["tag_probs"] = [" ".join(f"{names[j]}:{predictions.tags[i, j]:.2f}"
                                     for j in np.argsort(-predictions.tags[i], kind="stable") if decisions[i, j])
                            for i in range(len(decisions))]
    for j, tag in enumerate(names):
        columns[f"p:{tag}"] = np.round(predictions.tags[:, j], 4)
    for head, classes in predictor.labels.heads.items():
        probs = predictions.heads[head]
        columns[f"class:{head}"] = [classes[i] for i in probs.argmax(axis=1)]
        columns[f"p:{head}"] = np.round(probs.max(axis=1), 4)
    return pd.DataFrame(columns)

