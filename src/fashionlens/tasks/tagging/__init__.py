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

from fashionlens.tasks.tagging.config import TaggingConfig, ThresholdConfig
from fashionlens.tasks.tagging.ensemble import TaggerEnsemble, load_tagger
from fashionlens.tasks.tagging.evaluate import (
    TaggingEvaluation,
    evaluate_predictions,
    evaluate_tagger,
    predictions_table,
    write_report,
)
from fashionlens.tasks.tagging.model import EpochSelectedHead, PerLabelHeads, Predictions, Tagger, TagPredictor
from fashionlens.tasks.tagging.objective import TaggingObjective
from fashionlens.tasks.tagging.thresholds import apply_thresholds, select_thresholds, tune_thresholds
from fashionlens.tasks.tagging.train import train_tagger

__all__ = [
    "EpochSelectedHead",
    "PerLabelHeads",
    "Predictions",
    "TagPredictor",
    "Tagger",
    "TaggerEnsemble",
    "TaggingConfig",
    "TaggingEvaluation",
    "TaggingObjective",
    "ThresholdConfig",
    "apply_thresholds",
    "evaluate_predictions",
    "evaluate_tagger",
    "load_tagger",
    "predictions_table",
    "select_thresholds",
    "train_tagger",
    "tune_thresholds",
    "write_report",
]
