from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from fashionlens.data.readers.imaterialist import imaterialist_downloads, read_imaterialist
from fashionlens.errors import DataError

from .conftest import Dataset


def test_labels_become_complete_tags(imaterialist: Dataset) -> None:
    manifest = imaterialist.read()
    assert list(manifest.frame["path"]) == [str(path) for path in imaterialist.images]
    assert manifest.tag_names == ["3", "17", "62"]  # numeric order, not text order
    nan = math.nan
    expected = [[0, 1, 1], [1, 0, 0], [1, 1, 1], [nan, nan, nan]]  # image 4 has no annotation: unlabelled
    np.testing.assert_array_equal(manifest.tag_matrix(), np.array(expected, dtype=np.float32))
    assert set(manifest.frame["split"]) == {"train"}
    assert manifest.record(0).meta["url"] == "https://example.com/1-large"
    assert manifest.stats["unlabelled_images"] == 1


def test_test_file_without_annotations(tmp_path: Path) -> None:
    path = tmp_path / "test.json"
    path.write_text(json.dumps({"images": [{"url": ["https://example.com/a"], "imageId": 7}]}))
    manifest = read_imaterialist(path, tmp_path, skip_missing=True)
    assert (len(manifest), manifest.stats["missing_images"]) == (0, 1)
    (tmp_path / "7.jpg").write_bytes(b"x")
    manifest = read_imaterialist(path, tmp_path, split="val")
    assert manifest.tag_names == []
    assert (manifest.record(0).split, manifest.record(0).meta["url"]) == ("val", "https://example.com/a")


def test_download_items(imaterialist: Dataset, tmp_path: Path) -> None:
    items = imaterialist_downloads(imaterialist.root, tmp_path / "out")
    assert items[0] == ("https://example.com/1-large", tmp_path / "out" / "1.jpg")
    assert len(items) == 4
    assert imaterialist_downloads(imaterialist.root)[0][1] == tmp_path / "train" / "1.jpg"


def test_images_default_to_the_folder_named_after_the_json(imaterialist: Dataset) -> None:
    (imaterialist.root.parent / "images").rename(imaterialist.root.parent / "elsewhere")
    (imaterialist.root.parent / "elsewhere" / "train").rename(imaterialist.root.with_suffix(""))
    manifest = read_imaterialist(imaterialist.root)
    assert manifest.record(0).path == str(imaterialist.root.parent / "train" / "1.jpg")
    assert manifest.stats["missing_images"] == 0


@pytest.mark.parametrize(("document", "message"), [
    ({"annotations": []}, r"expected a JSON object with an 'images' list"),
    ({"images": [{"url": "u"}]}, r"images\[0\] has no 'imageId'"),
    ({"images": [{"imageId": "1"}, {"imageId": "1"}]}, r"images\[1\] repeats imageId '1'"),
    ({"images": [{"imageId": "1", "url": 5}]}, r"images\[0\] has a 'url' that is not text"),
    ({"images": [{"imageId": "1"}], "annotations": [{"imageId": "2", "labelId": ["1"]}]},
     r"annotations\[0\] refers to unknown imageId '2'"),
    ({"images": [{"imageId": "1"}], "annotations": [{"imageId": "1", "labelId": "1"}]},
     r"annotations\[0\] has no 'labelId' list"),
])
def test_malformed_json(tmp_path: Path, document: dict[str, object], message: str) -> None:
    path = tmp_path / "train.json"
    path.write_text(json.dumps(document))
    with pytest.raises(DataError, match=message):
        read_imaterialist(path, tmp_path)


def test_unreadable_json(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        read_imaterialist(tmp_path / "train.json", tmp_path)
    (tmp_path / "train.json").write_text("{")
    with pytest.raises(DataError, match="cannot read iMaterialist JSON"):
        read_imaterialist(tmp_path / "train.json", tmp_path)
