"""Merging iMaterialist's train.json and validation.json into one manifest with one label space."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from fashionlens.data.readers import READERS
from fashionlens.data.readers.imaterialist import read_imaterialist_merged
from fashionlens.errors import DataError

from .conftest import write_image


def write_file(root: Path, name: str, labels: dict[str, list[str]], unannotated: tuple[str, ...] = ()) -> None:
    ids = [*labels, *unannotated]
    document = {"images": [{"url": f"https://example.com/{i}", "imageId": i} for i in ids],
                "annotations": [{"imageId": i, "labelId": found} for i, found in labels.items()]}
    (root / f"{name}.json").write_text(json.dumps(document))
    for i in ids:
        write_image(root / name / f"{i}.jpg")


def test_merge_builds_one_label_space_with_negatives_for_labels_of_the_other_file(tmp_path: Path) -> None:
    write_file(tmp_path, "train", {"1": ["3", "17"], "2": ["17"]}, unannotated=("5",))
    write_file(tmp_path, "validation", {"10": ["62"], "11": ["3", "62"]})
    manifest = read_imaterialist_merged(tmp_path)
    assert manifest.tag_names == ["3", "17", "62"]
    assert list(manifest.frame["split"]) == ["train", "train", "train", "val", "val"]
    nan = math.nan
    expected = [[1, 1, 0],  # label 62 exists only in validation.json: an annotated train image is negative for it
                [0, 1, 0],
                [nan, nan, nan],  # no annotation: unlabelled, for the other file's labels too
                [0, 0, 1],  # label 17 exists only in train.json
                [1, 0, 1]]
    np.testing.assert_array_equal(manifest.tag_matrix(), np.array(expected, dtype=np.float32))
    assert manifest.stats["unlabelled_images"] == 1
    assert READERS["imaterialist"](tmp_path).tag_names == manifest.tag_names  # `data build imaterialist FOLDER`


def test_a_single_file_is_read_on_its_own(tmp_path: Path) -> None:
    write_file(tmp_path, "train", {"1": ["3"], "2": ["17"]})
    assert read_imaterialist_merged(tmp_path / "train.json").tag_names == ["3", "17"]


def test_folder_without_annotation_files_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"train\.json"):
        read_imaterialist_merged(tmp_path)
