"""Manifest: records round-trip through the table and through parquet/CSV; unlabelled stays unlabelled."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fashionlens.data.records import ImageRecord, Manifest
from fashionlens.errors import DataError

RECORDS = [
    ImageRecord(path="/img/a.jpg", tags={"red": True, "floral": False}, classes={"category": "Dress", "size": "38"},
                bbox=(1.0, 2.0, 30.0, 40.5), item_id="007", domain="shop", split="train",
                meta={"name": "Red dress", "year": 2011}),
    ImageRecord(path="/img/b.jpg", tags={"red": False}, classes={"category": "Shirt"}, item_id="007",
                domain="street", split="test"),
    ImageRecord(path="/img/c.jpg", tags={"floral": True}, split="val", meta={"name": "Floral top"}),
    ImageRecord(path="/img/d.jpg"),
]


@pytest.fixture
def manifest() -> Manifest:
    return Manifest.from_records(RECORDS, name="toy", stats={"missing_images": 2})


def test_records_round_trip(manifest: Manifest) -> None:
    assert list(manifest) == RECORDS
    assert manifest.record(3).tags == {}
    assert manifest.record(3).bbox is None
    assert manifest.record(0).bbox == (1.0, 2.0, 30.0, 40.5)


def test_schema(manifest: Manifest) -> None:
    assert manifest.tag_names == ["red", "floral"]
    assert manifest.class_heads == ["category", "size"]
    assert sorted(manifest.meta_fields) == ["name", "year"]
    assert len(manifest) == 4
    assert manifest.frame["tag:red"].dtype == np.float32


def test_tag_matrix_keeps_unlabelled_as_nan(manifest: Manifest) -> None:
    expected = np.array([[1, 0], [0, np.nan], [np.nan, 1], [np.nan, np.nan]], dtype=np.float32)
    np.testing.assert_array_equal(manifest.tag_matrix(), expected)
    np.testing.assert_array_equal(manifest.tag_matrix(["floral"]), expected[:, [1]])


def test_unknown_label_names_the_label(manifest: Manifest) -> None:
    with pytest.raises(DataError, match="stripes") as raised:
        manifest.tag_matrix(["red", "stripes"])
    assert "toy" in str(raised.value)
    assert "\n" not in str(raised.value)
    with pytest.raises(DataError, match="colour"):
        manifest.class_column("colour")


def test_class_column_and_column_lookup(manifest: Manifest) -> None:
    assert manifest.class_column("category").tolist() == ["Dress", "Shirt", "", ""]
    assert manifest.column("category").iloc[0] == "Dress"  # bare name finds class:category
    assert manifest.column("name").iloc[2] == "Floral top"  # ... and meta:name
    assert manifest.column("red").iloc[0] == 1.0  # ... and tag:red
    assert manifest.column("item_id").tolist() == ["007", "007", "", ""]
    with pytest.raises(DataError, match="brand"):
        manifest.column("brand")


def test_subset_and_split_subset(manifest: Manifest) -> None:
    street = manifest.subset(manifest.frame["domain"] == "street")
    assert [r.path for r in street] == ["/img/b.jpg"]
    assert (street.name, street.stats) == ("toy", {"missing_images": 2})
    assert [r.path for r in manifest.split_subset("val")] == ["/img/c.jpg"]


def test_empty_and_unknown_split_subset(manifest: Manifest) -> None:
    only_train = manifest.subset([True, False, False, False])
    with pytest.raises(DataError, match="'test'") as raised:
        only_train.split_subset("test")
    assert "toy" in str(raised.value) and "\n" not in str(raised.value)
    with pytest.raises(DataError, match="holdout"):
        manifest.split_subset("holdout")


@pytest.mark.parametrize(("column", "value"), [("split", "training"), ("domain", "catalogue")])
def test_unknown_split_or_domain_value_is_rejected(column: str, value: str) -> None:
    frame = pd.DataFrame({"path": ["a.jpg", "b.jpg"], column: ["", value]})
    with pytest.raises(DataError, match=value) as raised:
        Manifest(frame, name="bad")
    assert "'bad'" in str(raised.value) and "\n" not in str(raised.value)


def test_missing_path_column_is_rejected() -> None:
    with pytest.raises(DataError, match="'path'"):
        Manifest(pd.DataFrame({"image": ["a.jpg"]}))


def test_non_numeric_tag_is_a_data_error_naming_the_column(tmp_path: Path) -> None:
    path = tmp_path / "listing.csv"
    path.write_text("path,tag:red\na.jpg,1\nb.jpg,yes\n")
    with pytest.raises(DataError, match="tag:red") as raised:
        Manifest.load(path)
    assert "\n" not in str(raised.value)


def test_empty_manifest() -> None:
    empty = Manifest.from_records([], name="empty")
    assert len(empty) == 0
    assert empty.tag_names == []
    assert list(empty) == []


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_save_load_round_trip(manifest: Manifest, tmp_path: Path, suffix: str) -> None:
    path = manifest.save(tmp_path / f"manifest{suffix}")
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # atomic: no temp file left
    loaded = Manifest.load(path)
    assert loaded.tag_names == manifest.tag_names
    assert loaded.class_heads == manifest.class_heads
    np.testing.assert_array_equal(loaded.tag_matrix(), manifest.tag_matrix())
    for original, restored in zip(manifest, loaded, strict=True):
        assert restored.path == original.path
        assert restored.tags == original.tags
        assert restored.classes == original.classes  # "38" must stay the string "38"
        assert restored.bbox == original.bbox
        assert (restored.item_id, restored.domain, restored.split) == (original.item_id, original.domain,
                                                                       original.split)
        assert {k: str(v) for k, v in restored.meta.items()} == {k: str(v) for k, v in original.meta.items()}


def test_parquet_keeps_name_stats_and_frame(manifest: Manifest, tmp_path: Path) -> None:
    loaded = Manifest.load(manifest.save(tmp_path / "any-file-name.parquet"))
    assert (loaded.name, loaded.stats) == ("toy", {"missing_images": 2})
    pd.testing.assert_frame_equal(loaded.frame, manifest.frame)


def test_csv_name_falls_back_to_file_stem(manifest: Manifest, tmp_path: Path) -> None:
    assert Manifest.load(manifest.save(tmp_path / "shop.csv")).name == "shop"


def test_bad_manifest_files(manifest: Manifest, tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nowhere\.parquet"):
        Manifest.load(tmp_path / "nowhere.parquet")
    with pytest.raises(DataError, match=r"manifest\.json"):
        manifest.save(tmp_path / "manifest.json")
    assert not list(tmp_path.iterdir())
    garbage = tmp_path / "broken.parquet"
    garbage.write_text("not parquet")
    with pytest.raises(DataError, match=r"broken\.parquet") as raised:
        Manifest.load(garbage)
    assert "\n" not in str(raised.value)


def test_csv_with_unknown_split_value(tmp_path: Path) -> None:
    path = tmp_path / "listing.csv"
    path.write_text("path,split,tag:red\na.jpg,train,1\nb.jpg,tset,0\n")
    with pytest.raises(DataError, match="tset"):
        Manifest.load(path)


def test_record_reads_half_labelled_tags_as_bool() -> None:
    frame = pd.DataFrame({"path": ["a.jpg", "b.jpg"], "tag:red": [1.0, math.nan]})
    records = list(Manifest(frame))
    assert records[0].tags == {"red": True}
    assert records[1].tags == {}
