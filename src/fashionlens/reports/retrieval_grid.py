"""The retrieval results grid (the seed paper's Figure 4): each query photo followed by its top results.

True matches are outlined in thick green, other results in thin grey, so a reader sees at a glance where (and
whether) the right item came up; queries are outlined in blue.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt

from fashionlens.errors import DataError
from fashionlens.reports.image_grid import thumbnail
from fashionlens.reports.plots import save_figure

MATCH_COLOUR = "#1a9b3c"
OTHER_COLOUR = "#bbbbbb"
QUERY_COLOUR = "#1f5fbf"


def _frame(axis: plt.Axes, colour: str, width: float) -> None:
    axis.set_xticks([])
    axis.set_yticks([])
    for spine in axis.spines.values():
        spine.set_edgecolor(colour)
        spine.set_linewidth(width)


def save_results_grid(query_paths: Sequence[str | Path], result_paths: Sequence[Sequence[str | Path]],
                      relevant: Sequence[Sequence[bool]], path: str | Path, title: str = "", columns: int = 10,
                      query_labels: Sequence[str] | None = None, side: int = 160) -> Path:
    """Write a PNG grid: one row per query, the query then its first ``columns`` results, true matches outlined.

    Args:
        query_paths: Query images.
        result_paths: Ranked result images of each query (best first).
        relevant: Whether each result is a true match, aligned with ``result_paths``.
        path: PNG file to write (atomically).
        title: Figure title; say "simulated" there when the queries are simulated street views.
        columns: Results shown per query.
        query_labels: Caption under each query (e.g. its item id).
        side: Thumbnail side in pixels.

    Raises:
        DataError: The three sequences do not line up, or there is no query.
    """
    if not query_paths:
        raise DataError("a results grid needs at least one query")
    if len(result_paths) != len(query_paths) or len(relevant) != len(query_paths):
        raise DataError(f"{len(query_paths)} queries but {len(result_paths)} result lists and {len(relevant)} "
                        f"relevance lists")
    for row, (results, flags) in enumerate(zip(result_paths, relevant, strict=True)):
        if len(results) != len(flags):
            raise DataError(f"query {row} has {len(results)} results but {len(flags)} relevance flags")
    figure, axes = plt.subplots(len(query_paths), columns + 1, figsize=(1.3 * (columns + 1), 1.45 * len(query_paths)),
                                squeeze=False)
    for row, query in enumerate(query_paths):
        axes[row, 0].imshow(thumbnail(query, side))
        _frame(axes[row, 0], QUERY_COLOUR, 3.0)
        axes[row, 0].set_xlabel(query_labels[row] if query_labels else "query", fontsize=6)
        for column in range(columns):
            axis = axes[row, column + 1]
            if column >= len(result_paths[row]):
                axis.axis("off")
                continue
            axis.imshow(thumbnail(result_paths[row][column], side))
            match = bool(relevant[row][column])
            _frame(axis, MATCH_COLOUR if match else OTHER_COLOUR, 4.0 if match else 0.8)
            if row == 0:
                axis.set_title(f"#{column + 1}", fontsize=7)
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    return save_figure(figure, path)
