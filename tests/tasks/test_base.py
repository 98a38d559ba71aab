"""The common base of the task models: one activation serves prediction and the exported inference graph, so
``inference_graph()(images)`` equals ``activate(network()(images))`` and ``predict_features`` of the same images'
features, for every kind; and ``backbone`` is a property everywhere."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from fashionlens.models import Backbone, InferenceGraph, TaskNetwork
from fashionlens.tasks.hierarchy import HierarchyPredictions
from fashionlens.tasks.tagging import Predictions

from .conftest import TASK_MODELS, tiny_hierarchy, tiny_tagger


def _as_outputs(model: Any, predictions: Any) -> dict[str, np.ndarray]:
    """A model's task-level predictions back as ``{output name: array}``."""
    if isinstance(predictions, Predictions):
        return {"tags": predictions.tags, **{f"class:{h}": p for h, p in predictions.heads.items()}}
    if isinstance(predictions, HierarchyPredictions):
        return dict(zip(model.output_names, predictions.probabilities, strict=True))
    return {"embeddings": predictions}


@pytest.mark.parametrize("name", sorted(TASK_MODELS))
def test_inference_graph_equals_activated_network_and_predict_features(name: str) -> None:
    model = TASK_MODELS[name]()
    images = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    graph = model.inference_graph()
    assert isinstance(graph, InferenceGraph) and isinstance(graph.network, TaskNetwork)
    assert graph.network.backbone is model.backbone and graph.network.head is model.head
    with torch.no_grad():
        outputs = graph(images)
        activated = model.activate(model.network()(images))
        features = model.backbone(images).numpy()
    assert len(outputs) == len(model.output_names) == len(activated)
    predicted = _as_outputs(model, model.predict_features(features))
    for name_, output in zip(model.output_names, outputs, strict=True):
        assert torch.equal(output, activated[name_]), name_
        np.testing.assert_allclose(predicted[name_], output.numpy(), atol=1e-5, err_msg=name_)


def test_activations_are_probabilities_and_named_per_task() -> None:
    tagger, hierarchy = tiny_tagger("features"), tiny_hierarchy("features")
    assert tagger.output_names == ["tags", "class:sleeve"]
    assert hierarchy.output_names == ["level:master", "level:article"]
    features = torch.randn(4, tagger.head.hidden[0].in_features)  # type: ignore[index]
    tags = tagger.activate(tagger.head(features))
    assert torch.allclose(tags["tags"], torch.sigmoid(tagger.head(features)["tags"]))
    assert torch.allclose(tags["class:sleeve"].sum(dim=1), torch.ones(4))
    levels = hierarchy.activate(hierarchy.head(features))
    assert all(torch.allclose(p.sum(dim=1), torch.ones(4), atol=1e-5) for p in levels.values())


def test_backbone_is_a_property_built_once_for_feature_models() -> None:
    for build in TASK_MODELS.values():
        model = build()
        assert isinstance(model.backbone, Backbone) and model.backbone is model.backbone
        assert not any(p.requires_grad for p in model.backbone.parameters())  # inference: fully frozen


def test_nan_feature_rows_stay_nan_rows() -> None:
    """Unreadable images reach the heads as NaN feature rows (``skip_bad_images``) and must come out NaN, not as a
    confident prediction."""
    tagger = tiny_tagger("features")
    features = np.random.default_rng(0).normal(size=(3, tagger.head.hidden[0].in_features))  # type: ignore[index]
    features[1] = np.nan
    predictions = tagger.predict_features(features)
    assert np.isnan(predictions.tags[1]).all() and np.isfinite(predictions.tags[[0, 2]]).all()
