"""The standard splits every figure is measured on: seeded (the same seed, the same test photos) and refused in one
line when the shared data is not where it was said to be."""

from __future__ import annotations

from pathlib import Path

import pytest

from fashionlens.data.standard_splits import CLOTHING, clothing_split, dataset_root
from fashionlens.errors import DataError


def test_a_missing_dataset_folder_is_named(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=rf"dataset folder not found: {tmp_path / CLOTHING} \(pass --data"):
        dataset_root(tmp_path, CLOTHING)


def test_the_seed_fixes_the_split_and_another_seed_changes_it(shared_data: Path) -> None:
    first, again, other = clothing_split(shared_data), clothing_split(shared_data), clothing_split(shared_data, 1)
    assert first.frame["split"].tolist() == again.frame["split"].tolist()
    assert first.frame["split"].tolist() != other.frame["split"].tolist()
    assert set(first.frame["split"]) == {"train", "val", "test"}
