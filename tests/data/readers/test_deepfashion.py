from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from fashionlens.data.readers.deepfashion import read_deepfashion, read_deepfashion_inshop
from fashionlens.errors import DataError

from .conftest import Dataset


def _replace(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"fixture text {old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def test_category_and_attribute_benchmark(deepfashion: Dataset) -> None:
    manifest = deepfashion.read()
    assert list(manifest.frame["path"]) == [str(path) for path in deepfashion.images]
    assert list(manifest.class_column("category")) == ["Anorak", "Anorak", "Capris", "Dress"]
    assert list(manifest.class_column("category_type")) == ["upper", "upper", "lower", "full"]
    assert list(manifest.frame["split"]) == ["train", "val", "test", "train"]
    assert manifest.tag_names == ["a-line", "abstract chevron print", "cotton"]
    nan = math.nan
    expected = np.array([[1, 0, nan], [0, 1, 0], [nan, nan, 1], [1, 1, 0]], dtype=np.float32)
    np.testing.assert_array_equal(manifest.tag_matrix(), expected)  # 0 = unknown -> NaN, -1 -> 0
    assert manifest.record(2).bbox == (0.0, 40.0, 90.0, 300.0)
    assert manifest.stats["missing_images"] == 0


def test_attributes_can_be_skipped(deepfashion: Dataset) -> None:
    (deepfashion.root / "Anno" / "list_attr_img.txt").unlink()
    manifest = read_deepfashion(deepfashion.root, attributes=False)
    assert manifest.tag_names == []
    assert len(manifest) == 4


def test_attribute_names_listed_twice_get_their_type(deepfashion: Dataset) -> None:
    _replace(deepfashion.root / "Anno" / "list_attr_cloth.txt", "a-line                       3",
             "cotton                       3")
    assert deepfashion.read().tag_names == ["cotton (shape)", "abstract chevron print", "cotton (fabric)"]


def test_files_may_sit_directly_in_the_benchmark_folder(deepfashion: Dataset) -> None:
    root = deepfashion.root
    for path in [*(root / "Anno").iterdir(), *(root / "Eval").iterdir()]:
        path.rename(root / path.name)
    assert len(read_deepfashion(root)) == 4


@pytest.mark.parametrize(("file", "old", "new", "message"), [
    ("Anno/list_category_img.txt", "4\n", "5\n", r"announces 5 rows but 4 follow"),
    ("Anno/list_category_img.txt", "4\n", "four\n", r"list_category_img.txt, line 1: expected the number of rows"),
    ("Anno/list_category_img.txt", "img_00000002.jpg   1", "img_00000002.jpg   1 2",
     r"list_category_img.txt, line 4: expected 2 fields, got 3"),
    ("Anno/list_category_img.txt", "img_00000002.jpg   1", "img_00000002.jpg   9",
     r"line 4: category label 9 is outside 1..3"),
    ("Anno/list_category_cloth.txt", "Capris                       2", "Capris                       7",
     r"list_category_cloth.txt, line 4: unknown category type '7'"),
    ("Anno/list_attr_cloth.txt", "cotton                       2", "cotton",
     r"list_attr_cloth.txt, line 5: expected 2 fields, got 1"),
    ("Anno/list_attr_img.txt", "-1  1 -1", "-1  1 2", r"list_attr_img.txt, line 4: attribute labels must be -1, 0"),
    ("Anno/list_attr_img.txt", "-1  1 -1", "-1  1", r"list_attr_img.txt, line 4: expected 3 attribute labels"),
    ("Anno/list_attr_img.txt", "-1  1 -1", "-1  1 yes", r"list_attr_img.txt, line 4: attribute labels must be integ"),
    ("Anno/list_bbox.txt", "5 5 50 60", "5 5 50 x", r"list_bbox.txt, line 4: box coordinate must be an integer"),
    ("Eval/list_eval_partition.txt", "   val", "   validation", r"line 4: unknown evaluation status 'validation'"),
])
def test_malformed_files_name_file_and_line(deepfashion: Dataset, file: str, old: str, new: str,
                                            message: str) -> None:
    _replace(deepfashion.root / file, old, new)
    with pytest.raises(DataError, match=message):
        deepfashion.read()


@pytest.mark.parametrize("name", ["list_category_cloth.txt", "list_category_img.txt", "list_bbox.txt",
                                  "list_attr_img.txt", "list_eval_partition.txt"])
def test_missing_files_are_named(deepfashion: Dataset, name: str) -> None:
    next(deepfashion.root.rglob(name)).unlink()
    with pytest.raises(DataError, match=f"'{name}' not found"):
        deepfashion.read()


def test_missing_benchmark_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="folder not found"):
        read_deepfashion(tmp_path / "nowhere")


