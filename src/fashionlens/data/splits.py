"""Reproducible, stratified train/val/test splits of a manifest."""

from __future__ import annotations

import numpy as np
import pandas as pd

from fashionlens.data.records import Manifest
from fashionlens.errors import DataError


def split_manifest(manifest: Manifest, fractions: tuple[float, float, float] = (0.7, 0.15, 0.15), seed: int = 0,
                   stratify: str | None = None, group: str | None = None, min_per_class: int = 3) -> Manifest:
    """Assign ``split`` to every row, reproducibly for a given ``seed``.

    Args:
        manifest: Rows to split; existing split values are overwritten.
        fractions: Train/val/test fractions, summing to 1.
        seed: Random seed; the same seed and manifest always give the same split.
        stratify: A class head, tag or meta field whose values are spread proportionally across splits.
            Classes with fewer than ``min_per_class`` rows go to train (they cannot be stratified).
        group: A field (e.g. ``item_id``) whose rows must land in the same split, so that the same product
            never appears in both train and test.
        min_per_class: See ``stratify``.

    Returns:
        A new manifest with the ``split`` column filled.
    """
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-6:
        raise DataError(f"split fractions must be three non-negative numbers summing to 1, got {fractions}")
    if len(manifest) == 0:
        raise DataError(f"cannot split manifest '{manifest.name}': it has no rows")
    rng = np.random.default_rng(seed)
    frame = manifest.frame.copy()
    row_keys = pd.Series("row:" + pd.Series(np.arange(len(frame))).astype(str).to_numpy(), index=frame.index)
    if group:
        values = manifest.column(group).fillna("").astype(str)
        units = ("group:" + values).where(values != "", row_keys)  # rows without a group value stand alone
    else:
        units = row_keys
    unit_keys = units.drop_duplicates()
    if stratify:
        strata = manifest.column(stratify).astype(str).fillna("")
        unit_strata = strata.groupby(units).first().reindex(unit_keys.values)
    else:
        unit_strata = pd.Series("", index=unit_keys.values)
    assignment: dict[str, str] = {}
    for _, members in unit_strata.groupby(unit_strata, sort=True):
        keys = members.index.to_numpy()
        keys = keys[rng.permutation(len(keys))]
        if stratify and len(keys) < min_per_class:
            assignment.update(dict.fromkeys(keys, "train"))
            continue
        n_val = int(round(len(keys) * fractions[1]))
        n_test = int(round(len(keys) * fractions[2]))
        if fractions[1] > 0 and len(keys) >= 3:
            n_val = max(n_val, 1)
        if fractions[2] > 0 and len(keys) >= 3:
            n_test = max(n_test, 1)
        for position, key in enumerate(keys):
            split = "val" if position < n_val else "test" if position < n_val + n_test else "train"
            assignment[key] = split
    frame["split"] = units.map(assignment).to_numpy()
    return Manifest(frame, name=manifest.name, stats=manifest.stats)
