"""Hierarchy evaluation (``tasks/hierarchy/evaluate.py``): the metrics on a known case."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fashionlens.data.records import Manifest
from fashionlens.tasks.hierarchy import HierarchyPredictions, evaluate_predictions
from fashionlens.tasks.hierarchy.taxonomy import Taxonomy


def test_metrics_on_a_known_case() -> None:
    taxonomy = Taxonomy(levels=("type", "category"), classes=(("lower", "upper"), ("Jeans", "Skirt", "Tee", "Top")),
                        parents=((), (0, 0, 1, 1)))
    frame = pd.DataFrame({"path": list("abcd"), "class:category": ["Jeans", "Skirt", "Tee", "Kimono"]})
    upper = np.array([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7], [0.5, 0.5]])
    leaf = np.array([[0.6, 0.3, 0.05, 0.05],   # right at both levels
                     [0.1, 0.3, 0.4, 0.2],     # wrong leaf, Skirt 2nd; greedy path upper > Tee is consistent
                     [0.1, 0.5, 0.3, 0.1],     # greedy upper > Skirt is inconsistent; best path upper > Tee
                     [0.25, 0.25, 0.25, 0.25]])  # unknown label: not scored
    predictions = HierarchyPredictions.from_probabilities(taxonomy, [upper, leaf])
    evaluation = evaluate_predictions(taxonomy, predictions, Manifest(frame), "val")
    summary = evaluation.summary
    assert (summary["rows"], summary["scored"], summary["excluded"]) == (4, 3, 1)
    assert summary["top1"] == pytest.approx(1 / 3) and summary["top3"] == pytest.approx(1.0)
    assert summary["top1_all_rows"] == pytest.approx(1 / 4)
    assert summary["acc_type"] == pytest.approx(2 / 3)
    assert summary["consistency"] == pytest.approx(2 / 3)
    assert summary["path_acc_greedy"] == pytest.approx(1 / 3)
    assert summary["path_acc"] == pytest.approx(2 / 3) and summary["top1_consistent"] == pytest.approx(2 / 3)
    assert evaluation.confusions["type"].tolist() == [[1, 1], [0, 1]]
    assert evaluation.per_class.set_index("class").loc["Jeans", "recall"] == 1.0
