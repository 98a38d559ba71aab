from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from fashionlens.data.readers.generic import read_generic, split_from_name
from fashionlens.errors import DataError, ImageError

from .conftest import Dataset, write_image

#: Every reader's fixture (see conftest): the missing-image contract holds for all of them.
READER_FIXTURES = ["generic", "deepfashion", "inshop", "consumer2shop", "deepfashion2", "imaterialist", "jd_style"]


@pytest.mark.parametrize("fixture", READER_FIXTURES)
def test_every_reader_returns_existing_absolute_paths(fixture: str, request: pytest.FixtureRequest) -> None:
    dataset: Dataset = request.getfixturevalue(fixture)
    manifest = dataset.read()
    assert len(manifest) > 0
    assert set(manifest.frame["path"]) == {str(path) for path in dataset.images}
    assert manifest.stats["missing_images"] == 0


@pytest.mark.parametrize("fixture", READER_FIXTURES)
def test_every_reader_skips_and_counts_missing_images(fixture: str, request: pytest.FixtureRequest) -> None:
    dataset: Dataset = request.getfixturevalue(fixture)
    rows = len(dataset.read())
    gone = dataset.images[1]
    gone.unlink()
    manifest = dataset.read()
    assert manifest.stats["missing_images"] == 1
    assert str(gone) not in set(manifest.frame["path"])
    assert 0 < len(manifest) < rows
    with pytest.raises(ImageError, match=f"image not found: {gone}"):
        dataset.read(skip_missing=False)


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_csv_with_tags_classes_meta_and_boxes(tmp_path: Path) -> None:
    write_image(tmp_path / "a.jpg")
    outside = write_image(tmp_path / "elsewhere" / "b.jpg")
    path = _write(tmp_path / "m.csv",
                  "image,split,domain,item_id,bbox,striped,articleType,name\n"
                  f"a.jpg,validation,consumer,17,\"1,2,30,40\",Yes,Tshirts,Red tee\n"
                  f"{outside},,shop,17,,0,,\n"
                  "a.jpg,test,,,[0 0 5 5],,Shirts,Blue shirt\n")
    manifest = read_generic(path, tags=["striped"], classes=["articleType"], meta=["name"])
    assert manifest.name == "m"
    assert list(manifest.frame["path"]) == [str(tmp_path / "a.jpg"), str(outside), str(tmp_path / "a.jpg")]
    assert list(manifest.frame["split"]) == ["val", "", "test"]
    assert list(manifest.frame["domain"]) == ["street", "shop", ""]
    assert list(manifest.frame["item_id"]) == ["17", "17", ""]
    np.testing.assert_array_equal(manifest.tag_matrix(["striped"])[:, 0], [1.0, 0.0, math.nan])
    assert list(manifest.class_column("articleType")) == ["Tshirts", "", "Shirts"]
    assert [record.bbox for record in manifest] == [(1.0, 2.0, 30.0, 40.0), None, (0.0, 0.0, 5.0, 5.0)]
    assert [record.meta.get("name") for record in manifest] == ["Red tee", None, "Blue shirt"]


def test_jsonl_with_label_sets(tmp_path: Path) -> None:
    for name in "abcd":
        write_image(tmp_path / f"{name}.jpg")
    rows = [
        {"path": "a.jpg", "labels": ["floral", "long sleeve"], "bbox_x0": 1, "bbox_y0": 2, "bbox_x1": 3, "bbox_y1": 4},
        {"path": "b.jpg", "labels": "floral | v-neck"},
        {"path": "c.jpg", "labels": []},
        {"path": "d.jpg"},
    ]
    path = _write(tmp_path / "m.jsonl", "\n".join(json.dumps(row) for row in rows) + "\n\n")
    manifest = read_generic(path, labels="labels")
    assert manifest.tag_names == ["floral", "long sleeve", "v-neck"]
    nan = math.nan
    expected = [[1, 1, 0], [1, 0, 1], [0, 0, 0], [nan, nan, nan]]  # [] = none of them; no key = unlabelled
    np.testing.assert_array_equal(manifest.tag_matrix(), np.array(expected, dtype=np.float32))
    assert manifest.record(0).bbox == (1.0, 2.0, 3.0, 4.0)


def test_label_sets_with_a_custom_delimiter_and_json_text(tmp_path: Path) -> None:
    write_image(tmp_path / "a.jpg")
    path = _write(tmp_path / "m.tsv", 'path\tlabels\na.jpg\ta,b;c\na.jpg\t["x"]\n')
    assert read_generic(path, labels="labels", delimiter=";").tag_names == ["a,b", "c", "x"]


