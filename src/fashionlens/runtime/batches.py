"""The one batched forward loop: a network (PyTorch module or runtime session) over ``(inputs, rows)`` batches.

Every prediction path ends in the same few lines -- run each batch, move the outputs to NumPy, put them at their rows
-- whether the inputs are images (feature extraction, fine-tuned validation) or pooled features (heads), and whether
the network is a PyTorch module or an onnxruntime session. They live here once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
import torch

Forward = Callable[[torch.Tensor], Any]
"""A network as the loop sees it: a batch of inputs in, a tensor/array or a ``{name: tensor/array}`` mapping out."""

SINGLE_OUTPUT = "output"
"""Name under which a network's single (unnamed) output is returned."""


def as_numpy(value: Any) -> np.ndarray:
    """A float32 NumPy array of a tensor or array output (on the CPU, detached)."""
    if isinstance(value, torch.Tensor):
        return np.asarray(value.detach().float().cpu().numpy())
    return np.asarray(value, dtype=np.float32)


def named_outputs(value: Any) -> dict[str, np.ndarray]:
    """A network's outputs as ``{name: (batch, width) array}`` (a single output is named :data:`SINGLE_OUTPUT`)."""
    if isinstance(value, Mapping):
        return {str(name): as_numpy(output) for name, output in value.items()}
    return {SINGLE_OUTPUT: as_numpy(value)}


@torch.inference_mode()
def forward_batches(forward: Forward, batches: Iterable[tuple[Any, Any]], n_rows: int,
                    device: torch.device | None = None,
                    on_batch: Callable[[np.ndarray, dict[str, np.ndarray]], None] | None = None,
                    ) -> tuple[dict[str, np.ndarray], list[int]]:
    """Run ``forward`` over ``(inputs, rows)`` batches and gather its outputs at their rows.

    Args:
        forward: The network (a module in eval mode, or a runtime's callable).
        batches: ``(inputs, rows)`` pairs: an input batch and the row index of each of its items (a batch may be
            empty, e.g. when every image of it failed to decode).
        n_rows: Rows of the result; rows never seen stay NaN.
        device: Where inputs are moved before the forward pass (``None``: left where they are).
        on_batch: Called with each batch's rows and outputs as they are computed (e.g. to write a cache shard).

    Returns:
        ``{name: (n_rows, width) float32}`` and the rows seen, in order.
    """
    collected: dict[str, np.ndarray] = {}
    seen: list[int] = []
    for inputs, rows in batches:
        row_index = np.asarray(rows.cpu().numpy() if isinstance(rows, torch.Tensor) else rows, dtype=np.int64)
        if len(row_index) == 0:
            continue
        if device is not None and isinstance(inputs, torch.Tensor):
            inputs = inputs.to(device, non_blocking=True)
        outputs = named_outputs(forward(inputs))
        for name, value in outputs.items():
            if name not in collected:
                collected[name] = np.full((n_rows, *value.shape[1:]), np.nan, dtype=np.float32)
            collected[name][row_index] = value
        seen += row_index.tolist()
        if on_batch is not None:
            on_batch(row_index, outputs)
    return collected, seen
