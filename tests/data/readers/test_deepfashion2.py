from __future__ import annotations

import json
from pathlib import Path

import pytest

from fashionlens.data.readers.deepfashion2 import read_deepfashion2
from fashionlens.errors import DataError

from .conftest import Dataset


def test_one_row_per_garment(deepfashion2: Dataset) -> None:
    manifest = deepfashion2.read()
    image = [str(path) for path in deepfashion2.images]
    assert list(manifest.frame["path"]) == [image[0], image[0], image[1], image[2]]
    assert list(manifest.frame["split"]) == ["val"] * 4
    assert list(manifest.frame["domain"]) == ["street", "street", "shop", "shop"]
    # style 0 has no identity: it can never be a cross-domain match
    assert list(manifest.frame["item_id"]) == ["1:1", "", "1:1", "2:2"]
    assert list(manifest.class_column("category")) == ["short sleeve top", "trousers", "short sleeve top", "skirt"]
    assert [record.bbox for record in manifest][:2] == [(1.0, 2.0, 30.0, 40.0), (0.0, 50.0, 20.0, 90.0)]
    third = manifest.record(2)
    assert (third.meta["viewpoint"], third.meta["occlusion"], third.meta["scale"]) == ("no-wear", "heavy", "modest")
    assert manifest.stats["annotation_files"] == 3


def test_dataset_root_reads_every_annotated_split(deepfashion2: Dataset) -> None:
    manifest = read_deepfashion2(deepfashion2.root.parent)
    assert sorted(set(manifest.frame["split"])) == ["train", "val"]
    # pair ids restart in each split, so ids are qualified by the split folder
    assert manifest.frame.loc[manifest.frame["split"] == "train", "item_id"].tolist() == ["train/1:1"]
    assert "validation/1:1" in set(manifest.frame["item_id"])


def _edit(path: Path, **changes: object) -> None:
    document = json.loads(path.read_text())
    item = document["item1"]
    for key, value in changes.items():
        target = document if key in ("source", "pair_id") else item
        if value is None:
            del target[key]
        else:
            target[key] = value
    path.write_text(json.dumps(document))


@pytest.mark.parametrize(("changes", "message"), [
    ({"source": "street"}, r"'source' must be 'user' or 'shop'"),
    ({"pair_id": None}, r"missing 'pair_id'"),
    ({"category_name": None}, r"missing 'item1.category_name'"),
    ({"category_name": ""}, r"'item1.category_name' must be a non-empty str"),
    ({"style": "1"}, r"'item1.style' must be a int"),
    ({"bounding_box": [1, 2, 3]}, r"'item1.bounding_box' must be \[x1, y1, x2, y2\]"),
    ({"occlusion": 4}, r"'item1.occlusion' must be one of \[1, 2, 3\]"),
])
def test_malformed_annotations_name_file_and_key(deepfashion2: Dataset, changes: dict[str, object],
                                                 message: str) -> None:
    path = deepfashion2.root / "annos" / "000002.json"
    _edit(path, **changes)
    with pytest.raises(DataError, match=f"000002.json: {message}"):
        deepfashion2.read()


def test_invalid_json(deepfashion2: Dataset) -> None:
    (deepfashion2.root / "annos" / "000003.json").write_text("{")
    with pytest.raises(DataError, match=r"cannot read DeepFashion2 annotation .*000003.json"):
        deepfashion2.read()


def test_folder_without_annotations(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no DeepFashion2 'annos' folder"):
        read_deepfashion2(tmp_path)
