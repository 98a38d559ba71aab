"""Thumbnail grids of catalogue photos: letterboxed thumbnails and a captioned grid PNG for audit reports."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from PIL import Image

from fashionlens.data.images import load_image
from fashionlens.errors import DataError, ImageError
from fashionlens.reports.plots import save_figure


def thumbnail(path: str | Path, side: int) -> np.ndarray:
    """The image letterboxed into a white ``side`` x ``side`` square; a grey square if it cannot be read."""
    canvas = Image.new("RGB", (side, side), "white")
    try:
        image = load_image(path, max_side=side)
    except ImageError:
        return np.asarray(Image.new("RGB", (side, side), (200, 200, 200)))
    canvas.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
    return np.asarray(canvas)


def save_captioned_grid(paths: Sequence[str | Path], captions: Sequence[str], path: str | Path, title: str = "",
                        columns: int = 6, side: int = 160) -> Path:
    """Write a PNG grid of ``paths``, each with its caption (a few short lines) underneath.

    Raises:
        DataError: No image, or captions that do not line up with the images.
    """
    if not paths:
        raise DataError("a grid needs at least one image")
    if len(captions) != len(paths):
        raise DataError(f"{len(paths)} images but {len(captions)} captions")
    rows = -(-len(paths) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(1.9 * columns, 2.7 * rows), squeeze=False)
    for cell, axis in enumerate(axes.ravel()):
        axis.set_xticks([])
        axis.set_yticks([])
        if cell >= len(paths):
            axis.axis("off")
            continue
        axis.imshow(thumbnail(paths[cell], side))
        axis.set_xlabel(captions[cell], fontsize=6.5)
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    return save_figure(figure, path)
