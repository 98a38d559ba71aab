"""Small datasets written in each reader's official layout, shared by the reader tests."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pytest
from PIL import Image

from fashionlens.data.readers.deepfashion import (
    read_deepfashion,
    read_deepfashion_consumer2shop,
    read_deepfashion_inshop,
)
from fashionlens.data.readers.deepfashion2 import read_deepfashion2
from fashionlens.data.readers.generic import read_generic
from fashionlens.data.readers.imaterialist import read_imaterialist
from fashionlens.data.readers.jd_style import read_jd_style
from fashionlens.data.records import Manifest


@dataclass
class Dataset:
    """A dataset on disk: ``read(skip_missing=...)`` reads it; ``images`` are the image files written."""

    root: Path
    read: Callable[..., Manifest]
    images: list[Path]


def write_image(path: Path, size: tuple[int, int] = (8, 6)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (200, 30, 30)).save(path, format="JPEG")
    return path


def write_listing(path: Path, header: str, rows: list[str], count: int | None = None) -> Path:
    """A DeepFashion ``list_*.txt``: the row count, the entry names, then the rows."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{len(rows) if count is None else count}\n{header}\n" + "".join(f"{row}\n" for row in rows))
    return path


# DeepFashion Category and Attribute Prediction: image, category label, split, box, attribute labels.
DEEPFASHION_IMAGES = [
    ("img/Hooded_Anorak/img_00000001.jpg", 1, "train", (10, 20, 110, 220), "1 -1  0"),
    ("img/Hooded_Anorak/img_00000002.jpg", 1, "val", (5, 5, 50, 60), "-1  1 -1"),
    ("img/Cropped_Capris/img_00000001.jpg", 2, "test", (0, 40, 90, 300), "0  0  1"),
    ("img/Floral_Dress/img_00000001.jpg", 3, "train", (3, 4, 5, 6), "1  1 -1"),
]


@pytest.fixture
def deepfashion(tmp_path: Path) -> Dataset:
    root = tmp_path / "Category and Attribute Prediction Benchmark"
    anno = root / "Anno"
    write_listing(anno / "list_category_cloth.txt", "category_name  category_type",
                  ["Anorak                       1", "Capris                       2",
                   "Dress                        3"])
    write_listing(anno / "list_category_img.txt", "image_name  category_label",
                  [f"{name}   {label}" for name, label, *_ in DEEPFASHION_IMAGES])
    write_listing(anno / "list_bbox.txt", "image_name  x_1  y_1  x_2  y_2",
                  [f"{name}  {' '.join(map(str, box))}" for name, _, _, box, _ in DEEPFASHION_IMAGES])
    write_listing(anno / "list_attr_cloth.txt", "attribute_name  attribute_type",
                  ["a-line                       3", "abstract chevron print       1",
                   "cotton                       2"])
    write_listing(anno / "list_attr_img.txt", "image_name  attribute_labels",
                  [f"{name}                        {labels}" for name, *_, labels in DEEPFASHION_IMAGES])
    write_listing(root / "Eval" / "list_eval_partition.txt", "image_name  evaluation_status",
                  [f"{name}   {split}" for name, _, split, *_ in DEEPFASHION_IMAGES])
    images = [write_image(root / "Img" / name) for name, *_ in DEEPFASHION_IMAGES]
    return Dataset(root, partial(read_deepfashion, root), images)


# In-shop: image, item, status, clothes type, pose type.
INSHOP_IMAGES = [
    ("img/WOMEN/Dresses/id_00000002/02_1_front.jpg", "id_00000002", "train", 3, 1),
    ("img/WOMEN/Dresses/id_00000002/02_2_side.jpg", "id_00000002", "train", 3, 2),
    ("img/MEN/Denim/id_00000080/01_1_front.jpg", "id_00000080", "query", 2, 1),
    ("img/MEN/Denim/id_00000080/01_3_back.jpg", "id_00000080", "gallery", 2, 3),
]


@pytest.fixture
def inshop(tmp_path: Path) -> Dataset:
    root = tmp_path / "In-shop Clothes Retrieval Benchmark"
    write_listing(root / "Eval" / "list_eval_partition.txt", "image_name item_id evaluation_status",
                  [f"{name}  {item}  {status}" for name, item, status, *_ in INSHOP_IMAGES])
    write_listing(root / "Anno" / "list_bbox_inshop.txt", "image_name  clothes_type  pose_type  x_1  y_1  x_2  y_2",
                  [f"{name}  {kind}  {pose}  10 20 30 40" for name, _, _, kind, pose in INSHOP_IMAGES])
    images = [write_image(root / "Img" / name) for name, *_ in INSHOP_IMAGES]
    return Dataset(root, partial(read_deepfashion_inshop, root), images)


# Consumer-to-shop: consumer image, shop image, item, status. The shop photo of item 15 is in two pairs.
C2S_PAIRS = [
    ("img/WOMEN/Dresses/id_00000015/comsumer_01.jpg", "img/WOMEN/Dresses/id_00000015/shop_01.jpg", "id_00000015",
     "train"),
    ("img/WOMEN/Dresses/id_00000015/comsumer_02.jpg", "img/WOMEN/Dresses/id_00000015/shop_01.jpg", "id_00000015",
     "train"),
    ("img/MEN/Tees/id_00000301/comsumer_01.jpg", "img/MEN/Tees/id_00000301/shop_01.jpg", "id_00000301", "test"),
]


