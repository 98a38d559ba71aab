"""The one composition of backbone and head (:class:`TaskNetwork`) and its inference graph."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fashionlens.models import InferenceGraph, TaskNetwork
from fashionlens.models.embedding import EmbeddingHead
from fashionlens.models.heads import TaggingHead


def test_network_is_backbone_then_head_and_trains_both() -> None:
    backbone, head = nn.Linear(10, 32), EmbeddingHead(32, dim=8, normalize=True)
    net = TaskNetwork(backbone, head)
    images = torch.randn(4, 10)
    assert torch.equal(net(images), head(backbone(images)))
    anchor, positive, negative = net(images[:1]), net(images[1:2]), net(images[2:3])  # one network, three roles
    ((anchor - positive).pow(2).sum() - (anchor - negative).pow(2).sum()).backward()
    assert backbone.weight.grad is not None and head.projection.weight.grad is not None
    assert [name for name, _ in net.named_children()] == ["backbone", "head"]  # saved parts are addressable


def test_inference_graph_returns_the_activated_outputs_in_the_given_order() -> None:
    torch.manual_seed(0)
    net = TaskNetwork(nn.Linear(10, 16), TaggingHead(16, 3, {"sleeve": 4}, hidden=8, dropout=0.0)).eval()

    def activate(raw: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"tags": torch.sigmoid(raw["tags"]), "class:sleeve": torch.softmax(raw["sleeve"], dim=1)}

    graph = InferenceGraph(net, activate, ["class:sleeve", "tags"]).eval()
    images = torch.randn(5, 10)
    sleeve, tags = graph(images)
    raw = net(images)
    assert torch.equal(tags, torch.sigmoid(raw["tags"])) and torch.equal(sleeve, torch.softmax(raw["sleeve"], dim=1))
    assert torch.allclose(sleeve.sum(dim=1), torch.ones(5))
    assert isinstance(graph(images), tuple)  # positional, as ONNX outputs are


def test_inference_graph_needs_an_output_and_names_a_missing_one() -> None:
    net = TaskNetwork(nn.Identity(), nn.Identity())
    with pytest.raises(ValueError, match="at least one output"):
        InferenceGraph(net, lambda raw: {"embeddings": raw}, [])
    with pytest.raises(KeyError, match="probabilities"):
        InferenceGraph(net, lambda raw: {"embeddings": raw}, ["probabilities"])(torch.zeros(1, 2))
