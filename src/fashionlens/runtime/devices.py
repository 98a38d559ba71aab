"""Device, seeding and DataLoader settings shared by every task."""

from __future__ import annotations

import os
import random

import numpy as np
import torch

from fashionlens.errors import ConfigError

RUNTIMES = ("auto", "torch", "onnx")
"""Inference runtimes: ``torch`` (PyTorch, channels-last on CPU), ``onnx`` (onnxruntime on CPU), ``auto`` (onnx on
CPU, torch on CUDA)."""


def check_runtime(runtime: str) -> str:
    """``runtime`` when it is one of :data:`RUNTIMES`, else a one-line :class:`ConfigError`."""
    if runtime not in RUNTIMES:
        raise ConfigError(f"unknown runtime {runtime!r}; use one of {', '.join(RUNTIMES)}")
    return runtime


def resolve_device(device: str | None = None) -> torch.device:
    """``"auto"``/``None`` picks CUDA when present, else CPU; otherwise the named device.

    A bare ``cuda`` means this process's GPU: ``cuda:$LOCAL_RANK`` under torchrun.
    """
    if device in (None, "auto"):
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and "LOCAL_RANK" in os.environ:
        return torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return torch.device(device)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) so runs repeat."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)


def default_workers() -> int:
    """DataLoader workers: one per spare core, at most 8 (0 on a single-core machine)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(0, min(8, cores - 1))
