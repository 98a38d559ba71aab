"""Evaluation, reports and probability-level ensembles of taggers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np
import pandas as pd

from fashionlens import __version__, metrics
from fashionlens.data.records import Manifest
from fashionlens.errors import DataError, ModelError
from fashionlens.io import write_json, write_text
from fashionlens.reports import markdown, plots
from fashionlens.tasks.common import read_model_dir, save_model_dir
from fashionlens.tasks.labels import LabelSpace
from fashionlens.tasks.registry import KIND_KEY, VERSION_KEY, check_kind, load_model, register_model
from fashionlens.tasks.tagging import Predictions, Tagger, threshold_array, threshold_set, tune_thresholds
from fashionlens.thresholds import apply_thresholds, best_thresholds, fbeta_curve, topk_decode


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
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lines = [f"# {title}", ""]
    for evaluation in evaluations:
        lines += [f"## Summary ({evaluation.split})", "", markdown.key_values(evaluation.summary), ""]
    labels = tagger.labels
    if labels.tags and evaluations:
        first = evaluations[0]
        lines += [f"## Per-label results ({first.split}, tuned thresholds, F{beta:g})", "",
                  markdown.table(first.per_label), ""]
        grid = np.linspace(0.01, 0.99, 99)
        curves = {}
        for split, manifest in manifests.items():
            truth = labels.tag_targets(manifest)
            curves[split] = np.stack([fbeta_curve(truth[:, j], predictions[split].tags[:, j], grid, beta)
                                      for j in range(len(labels.tags))])
        plots.plot_threshold_curves(grid, curves, labels.tags, tagger.thresholds_for(beta),
                                    out / "threshold_curves.png", beta)
        lines += [f"![F{beta:g} vs threshold](threshold_curves.png)", ""]
    if history:
        plots.plot_training_curves(history, out / "training_curves.png")
        lines += ["![training curves](training_curves.png)", ""]
    for evaluation in evaluations[:1]:
        for head, table in evaluation.head_tables.items():
            lines += [f"## Head `{head}` ({evaluation.split})", "", markdown.table(table), ""]
            plots.plot_confusion(evaluation.confusions[head], labels.heads[head], out / f"confusion_{head}.png",
                                 title=head)
            lines += [f"![confusion {head}](confusion_{head}.png)", ""]
    write_json(out / "metrics.json", {e.split: e.summary for e in evaluations})
    report = out / "report.md"
    write_text(report, "\n".join(lines))
    return report


@register_model
class TaggerEnsemble:
    """Probability-level ensemble: a (weighted) mean of members' probabilities, then its own threshold sets.

    Like :class:`Tagger`, it keeps one threshold set per β (:meth:`fit_thresholds` tunes F1 and the asked β) and
    decides with F1 by default.
    """

    kind: ClassVar[str] = "ensemble"

    def __init__(self, members: Sequence[Tagger], weights: Sequence[float] | None = None,
                 thresholds: np.ndarray | None = None, member_dirs: Sequence[str] = (),
                 threshold_sets: dict[float, np.ndarray] | None = None):
        if not members:
            raise ModelError("an ensemble needs at least one member")
        first = members[0].labels
        for member in members[1:]:
            if member.labels.tags != first.tags or member.labels.heads != first.heads:
                raise ModelError("ensemble members predict different labels; train them on the same label space")
        weights = list(weights) if weights is not None else [1.0] * len(members)
        if len(weights) != len(members) or any(w < 0 for w in weights) or sum(weights) <= 0:
            raise ModelError(f"ensemble weights {weights} must be {len(members)} non-negative numbers, not all zero")
        self.members = list(members)
        self.weights = np.asarray(weights, dtype=np.float64) / sum(weights)
        self.labels = first
        self.threshold_sets = dict(threshold_sets or {})
        self._fixed = thresholds if thresholds is not None else np.full(len(first.tags), 0.5, dtype=np.float32)
        self.member_dirs = list(member_dirs)
        # The β that fit_thresholds tuned for: its set is what thresholds.json holds, as for a Tagger's config.beta.
        self.tuned_beta = next((b for b, v in self.threshold_sets.items()
                                if thresholds is not None and np.allclose(v, thresholds)), None)

    @property
    def thresholds(self) -> np.ndarray:
        """The default decision set: F1 when tuned, else the one set given (0.5 by default)."""
        if self.threshold_sets:
            return self.threshold_sets.get(1.0, self.threshold_sets[min(self.threshold_sets)])
        return self._fixed

    def thresholds_for(self, beta: float | None = None) -> np.ndarray:
        """The set tuned for F-beta (``None``: the default decision set)."""
        return threshold_set(self.threshold_sets, beta, self.thresholds, "ensemble")

    @property
    def tag_names(self) -> list[str]:
        """The first member's display names."""
        return self.members[0].tag_names

    def predict(self, manifest: Manifest, device: str | None = None, show_progress: bool = True,
                skip_bad_images: bool = False, runtime: str | None = None) -> Predictions:
        """Weighted mean of the members' probabilities (NaN rows for unreadable images with ``skip_bad_images``)."""
        outputs = [m.predict(manifest, device=device, show_progress=show_progress, skip_bad_images=skip_bad_images,
                             runtime=runtime) for m in self.members]
        tags = sum(w * o.tags for w, o in zip(self.weights, outputs, strict=True))
        heads = {h: sum(w * o.heads[h] for w, o in zip(self.weights, outputs, strict=True)) for h in self.labels.heads}
        return Predictions(tags=np.asarray(tags, dtype=np.float32), heads=heads)  # type: ignore[misc]

    def decide(self, predictions: Predictions, beta: float | None = None) -> np.ndarray:
        """Boolean decisions with the ensemble's F-``beta`` thresholds (default: the F1 set)."""
        return apply_thresholds(predictions.tags, self.thresholds_for(beta))

    def fit_thresholds(self, manifest: Manifest, beta: float = 2.0, show_progress: bool = True) -> Predictions:
        """Tune per-label thresholds for F1 and F-``beta`` on the ``val`` split of ``manifest``; returns its
        predictions."""
        rows = manifest.split_subset("val")
        predictions = self.predict(rows, show_progress=show_progress)
        truth = self.labels.tag_targets(rows)
        self.threshold_sets = {b: tune_thresholds(truth, predictions.tags, self.labels, b)
                               for b in sorted({1.0, float(beta)})}
        self.tuned_beta = float(beta)
        return predictions

    def save(self, path: str | Path) -> Path:
        """Write ``ensemble.json`` (member directories and weights), labels, thresholds (the set tuned for the β of
        :meth:`fit_thresholds`, as a tagger's ``thresholds.json`` holds its ``config.beta`` set) and every set."""
        sets = {f"{b:g}": dict(zip(self.labels.tags, map(float, v), strict=True))
                for b, v in sorted(self.threshold_sets.items())}
        documents = {"config": {KIND_KEY: self.kind, VERSION_KEY: __version__},
                     "ensemble": {"members": self.member_dirs, "weights": self.weights.tolist()},
                     "labels": self.labels.to_json(),
                     "thresholds": dict(zip(self.labels.tags, map(float, self.thresholds_for(self.tuned_beta)),
                                            strict=True)),
                     "threshold_sets": sets}
        return save_model_dir(path, {}, documents)

    @classmethod
    def load(cls, path: str | Path) -> TaggerEnsemble:
        """Load an ensemble directory and its members."""
        check_kind(path, cls.kind)  # ensembles of earlier versions have no config.json: they load too
        _, docs = read_model_dir(path, ["ensemble", "labels", "thresholds"], optional_json=["threshold_sets"])
        members = [Tagger.load(d) for d in docs["ensemble"]["members"]]
        labels = LabelSpace.from_json(docs["labels"])
        thresholds = threshold_array(docs["thresholds"], labels, f"{path}/thresholds.json")
        try:
            sets = {float(b): threshold_array(doc, labels, f"{path}/threshold_sets.json[{b}]")
                    for b, doc in (docs.get("threshold_sets") or {}).items()}
        except ValueError as error:
            raise ModelError(f"{path}/threshold_sets.json has a key that is not a beta: {error}") from error
        return cls(members, docs["ensemble"]["weights"], thresholds, docs["ensemble"]["members"], sets)


def load_tagger(path: str | Path) -> Tagger | TaggerEnsemble:
    """Load a tagger or an ensemble directory (:func:`~fashionlens.tasks.registry.load_model`, typed).

    Raises:
        ModelError: The directory holds no model, a model of no or an unknown kind, or one of another kind.
    """
    model: Tagger | TaggerEnsemble = load_model(path, kinds=(Tagger.kind, TaggerEnsemble.kind))
    return model


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


def threshold_result_curves(truth: np.ndarray, scores: np.ndarray, beta: float) -> Any:
    """Thresholds and F-beta curves of one split (exposed for benchmarks and plots)."""
    return best_thresholds(truth, scores, beta=beta)
