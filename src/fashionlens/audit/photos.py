"""Broken or odd photos: files that do not decode, tiny or extreme-aspect images, near-blank images, and photos far
from the rest of the catalogue in embedding space (out of distribution: a model shot, a size chart, a placeholder).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import faiss
import numpy as np
import pandas as pd
from PIL import Image

from fashionlens.data.images import decode_reduced
from fashionlens.errors import ImageError

#: Long side of the thumbnail the blank check looks at (JPEG draft decoding makes it cheap).
_PROBE_SIDE = 64


@dataclass(frozen=True)
class PhotoLimits:
    """What counts as an odd photo.

    Attributes:
        min_side: Shorter side below this many pixels is ``tiny``.
        max_aspect: Long over short side above this is ``extreme-aspect``.
        blank_std: Grey-level standard deviation (0-255) below this is ``near-blank``.
        outlier_z: Robust z-score of the neighbour distance above this is ``outlier``.
        outlier_neighbours: Neighbours whose mean cosine distance scores a photo's outlyingness.
    """

    min_side: int = 32
    max_aspect: float = 4.0
    blank_std: float = 4.0
    outlier_z: float = 5.0
    outlier_neighbours: int = 10


def inspect_photo(path: str, limits: PhotoLimits) -> tuple[str, str, int, int, float]:
    """``(problem, detail, width, height, grey std)`` of one file; ``problem`` is ``""`` for a normal photo."""
    try:  # one decode: the file's upright size, and the pixels (a JPEG straight at a reduced scale)
        decoded = decode_reduced(path, max_side=_PROBE_SIDE)
    except ImageError as error:
        return "unreadable", str(error).splitlines()[0], 0, 0, float("nan")
    width, height = decoded.full_size
    thumbnail = decoded.image
    thumbnail.thumbnail((_PROBE_SIDE, _PROBE_SIDE), Image.Resampling.BILINEAR)
    std = float(np.asarray(thumbnail.convert("L"), dtype=np.float32).std())
    short, long = min(width, height), max(width, height)
    if short < limits.min_side:
        return "tiny", f"{width}x{height} pixels (min side {limits.min_side})", width, height, std
    if long / short > limits.max_aspect:
        detail = f"{width}x{height} (aspect {long / short:.1f} > {limits.max_aspect})"
        return "extreme-aspect", detail, width, height, std
    if std < limits.blank_std:
        return "near-blank", f"grey-level std {std:.1f} < {limits.blank_std}", width, height, std
    return "", "", width, height, std


def photo_table(paths: Sequence[str], limits: PhotoLimits,
                progress: Callable[[int], None] | None = None) -> pd.DataFrame:
    """One row per file: ``row``, ``problem`` (empty when fine), ``detail``, ``width``, ``height``, ``grey_std``."""
    rows = []
    for row, path in enumerate(paths):
        problem, detail, width, height, std = inspect_photo(path, limits)
        rows.append({"row": row, "problem": problem, "detail": detail, "width": width, "height": height,
                     "grey_std": round(std, 2)})
        if progress is not None:
            progress(1)
    return pd.DataFrame(rows, columns=["row", "problem", "detail", "width", "height", "grey_std"])


def outlier_scores(vectors: np.ndarray, neighbours: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Mean cosine distance of each row to its nearest other rows, and its robust z-score (median / MAD).

    Near-duplicates pull a photo's distance down, so its own copies do not hide an outlier only when it has fewer
    copies than ``neighbours``; that is the usual case.
    """
    n = len(vectors)
    if n < 3:
        return np.zeros(n), np.zeros(n)
    unit = np.ascontiguousarray(vectors, dtype=np.float32).copy()
    faiss.normalize_L2(unit)
    index = faiss.IndexFlatIP(unit.shape[1])
    index.add(unit)
    k = min(neighbours + 1, n)
    scores, rows = index.search(unit, k)
    own = rows == np.arange(n)[:, None]
    similarity = np.where(own, np.nan, scores)
    distance = 1.0 - np.nanmean(similarity[:, : k], axis=1)
    median = float(np.median(distance))
    mad = float(np.median(np.abs(distance - median))) * 1.4826 or 1e-12
    return distance, (distance - median) / mad
