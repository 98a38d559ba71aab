"""Hierarchical category classification (masterCategory > subCategory > articleType) with HMCN-F.

A :class:`~fashionlens.tasks.hierarchy.taxonomy.Taxonomy` is built from the manifest's label columns (or a
user-written YAML tree), with its inconsistencies and rare classes resolved and reported; then a head on pooled
backbone features predicts one class per level. Variants:

* ``flat`` -- one softmax over the last level; upper levels are sums of their leaves (the baseline);
* ``hmcn`` -- HMCN-F (:class:`~fashionlens.models.hmcn.HMCNF`) with the local and global losses summed;
* ``hmcn_mtl`` -- HMCN-F with the two losses weighted by learned uncertainty.

Training modes, as for tagging: ``features`` (the head on cached frozen features) and ``finetune`` (backbone and head
end to end on images). Predictions are paths through the taxonomy with per-level probabilities; because HMCN-F's
levels are predicted separately, a greedy per-level path can break the tree, so the default answer is the best
*consistent* path and the evaluation reports how often the greedy one is inconsistent.
"""

from __future__ import annotations

from fashionlens.tasks.hierarchy.config import HierarchyConfig, TaxonomyConfig
from fashionlens.tasks.hierarchy.evaluate import (
    HierarchyEvaluation,
    evaluate_hierarchy,
    evaluate_predictions,
    write_hierarchy_report,
)
from fashionlens.tasks.hierarchy.model import HierarchyClassifier, HierarchyPredictions, build_head
from fashionlens.tasks.hierarchy.resolve import Conflict, TaxonomyReport, find_conflicts
from fashionlens.tasks.hierarchy.taxonomy import EncodedLabels, Taxonomy
from fashionlens.tasks.hierarchy.train import build_taxonomy, train_hierarchy

__all__ = [
    "Conflict",
    "EncodedLabels",
    "HierarchyClassifier",
    "HierarchyConfig",
    "HierarchyEvaluation",
    "HierarchyPredictions",
    "Taxonomy",
    "TaxonomyConfig",
    "TaxonomyReport",
    "build_head",
    "build_taxonomy",
    "evaluate_hierarchy",
    "evaluate_predictions",
    "find_conflicts",
    "train_hierarchy",
    "write_hierarchy_report",
]
