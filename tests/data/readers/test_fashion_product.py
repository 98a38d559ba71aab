"""Fashion Product Images reader: the real 8,080-row catalogue, and broken copies of it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from fashionlens.data.readers import READERS
from fashionlens.data.readers.fashion_product import ATTRIBUTES, HIERARCHY, read_fashion_product_images
from fashionlens.data.records import Manifest
from fashionlens.errors import DataError, ImageError


@pytest.fixture(scope="module")
def catalogue(shared_data: Path) -> Manifest:
    return read_fashion_product_images(shared_data / "fashion-product-images")


@pytest.fixture(scope="module")
def styles(shared_data: Path) -> pd.DataFrame:
    """The raw table, read independently of the reader."""
    return pd.read_csv(shared_data / "fashion-product-images" / "styles.csv", dtype=str, keep_default_na=False)


def test_registered() -> None:
    assert READERS["fashion-product-images"] is read_fashion_product_images


def test_real_catalogue_size_and_heads(catalogue: Manifest) -> None:
    assert len(catalogue) == 8080
    assert catalogue.stats == {"rows": 8080, "missing_images": 0}
    assert catalogue.name == "fashion-product-images"
    assert catalogue.class_heads == [*HIERARCHY, *ATTRIBUTES]
    assert catalogue.tag_names == []
    assert set(catalogue.frame["domain"]) == {"shop"}
    counts = {head: catalogue.class_column(head).replace("", pd.NA).nunique() for head in catalogue.class_heads}
    assert counts["masterCategory"] == 6
    assert 28 <= counts["subCategory"] <= 32  # README: ~30
    assert 70 <= counts["articleType"] <= 78  # README: ~75
    assert set(catalogue.class_column("gender")) == {"Men", "Women", "Boys", "Girls", "Unisex"}


def test_rows_match_the_table(catalogue: Manifest, styles: pd.DataFrame, shared_data: Path) -> None:
    root = (shared_data / "fashion-product-images").resolve()
    assert catalogue.frame["item_id"].tolist() == styles["id"].tolist()
    assert catalogue.frame["path"].tolist() == [str(root / p) for p in styles["image"]]
    for head in (*HIERARCHY, *ATTRIBUTES):
        assert catalogue.class_column(head).tolist() == styles[head].str.strip().tolist(), head
    assert catalogue.column("productDisplayName").iloc[0] == styles["productDisplayName"].iloc[0]
    assert Path(catalogue.frame["path"].iloc[-1]).is_file()


def test_empty_cells_are_unlabelled(catalogue: Manifest, styles: pd.DataFrame) -> None:
    for head, expected in (("baseColour", 2), ("usage", 7)):
        empty = (styles[head].str.strip() == "").to_numpy()
        assert empty.sum() == expected
        assert (catalogue.class_column(head).to_numpy()[empty] == "").all()
        row = int(empty.argmax())
        assert head not in catalogue.record(row).classes
        assert "articleType" in catalogue.record(row).classes


def test_each_subcategory_has_one_master_category(catalogue: Manifest) -> None:
    parents = catalogue.frame.groupby("class:subCategory")["class:masterCategory"].nunique()
    assert (parents == 1).all()


def copy_catalogue(shared_data: Path, destination: Path, rows: int = 6, with_images: int = 6) -> pd.DataFrame:
    """The first ``rows`` rows of the real table, with the first ``with_images`` of their images."""
    source = shared_data / "fashion-product-images"
    table = pd.read_csv(source / "styles.csv", dtype=str, keep_default_na=False).head(rows)
    (destination / "images").mkdir(parents=True)
    for relative in table["image"].head(with_images):
        shutil.copy(source / relative, destination / relative)
    table.to_csv(destination / "styles.csv", index=False)
    return table


def test_missing_images_are_skipped_and_counted(shared_data: Path, tmp_path: Path) -> None:
    table = copy_catalogue(shared_data, tmp_path, rows=6, with_images=4)
    manifest = read_fashion_product_images(tmp_path)
    assert manifest.frame["item_id"].tolist() == table["id"].head(4).tolist()
    assert manifest.stats == {"rows": 6, "missing_images": 2}


def test_missing_image_raises_when_not_skipping(shared_data: Path, tmp_path: Path) -> None:
    table = copy_catalogue(shared_data, tmp_path, rows=6, with_images=4)
    first_missing = str(tmp_path.resolve() / table["image"].iloc[4])
    with pytest.raises(ImageError, match="image not found") as raised:
        read_fashion_product_images(tmp_path, skip_missing=False)
    assert str(raised.value).endswith(first_missing)


def test_image_column_is_optional(shared_data: Path, tmp_path: Path) -> None:
    table = copy_catalogue(shared_data, tmp_path, rows=3)
    table.drop(columns="image").to_csv(tmp_path / "styles.csv", index=False)
    manifest = read_fashion_product_images(tmp_path)
    assert manifest.frame["path"].tolist() == [str(tmp_path.resolve() / "images" / f"{i}.jpg") for i in table["id"]]


@pytest.mark.parametrize("column", ["usage", "articleType", "id"])
def test_missing_column_is_named(shared_data: Path, tmp_path: Path, column: str) -> None:
    table = copy_catalogue(shared_data, tmp_path, rows=3)
    table.drop(columns=column).to_csv(tmp_path / "styles.csv", index=False)
    with pytest.raises(DataError, match=f"'{column}'") as raised:
        read_fashion_product_images(tmp_path)
    assert "styles.csv" in str(raised.value)
    assert "\n" not in str(raised.value)


def test_missing_or_malformed_table(shared_data: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"styles\.csv"):
        read_fashion_product_images(tmp_path)
    copy_catalogue(shared_data, tmp_path, rows=3)
    with (tmp_path / "styles.csv").open("a") as handle:
        handle.write("1,2,3,4,5,6,7,8,9,10,11,12,13,14\n")  # more fields than the header
    with pytest.raises(DataError, match=r"styles\.csv") as raised:
        read_fashion_product_images(tmp_path)
    assert "\n" not in str(raised.value)
