"""Clothing Attributes reader: the real 1,578 photos checked against the MATLAB files, and broken label sets."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from fashionlens.data.readers import READERS
from fashionlens.data.readers.clothing_attributes import MULTICLASS_HEADS, PAPER_LABELS, read_clothing_attributes
from fashionlens.data.records import Manifest
from fashionlens.errors import DataError, ImageError

BINARY = ("black", "blue", "brown", "collar", "cyan", "gender", "gray", "green", "many_colors", "necktie",
          "pattern_floral", "pattern_graphics", "pattern_plaid", "pattern_solid", "pattern_spot", "pattern_stripe",
          "placket", "purple", "red", "scarf", "skin_exposure", "white", "yellow")


@pytest.fixture(scope="module")
def root(shared_data: Path) -> Path:
    return shared_data / "clothing-attributes"


@pytest.fixture(scope="module")
def attributes(root: Path) -> Manifest:
    return read_clothing_attributes(root)


def ground_truth(root: Path, name: str) -> np.ndarray:
    return scipy.io.loadmat(root / "labels" / f"{name}_GT.mat")["GT"].reshape(-1)


def test_registered() -> None:
    assert READERS["clothing-attributes"] is read_clothing_attributes


def test_real_dataset_size(attributes: Manifest, root: Path) -> None:
    assert len(attributes) == 1578
    assert attributes.stats == {"rows": 1856, "missing_images": 278}
    assert len(list((root / "images").glob("*.jpg"))) == 1578
    assert attributes.tag_names == sorted(BINARY)
    assert attributes.class_heads == ["category", "sleevelength", "neckline"]
    assert set(PAPER_LABELS) <= set(attributes.tag_names)
    assert set(attributes.frame["domain"]) == {"street"}
    assert all(Path(p).is_file() for p in attributes.frame["path"])


def test_rows_follow_image_numbers(attributes: Manifest, root: Path) -> None:
    numbers = attributes.frame["item_id"].astype(int).to_numpy()
    assert (np.diff(numbers) > 0).all()
    assert attributes.frame["path"].tolist() == [str(root.resolve() / "images" / f"{n:06d}.jpg") for n in numbers]
    assert not (root / "images" / f"{int(set(range(1, 1857)).difference(numbers).pop()):06d}.jpg").exists()


def test_tags_match_the_matlab_files(attributes: Manifest, root: Path) -> None:
    rows = attributes.frame["item_id"].astype(int).to_numpy() - 1
    matrix = attributes.tag_matrix(list(BINARY))
    for column, name in enumerate(BINARY):
        expected = ground_truth(root, name)[rows] - 1.0  # 1 = no, 2 = yes, NaN = annotators disagreed
        np.testing.assert_array_equal(matrix[:, column], expected.astype(np.float32), err_msg=name)
    assert np.isnan(matrix).sum() > 1000  # unlabelled entries are kept as NaN, not turned into negatives


def test_classes_match_the_matlab_files(attributes: Manifest, root: Path) -> None:
    rows = attributes.frame["item_id"].astype(int).to_numpy() - 1
    for head, names in MULTICLASS_HEADS.items():
        codes = ground_truth(root, head)[rows]
        expected = ["" if np.isnan(code) else names[int(code) - 1] for code in codes]
        assert attributes.class_column(head).tolist() == expected, head
    assert MULTICLASS_HEADS["category"][6] == "Dress"
    assert MULTICLASS_HEADS["sleevelength"] == ("No sleeves", "Short sleeves", "Long sleeves")


def test_gender_tag_is_positive_for_female(attributes: Manifest, root: Path) -> None:
    codes = ground_truth(root, "gender")[attributes.frame["item_id"].astype(int).to_numpy() - 1]
    tag = attributes.tag_matrix(["gender"])[:, 0]
    assert (codes == 2).sum() > 100 and (codes == 1).sum() > 100
    assert (tag[codes == 2] == 1.0).all()  # 2 = female
    assert (tag[codes == 1] == 0.0).all()  # 1 = male
    female = int(np.flatnonzero(codes == 2)[0])
    assert attributes.record(female).tags["gender"] is True


def test_records_omit_unlabelled_attributes(attributes: Manifest) -> None:
    matrix = attributes.tag_matrix()
    row = int(np.flatnonzero(np.isnan(matrix).any(axis=1))[0])
    record = attributes.record(row)
    unlabelled = {name for name, value in zip(attributes.tag_names, matrix[row], strict=True) if np.isnan(value)}
    assert unlabelled and unlabelled.isdisjoint(record.tags)
    assert len(record.tags) == len(BINARY) - len(unlabelled)


def test_first_missing_image_is_named_when_not_skipping(root: Path) -> None:
    first_missing = next(n for n in range(1, 1857) if not (root / "images" / f"{n:06d}.jpg").exists())
    with pytest.raises(ImageError, match="image not found") as raised:
        read_clothing_attributes(root, skip_missing=False)
    assert str(raised.value).endswith(f"{first_missing:06d}.jpg")


@pytest.fixture
def labels_copy(root: Path, tmp_path: Path) -> Path:
    """A copy of the real label files next to (a link to) the real images."""
    shutil.copytree(root / "labels", tmp_path / "labels")
    (tmp_path / "images").symlink_to((root / "images").resolve())
    return tmp_path


def write_gt(path: Path, values: np.ndarray) -> None:
    scipy.io.savemat(path, {"GT": values.reshape(-1, 1)})


def test_copy_reads_like_the_original(labels_copy: Path, attributes: Manifest) -> None:
    copy = read_clothing_attributes(labels_copy)
    np.testing.assert_array_equal(copy.tag_matrix(), attributes.tag_matrix())


@pytest.mark.parametrize(("name", "bad_value", "words"), [
    ("scarf", 3.0, "other than 1"), ("necktie", 0.0, "other than 1"), ("category", 8.0, "outside 1..7"),
    ("neckline", 0.0, "outside 1..3"),
])
def test_out_of_range_codes_name_the_file(labels_copy: Path, name: str, bad_value: float, words: str) -> None:
    path = labels_copy / "labels" / f"{name}_GT.mat"
    values = scipy.io.loadmat(path)["GT"].reshape(-1)
    values[10] = bad_value
    write_gt(path, values)
    with pytest.raises(DataError, match=words) as raised:
        read_clothing_attributes(labels_copy)
    assert f"{name}_GT.mat" in str(raised.value)
    assert "\n" not in str(raised.value)


def test_label_dir_without_mat_files(tmp_path: Path) -> None:
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "README.txt").write_text("labels go here")
    with pytest.raises(DataError, match=r"_GT\.mat") as raised:
        read_clothing_attributes(tmp_path)
    assert str(tmp_path / "labels") in str(raised.value)


def test_label_file_without_gt_variable(labels_copy: Path) -> None:
    scipy.io.savemat(labels_copy / "labels" / "red_GT.mat", {"labels": np.ones((1856, 1))})
    with pytest.raises(DataError, match="'GT'") as raised:
        read_clothing_attributes(labels_copy)
    assert "red_GT.mat" in str(raised.value)


def test_label_files_of_different_lengths(labels_copy: Path) -> None:
    write_gt(labels_copy / "labels" / "yellow_GT.mat", np.ones(1000))
    with pytest.raises(DataError, match=r"yellow_GT\.mat"):
        read_clothing_attributes(labels_copy)


def test_unreadable_label_file(labels_copy: Path) -> None:
    (labels_copy / "labels" / "white_GT.mat").write_text("not MATLAB")
    with pytest.raises(DataError, match=r"white_GT\.mat") as raised:
        read_clothing_attributes(labels_copy)
    assert "\n" not in str(raised.value)
