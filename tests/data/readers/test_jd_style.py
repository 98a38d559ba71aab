from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fashionlens.data.readers.jd_style import JD_STYLES, read_jd_style
from fashionlens.errors import DataError

from .conftest import JD_ROWS, Dataset, write_image


def test_official_train_table(jd_style: Dataset) -> None:
    manifest = jd_style.read()
    assert list(manifest.frame["path"]) == [str(path) for path in jd_style.images]
    assert manifest.tag_names == list(JD_STYLES)
    expected = [[float(flag) for flag in flags.split(",")] for flags in JD_ROWS.values()]
    np.testing.assert_array_equal(manifest.tag_matrix(), np.array(expected, dtype=np.float32))
    assert manifest.record(0).tags["minimalist"] and manifest.record(2).tags["ethnic"]
    assert manifest.record(1).meta["url"] == "http://img.example.com/picture2.jpg"
    assert set(manifest.frame["split"]) == {"train"}


def test_header_names_the_styles_and_whitespace_separates(tmp_path: Path) -> None:
    write_image(tmp_path / "a.png")
    styles = [f"s{index}" for index in range(13)]
    path = tmp_path / "styles.tsv"
    path.write_text("\ufeffimage\t" + "\t".join(styles) + "\n\na.png\t" + "\t".join("1" * 13) + "\n")
    manifest = read_jd_style(path, split="val")
    assert manifest.tag_names == styles
    assert manifest.record(0).path == str(tmp_path / "a.png")
    assert manifest.record(0).split == "val"
    assert all(manifest.record(0).tags.values())


def test_test_table_is_unlabelled(tmp_path: Path) -> None:
    write_image(tmp_path / "q1.jpg")
    path = tmp_path / "test.txt"
    path.write_text("q1,http://img.example.com/q1.jpg\n")
    manifest = read_jd_style(path)
    assert manifest.tag_names == list(JD_STYLES)
    assert np.isnan(manifest.tag_matrix()).all()
    assert manifest.record(0).split == "test"


@pytest.mark.parametrize(("text", "message"), [
    ("a," + ",".join("0" * 12) + ",2\n", r"line 1: style 'ethnic' must be 0 or 1, got '2'"),
    ("a,1,0\n", r"line 1: expected name\[, url\]\[, 13 style flags\], got 3 fields"),
    ("a,u\n\nb,u," + ",".join("0" * 13) + "\n", r"line 3: expected 2 fields like line 1, got 15"),
    ("", r"no data rows"),
    ("name," + ",".join(["same"] * 13) + "\n", r"line 1: the header repeats a style name"),
])
def test_malformed_tables(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "train.txt"
    path.write_text(text)
    with pytest.raises(DataError, match=message):
        read_jd_style(path)


def test_missing_table(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="JD style table not found"):
        read_jd_style(tmp_path / "train.txt")