@pytest.fixture
def consumer2shop(tmp_path: Path) -> Dataset:
    root = tmp_path / "Consumer-to-shop Clothes Retrieval Benchmark"
    write_listing(root / "Eval" / "list_eval_partition.txt",
                  "image_pair_name_1  image_pair_name_2  item_id  evaluation_status",
                  ["  ".join(pair) for pair in C2S_PAIRS])
    write_listing(root / "Anno" / "list_bbox_consumer2shop.txt",
                  "image_name  clothes_type  source_type  x_1  y_1  x_2  y_2",
                  ["img/WOMEN/Dresses/id_00000015/comsumer_01.jpg  3  2  1 2 3 4",
                   "img/WOMEN/Dresses/id_00000015/shop_01.jpg  3  1  5 6 7 8",
                   "img/MEN/Tees/id_00000301/shop_01.jpg  1  1  9 10 11 12"])
    names = dict.fromkeys(name for pair in C2S_PAIRS for name in pair[:2])
    images = [write_image(root / "Img" / name) for name in names]
    return Dataset(root, partial(read_deepfashion_consumer2shop, root), images)


def deepfashion2_annotation(source: str, pair_id: int, *items: dict[str, object]) -> dict[str, object]:
    """A DeepFashion2 ``annos/*.json`` document with the given items (``item1``, ``item2``...)."""
    document: dict[str, object] = {"source": source, "pair_id": pair_id}
    for number, item in enumerate(items, start=1):
        document[f"item{number}"] = {
            "segmentation": [[1, 1, 5, 1, 5, 5]], "landmarks": [1, 1, 2], "scale": 2, "occlusion": 1, "zoom_in": 1,
            "viewpoint": 2, "category_id": 1, "category_name": "short sleeve top", "style": 1,
            "bounding_box": [1, 2, 30, 40], **item,
        }
    return document


def write_deepfashion2_split(folder: Path, documents: dict[str, dict[str, object]]) -> list[Path]:
    images = []
    for stem, document in documents.items():
        (folder / "annos").mkdir(parents=True, exist_ok=True)
        (folder / "annos" / f"{stem}.json").write_text(json.dumps(document))
        images.append(write_image(folder / "image" / f"{stem}.jpg"))
    return images


@pytest.fixture
def deepfashion2(tmp_path: Path) -> Dataset:
    """``validation/`` (the dataset's root is its parent, which also holds a one-image ``train/`` and ``test/``)."""
    write_deepfashion2_split(tmp_path / "deepfashion2" / "train", {"000001": deepfashion2_annotation("user", 1, {})})
    write_image(tmp_path / "deepfashion2" / "test" / "image" / "000001.jpg")
    folder = tmp_path / "deepfashion2" / "validation"
    images = write_deepfashion2_split(folder, {
        "000001": deepfashion2_annotation(
            "user", 1, {"style": 1},
            {"style": 0, "category_id": 8, "category_name": "trousers", "bounding_box": [0, 50, 20, 90]}),
        "000002": deepfashion2_annotation("shop", 1, {"style": 1, "viewpoint": 1, "occlusion": 3}),
        "000003": deepfashion2_annotation("shop", 2, {"style": 2, "category_id": 9, "category_name": "skirt"}),
    })
    return Dataset(folder, partial(read_deepfashion2, folder), images)


IMATERIALIST_LABELS = {"1": ["62", "17"], "2": ["3"], "3": ["17", "3", "62"]}


@pytest.fixture
def imaterialist(tmp_path: Path) -> Dataset:
    images_dir = tmp_path / "images" / "train"
    document = {
        "images": [{"url": f"https://example.com/{i}-large", "imageId": i} for i in ("1", "2", "3", "4")],
        "annotations": [{"imageId": i, "labelId": labels} for i, labels in IMATERIALIST_LABELS.items()],
    }
    path = tmp_path / "train.json"
    path.write_text(json.dumps(document))
    images = [write_image(images_dir / f"{i}.jpg") for i in ("1", "2", "3", "4")]
    return Dataset(path, partial(read_imaterialist, path, images_dir), images)


JD_ROWS = {
    "picture1": "1,0,0,0,0,0,0,0,0,1,0,0,0",
    "picture2": "0,1,1,0,0,0,0,0,0,0,0,0,0",
    "picture3": "0,0,0,0,0,0,0,0,0,0,0,0,1",
}


@pytest.fixture
def jd_style(tmp_path: Path) -> Dataset:
    path = tmp_path / "train.txt"
    path.write_text("".join(f"{name},http://img.example.com/{name}.jpg,{flags}\n" for name, flags in JD_ROWS.items()))
    images = [write_image(tmp_path / "images" / f"{name}.jpg") for name in JD_ROWS]
    return Dataset(path, partial(read_jd_style, path, tmp_path / "images"), images)


@pytest.fixture
def generic(tmp_path: Path) -> Dataset:
    images = [write_image(tmp_path / "photos" / f"{n}.jpg") for n in range(3)]
    path = tmp_path / "catalogue.csv"
    path.write_text("path,split,red\n" + "".join(f"photos/{n}.jpg,train,{n % 2}\n" for n in range(3)))
    return Dataset(path, partial(read_generic, path, tags=["red"]), images)
