"""The training plumbing of every task: one engine run, the one fine-tuning driver, batched raw outputs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from fashionlens.runtime import forward_batches


def predict_outputs(model: torch.nn.Module, loader: DataLoader[Any] | Sequence[Any], n_rows: int,
                    device: torch.device) -> tuple[dict[str, np.ndarray], list[int]]:
    """Raw outputs (logits) per output name of ``model`` in eval mode over ``(inputs, rows)`` batches, aligned to
    rows, and the rows seen (:func:`~fashionlens.runtime.forward_batches`)."""
    model.eval()
    return forward_batches(model, loader, n_rows, device)
