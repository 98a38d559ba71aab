"""Splits: reproducible per seed, proportional per class, products never straddle splits."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd
import pytest

from fashionlens.data.records import Manifest
from fashionlens.data.splits import split_manifest
from fashionlens.errors import DataError

CLASS_SIZES = {"Tshirts": 200, "Shirts": 120, "Watches": 80, "Rare": 2}


@pytest.fixture
def manifest() -> Manifest:
    rows = [(cls, i) for cls, n in CLASS_SIZES.items() for i in range(n)]
    frame = pd.DataFrame({
        "path": [f"/img/{cls}-{i}.jpg" for cls, i in rows],
        "class:articleType": [cls for cls, _ in rows],
        "item_id": [f"{cls}-{i // 3}" for cls, i in rows],  # three photos per product
        "meta:year": [str(2010 + i % 4) for _, i in rows],
        "split": "test",  # overwritten
    })
    return Manifest(frame, name="toy")


def test_same_seed_same_split_other_seed_other_split(manifest: Manifest) -> None:
    first = split_manifest(manifest, seed=1).frame["split"]
    again = split_manifest(manifest, seed=1).frame["split"]
    other = split_manifest(manifest, seed=2).frame["split"]
    assert first.tolist() == again.tolist()
    assert first.tolist() != other.tolist()
    assert set(first) == {"train", "val", "test"}


def test_fractions_are_respected(manifest: Manifest) -> None:
    shares = split_manifest(manifest, fractions=(0.6, 0.25, 0.15), seed=0).frame["split"].value_counts(
        normalize=True)
    assert shares["train"] == pytest.approx(0.6, abs=0.02)
    assert shares["val"] == pytest.approx(0.25, abs=0.02)
    assert shares["test"] == pytest.approx(0.15, abs=0.02)


def test_stratification_keeps_each_class_share_and_rare_classes_train(manifest: Manifest) -> None:
    split = split_manifest(manifest, fractions=(0.7, 0.15, 0.15), seed=0, stratify="articleType", min_per_class=3)
    counts = Counter(zip(split.class_column("articleType"), split.frame["split"], strict=True))
    for cls in ("Tshirts", "Shirts", "Watches"):
        n = CLASS_SIZES[cls]
        assert abs(counts[cls, "val"] - 0.15 * n) <= 1
        assert abs(counts[cls, "test"] - 0.15 * n) <= 1
    assert counts["Rare", "train"] == 2


def test_small_classes_still_reach_val_and_test(manifest: Manifest) -> None:
    small = manifest.subset(manifest.class_column("articleType").isin(["Watches"]).to_numpy()
                            & (np.arange(len(manifest)) % 20 == 0))
    assert len(small) == 4  # 4 rows x 0.15 rounds to 1 (and at least one) per split
    counts = split_manifest(small, seed=0, stratify="articleType").frame["split"].value_counts()
    assert (counts["val"], counts["test"], counts["train"]) == (1, 1, 2)


def test_group_keeps_products_together(manifest: Manifest) -> None:
    split = split_manifest(manifest, seed=3, group="item_id", stratify="articleType")
    per_item = split.frame.groupby("item_id")["split"].nunique()
    assert (per_item == 1).all()
    assert set(split.frame["split"]) == {"train", "val", "test"}


def test_group_by_meta_field_bare_name(manifest: Manifest) -> None:
    split = split_manifest(manifest, seed=0, group="year")  # meta:year, looked up like stratify fields
    assert (split.frame.groupby("meta:year")["split"].nunique() == 1).all()


def test_rows_without_a_group_value_are_not_tied_together() -> None:
    frame = pd.DataFrame({"path": [f"/img/{i}.jpg" for i in range(60)],
                          "item_id": [f"p{i // 2}" if i < 20 else "" for i in range(60)]})
    split = split_manifest(Manifest(frame), seed=0, group="item_id")
    unidentified = split.frame.loc[split.frame["item_id"] == "", "split"]
    assert unidentified.nunique() == 3  # 40 unrelated photos are not one product


def test_split_does_not_modify_its_input(manifest: Manifest) -> None:
    split_manifest(manifest, seed=0)
    assert set(manifest.frame["split"]) == {"test"}
    assert (manifest.name, manifest.stats) == ("toy", {})


@pytest.mark.parametrize("fractions", [(0.7, 0.2, 0.2), (0.8, 0.3, -0.1), (0.5, 0.5)])
def test_bad_fractions(manifest: Manifest, fractions: tuple[float, float, float]) -> None:
    with pytest.raises(DataError, match="fractions"):
        split_manifest(manifest, fractions=fractions)


def test_unknown_fields_and_empty_manifest(manifest: Manifest) -> None:
    with pytest.raises(DataError, match="colour"):
        split_manifest(manifest, stratify="colour")
    with pytest.raises(DataError, match="shop_id"):
        split_manifest(manifest, group="shop_id")
    with pytest.raises(DataError, match="no rows"):
        split_manifest(manifest.subset(np.zeros(len(manifest), dtype=bool)))