def test_jsonl_boolean_and_numeric_flags(tmp_path: Path) -> None:
    write_image(tmp_path / "a.jpg")
    path = _write(tmp_path / "m.jsonl", '{"path": "a.jpg", "red": true}\n{"path": "a.jpg", "red": 0}\n'
                  '{"path": "a.jpg", "red": null}\n')
    np.testing.assert_array_equal(read_generic(path, tags=["red"]).tag_matrix()[:, 0], [1.0, 0.0, math.nan])


def test_missing_path_column_lists_columns(tmp_path: Path) -> None:
    path = _write(tmp_path / "m.csv", "file,red\na.jpg,1\n")
    with pytest.raises(DataError, match=r"no 'path' or 'image' column \(columns: file, red\)"):
        read_generic(path)


def test_missing_label_column_is_named(tmp_path: Path) -> None:
    path = _write(tmp_path / "m.csv", "path,red\na.jpg,1\n")
    with pytest.raises(DataError, match=r"no column 'blue' \(columns: path, red\)"):
        read_generic(path, tags=["blue"])


@pytest.mark.parametrize(("text", "options", "message"), [
    ("path,red\na.jpg,1\nb.jpg,maybe\n", {"tags": ["red"]}, r"line 3, column 'red': expected 1/0"),
    ("path,split\na.jpg,train\nb.jpg,holdout\n", {}, r"line 3, column 'split': unknown split 'holdout'"),
    ("path,domain\na.jpg,catalogue\n", {}, r"line 2, column 'domain': unknown domain 'catalogue'"),
    ("path,bbox\na.jpg,\"1,2,3\"\n", {}, r"line 2, column 'bbox': expected a box"),
    ("path,bbox_x0\na.jpg,left\n", {}, r"line 2, column 'bbox_x0': expected a number"),
    ("path\na.jpg\n\"\"\n", {}, r"line 3, column 'path': empty image path"),
    ("path,labels\na.jpg,[\"unclosed\"\n", {"labels": "labels"}, r"line 2, column 'labels': invalid JSON list"),
])
def test_bad_values_name_file_line_and_column(tmp_path: Path, text: str, options: dict[str, object],
                                              message: str) -> None:
    path = _write(tmp_path / "m.csv", text)
    with pytest.raises(DataError, match=message):
        read_generic(path, **options)  # type: ignore[arg-type]


def test_bad_jsonl_line(tmp_path: Path) -> None:
    path = _write(tmp_path / "m.jsonl", '{"path": "a.jpg"}\n{"path": \n')
    with pytest.raises(DataError, match=r"m.jsonl, line 2: invalid JSON"):
        read_generic(path)
    _write(path, '{"path": "a.jpg"}\n["a.jpg"]\n')
    with pytest.raises(DataError, match=r"line 2: expected a JSON object"):
        read_generic(path)


def test_label_set_clashing_with_a_tag_column(tmp_path: Path) -> None:
    path = _write(tmp_path / "m.csv", "path,red,labels\na.jpg,1,red|blue\n")
    with pytest.raises(DataError, match=r"clash with tag columns: \['tag:red'\]"):
        read_generic(path, tags=["red"], labels="labels")


@pytest.mark.parametrize("name", ["missing.csv", "manifest.xlsx"])
def test_unreadable_manifest_files(tmp_path: Path, name: str) -> None:
    if name.endswith(".xlsx"):
        _write(tmp_path / name, "x")
    with pytest.raises(DataError, match=name):
        read_generic(tmp_path / name)


@pytest.mark.parametrize(("name", "split"), [("train.json", "train"), ("validation", "val"), ("TEST.txt", "test"),
                                             ("annotations.json", "")])
def test_split_from_name(name: str, split: str) -> None:
    assert split_from_name(name) == split


def test_real_catalogue_table(shared_data: Path) -> None:
    table = shared_data / "fashion-product-images" / "styles.csv"
    with table.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    manifest = read_generic(table, classes=["articleType", "baseColour"], meta=["productDisplayName"])
    assert len(manifest) == len(rows)
    assert manifest.stats["missing_images"] == 0
    assert manifest.record(0).path == str(table.parent / rows[0]["image"])
    assert manifest.record(0).meta["productDisplayName"] == rows[0]["productDisplayName"].strip()
    unlabelled = sum(not row["baseColour"].strip() for row in rows)
    assert (manifest.class_column("baseColour") == "").sum() == unlabelled
