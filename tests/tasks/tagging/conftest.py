"""Synthetic tagging data and a quick config shared by the tagging tests."""

from __future__ import annotations

import numpy as np
import pandas as pd
from rich.console import Console

from fashionlens.data.records import Manifest
from fashionlens.engine import TrainConfig
from fashionlens.tasks.tagging import TaggingConfig, ThresholdConfig

QUIET = Console(quiet=True)


def synthetic(n: int = 600, dim: int = 16, seed: int = 0) -> tuple[Manifest, np.ndarray]:
    """Features where tag ``rare`` (8 % positives) and ``common`` depend on known directions, plus a 3-class head."""
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(n, dim)).astype(np.float32)
    rare = (features[:, 0] + 0.5 * rng.normal(size=n) > 1.4).astype(np.float32)
    common = (features[:, 1] + 0.5 * rng.normal(size=n) > 0).astype(np.float32)
    common[rng.random(n) < 0.2] = np.nan  # unlabelled entries
    head = np.array(["a", "b", "c"])[np.digitize(features[:, 2], [-0.5, 0.5])]
    split = np.where(np.arange(n) < n * 0.6, "train", np.where(np.arange(n) < n * 0.8, "val", "test"))
    frame = pd.DataFrame({"path": [f"/nonexistent/{i}.jpg" for i in range(n)], "split": split,
                          "tag:rare": rare, "tag:common": common, "class:shape": head})
    return Manifest(frame, name="synthetic"), features


def quick_config(method: str = "val", **kwargs: object) -> TaggingConfig:
    train = TrainConfig(epochs=25, lr=3e-3, batch_size=64, monitor="val_map", mode="max", early_stop_patience=8)
    return TaggingConfig(train=train, hidden=64, dropout=0.1, thresholds=ThresholdConfig(method=method),
                         **kwargs)  # type: ignore[arg-type]


def rows_of(manifest: Manifest, split: str) -> np.ndarray:
    return np.flatnonzero(manifest.frame["split"] == split)