def test_inshop_retrieval_benchmark(inshop: Dataset) -> None:
    manifest = inshop.read()
    frame = manifest.frame
    assert list(frame["path"]) == [str(path) for path in inshop.images]
    assert list(frame["split"]) == ["train", "train", "test", "test"]
    assert list(frame["item_id"]) == ["id_00000002", "id_00000002", "id_00000080", "id_00000080"]
    assert set(frame["domain"]) == {"shop"}
    assert [record.meta.get("role") for record in manifest] == [None, None, "query", "gallery"]
    assert [record.meta["view"] for record in manifest] == ["frontal", "side", "frontal", "back"]
    assert list(manifest.class_column("category_type")) == ["full", "full", "lower", "lower"]
    assert manifest.record(0).bbox == (10.0, 20.0, 30.0, 40.0)


def test_inshop_without_box_file(inshop: Dataset) -> None:
    (inshop.root / "Anno" / "list_bbox_inshop.txt").unlink()
    manifest = read_deepfashion_inshop(inshop.root)
    assert len(manifest) == 4
    assert all(record.bbox is None for record in manifest)


def test_inshop_unknown_status(inshop: Dataset) -> None:
    _replace(inshop.root / "Eval" / "list_eval_partition.txt", "gallery", "val")
    with pytest.raises(DataError, match=r"line 6: unknown evaluation status 'val'"):
        inshop.read()


def test_consumer_to_shop_pairs_become_one_row_per_image(consumer2shop: Dataset) -> None:
    manifest = consumer2shop.read()
    rows = {Path(record.path).relative_to(consumer2shop.root / "Img").as_posix(): record for record in manifest}
    assert len(manifest) == 5  # 3 pairs, one shop photo shared by two of them
    shop = rows["img/WOMEN/Dresses/id_00000015/shop_01.jpg"]
    assert (shop.domain, shop.item_id, shop.split, shop.bbox) == ("shop", "id_00000015", "train", (5.0, 6.0, 7.0, 8.0))
    street = rows["img/MEN/Tees/id_00000301/comsumer_01.jpg"]
    assert (street.domain, street.item_id, street.split, street.bbox) == ("street", "id_00000301", "test", None)
    assert shop.classes["category_type"] == "full"
    assert manifest.stats["pairs"] == 3


def test_consumer_to_shop_conflicting_item_is_an_error(consumer2shop: Dataset) -> None:
    _replace(consumer2shop.root / "Eval" / "list_eval_partition.txt", "shop_01.jpg  id_00000015  train\n"
             "img/WOMEN/Dresses/id_00000015/comsumer_02.jpg  img/WOMEN/Dresses/id_00000015/shop_01.jpg  id_00000015",
             "shop_01.jpg  id_00000015  train\n"
             "img/WOMEN/Dresses/id_00000015/comsumer_02.jpg  img/WOMEN/Dresses/id_00000015/shop_01.jpg  id_00000099")
    with pytest.raises(DataError, match=r"line 4: img/WOMEN/Dresses/id_00000015/shop_01.jpg is listed as"):
        consumer2shop.read()
