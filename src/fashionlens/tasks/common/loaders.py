"""Data loaders of the tasks: in-memory arrays, image rows of a manifest, loose image files."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, TensorDataset

from fashionlens.data.dataset import ManifestImageDataset, collate_skipping
from fashionlens.data.records import Manifest
from fashionlens.errors import DataError


def manifest_of_paths(paths: Iterable[str | Path], name: str = "images") -> Manifest:
    """An unlabelled manifest of image files (for prediction on loose images)."""
    resolved = [str(Path(p).expanduser().resolve()) for p in paths]
    if not resolved:
        raise DataError("no image paths given")
    return Manifest(pd.DataFrame({"path": resolved}), name=name)


def tensor_loader(arrays: Iterable[np.ndarray | torch.Tensor], batch_size: int, shuffle: bool,
                  seed: int = 0, drop_last: bool = False) -> DataLoader[Any]:
    """A DataLoader over in-memory arrays (features and targets), seeded when shuffling."""
    tensors = [torch.as_tensor(a) for a in arrays]
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(TensorDataset(*tensors), batch_size=batch_size, shuffle=shuffle, generator=generator,
                      drop_last=drop_last)


def image_row_loader(manifest: Manifest, rows: np.ndarray, transform: Any, batch_size: int, shuffle: bool,
                     workers: int, seed: int) -> DataLoader[Any]:
    """``(images, manifest_rows)`` batches over the images of ``rows``: the fine-tuning loaders of every task.

    Unreadable images are skipped (``collate_skipping``) and each batch carries the manifest row of every image it
    kept, so a task's targets are looked up by row. A shuffled loader drops a last partial batch (batch norm
    cannot train on a single row).
    """
    dataset = ManifestImageDataset(manifest.subset(np.isin(np.arange(len(manifest)), rows)), transform)
    global_rows = torch.as_tensor(np.sort(rows))

    def collate(batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        images, local = collate_skipping(batch)
        return images, global_rows[local]

    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=workers, collate_fn=collate,
                      generator=torch.Generator().manual_seed(seed), drop_last=shuffle and len(rows) > batch_size)
