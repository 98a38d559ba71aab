"""PNG plots for reports: threshold curves, training curves, confusion matrices, retrieval grids."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from fashionlens.io import atomic_path


def save_figure(figure: Figure, path: str | Path) -> Path:
    """Write ``figure`` as PNG atomically and close it."""
    path = Path(path)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    return path


def plot_threshold_curves(grid: np.ndarray, curves: Mapping[str, np.ndarray], names: Sequence[str],
                          thresholds: np.ndarray, path: str | Path, beta: float = 2.0, columns: int = 5) -> Path:
    """Per-label F-beta against threshold, one panel per label, the chosen threshold marked.

    Args:
        grid: Thresholds at which the curves were evaluated.
        curves: Split name (``"val"``, ``"test"``) → ``(labels, len(grid))`` F-beta values.
        names: Label names.
        thresholds: The chosen per-label thresholds.
        path: PNG file to write.
        beta: The F-beta used (for the axis label).
        columns: Panels per row.
    """
    rows = max(1, math.ceil(len(names) / columns))
    figure, axes = plt.subplots(rows, columns, figsize=(3.0 * columns, 2.3 * rows), squeeze=False, sharex=True,
                                sharey=True)
    for index, axis in enumerate(axes.flat):
        if index >= len(names):
            axis.axis("off")
            continue
        for split, values in curves.items():
            axis.plot(grid, values[index], label=split, linewidth=1.2)
        axis.axvline(float(thresholds[index]), color="k", linestyle="--", linewidth=0.8)
        axis.set_title(names[index], fontsize=8)
        axis.set_ylim(0, 1)
        axis.tick_params(labelsize=7)
    axes[0, 0].legend(fontsize=7)
    figure.supxlabel("threshold")
    figure.supylabel(f"F{beta:g}")
    return save_figure(figure, path)


def plot_training_curves(history: Sequence[Mapping[str, float]], path: str | Path) -> Path:
    """Loss and validation metrics per epoch."""
    figure, (loss_axis, metric_axis) = plt.subplots(1, 2, figsize=(10, 3.5))
    epochs = [h["epoch"] for h in history]
    for key in ("train_loss", "val_loss"):
        if history and key in history[0]:
            loss_axis.plot(epochs, [h[key] for h in history], label=key)
    loss_axis.set_xlabel("epoch")
    loss_axis.legend()
    for key in sorted(history[0] if history else {}):
        if key.startswith("val_") and key != "val_loss":
            metric_axis.plot(epochs, [h[key] for h in history], label=key)
    metric_axis.set_xlabel("epoch")
    metric_axis.legend(fontsize=7)
    return save_figure(figure, path)


def plot_confusion(matrix: np.ndarray, class_names: Sequence[str], path: str | Path, title: str = "") -> Path:
    """A row-normalised confusion matrix (rows = truth)."""
    size = max(4.0, 0.35 * len(class_names) + 2)
    figure, axis = plt.subplots(figsize=(size, size))
    totals = matrix.sum(axis=1, keepdims=True)
    normalised = np.divide(matrix, totals, out=np.zeros_like(matrix, dtype=float), where=totals > 0)
    axis.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    axis.set_xticks(range(len(class_names)), class_names, rotation=90, fontsize=7)
    axis.set_yticks(range(len(class_names)), class_names, fontsize=7)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    if len(class_names) <= 12:
        for (i, j), value in np.ndenumerate(matrix):
            if value:
                axis.text(j, i, str(value), ha="center", va="center", fontsize=7)
    axis.set_title(title)
    return save_figure(figure, path)
