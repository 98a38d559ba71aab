"""A PyTorch dataset over a manifest's images.

Items are ``(image_tensor, row_index)``: tasks keep their own target arrays (built once from the manifest) and
index them with ``row_index``, so one dataset class serves tagging, hierarchy and retrieval alike.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from PIL import Image
from torch.utils.data import Dataset, default_collate

from fashionlens.data.images import decode_for_model
from fashionlens.data.records import Manifest
from fashionlens.errors import ImageError

Sample = tuple[torch.Tensor, int]


class ManifestImageDataset(Dataset[Sample | None]):
    """Decode (by the one model-input policy, :func:`~fashionlens.data.images.decode_for_model`), crop (when a box
    exists) and transform the images of a manifest.

    Args:
        manifest: Rows to read.
        transform: Maps an RGB PIL image to a tensor.
        skip_bad_images: When true, an unreadable image yields ``None`` (dropped by :func:`collate_skipping`
            and counted by the caller); when false, it raises :class:`ImageError` naming the file.
    """

    def __init__(self, manifest: Manifest, transform: Callable[[Image.Image], torch.Tensor],
                 skip_bad_images: bool = False):
        self.paths = manifest.frame["path"].tolist()
        self.boxes = _boxes(manifest)
        self.transform = transform
        self.skip_bad_images = skip_bad_images

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Sample | None:
        try:
            image = decode_for_model(self.paths[index], bbox=self.boxes[index]).image
        except ImageError:
            if self.skip_bad_images:
                return None
            raise
        return self.transform(image), index


def _boxes(manifest: Manifest) -> list[tuple[float, float, float, float] | None]:
    frame = manifest.frame[["bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1"]]
    valid = frame.notna().all(axis=1).to_numpy()
    values = frame.to_numpy(dtype=float)
    return [tuple(row) if ok else None for row, ok in zip(values, valid, strict=True)]  # type: ignore[misc]


def collate_skipping(batch: Sequence[Sample | None]) -> tuple[torch.Tensor, torch.Tensor]:
    """Collate ``(image, index)`` pairs, dropping the ``None`` left by unreadable images."""
    kept = [item for item in batch if item is not None]
    if not kept:
        return torch.empty(0), torch.empty(0, dtype=torch.long)
    images, indices = default_collate(kept)
    return images, indices
