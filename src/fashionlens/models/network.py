"""The one composition of a backbone and a task head, and its inference graph.

Every task model is a backbone (images → pooled features, :class:`~fashionlens.models.backbones.Backbone`) followed
by a head (pooled features → raw outputs: logits, or embeddings). :class:`TaskNetwork` is that composition, in the
spirit of pytorch-metric-learning's ``InferenceModel(trunk, embedder)``: tagging, hierarchy and retrieval all
fine-tune it end to end. :class:`InferenceGraph` adds the task's output activation (sigmoid, softmax, per-level
probabilities) and returns the activated outputs as a tuple in a fixed order, which is what an exported ONNX graph
needs (its outputs are positional).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

Activation = Callable[[Any], Mapping[str, torch.Tensor]]
"""A task's output activation: the head's raw output → ``{output name: probabilities or embeddings}``."""


class TaskNetwork(nn.Module):
    """Backbone + head: images → the head's raw output (a tensor, or ``{name: tensor}``).

    Args:
        backbone: Images ``(B, 3, H, W)`` → pooled features ``(B, F)``.
        head: Pooled features → raw outputs.
    """

    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, images: torch.Tensor) -> Any:
        """The head's raw output on the images' pooled features."""
        return self.head(self.backbone(images))


class InferenceGraph(nn.Module):
    """A :class:`TaskNetwork` with its task's output activation: images → activated outputs, in a fixed order.

    Args:
        network: Backbone + head.
        activation: Maps the head's raw output to ``{name: tensor}`` (see :meth:`TaskModel.activate`).
        output_names: Which activated outputs to return, in this order.
    """

    def __init__(self, network: TaskNetwork, activation: Activation, output_names: Sequence[str]):
        super().__init__()
        if not output_names:
            raise ValueError("an inference graph needs at least one output")
        self.network = network
        self.activation = activation
        self.output_names = list(output_names)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The activated outputs named by :attr:`output_names`, in that order."""
        outputs = self.activation(self.network(images))
        return tuple(outputs[name] for name in self.output_names)
