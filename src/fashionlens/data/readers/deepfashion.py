"""DeepFashion readers: Category and Attribute Prediction, In-shop Clothes Retrieval, Consumer-to-shop Retrieval.

Formats follow the benchmarks' READMEs, mirrored in open-mmlab/mmfashion (``docs/dataset/ATTR_DATASET.md``,
``IN_SHOP_DATASET.md``, ``CONSUMER_TO_SHOP_DATASET.md``): every ``list_*.txt`` starts with its number of rows, then a
line of entry names, then whitespace-separated rows. Annotation files are looked up in ``Anno/`` (``Anno_coarse/`` in
the 2020 re-release), ``Eval/`` and the benchmark folder itself; image names (``img/...jpg``) are resolved against
``Img/`` when it exists (where the official ``img.zip`` is unpacked), else against the benchmark folder.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from fashionlens.data.readers.generic import build_manifest
from fashionlens.data.records import BBOX_COLUMNS, CLASS_PREFIX, META_PREFIX, SPLITS, TAG_PREFIX, BBox, Manifest
from fashionlens.errors import DataError

#: ``clothes type`` / ``category type`` codes shared by all three benchmarks.
CLOTHES_TYPES = {"1": "upper", "2": "lower", "3": "full"}
#: ``attribute type`` codes of ``list_attr_cloth.txt``.
ATTRIBUTE_TYPES = {"1": "texture", "2": "fabric", "3": "shape", "4": "part", "5": "style"}
#: ``pose type`` codes of In-shop's ``list_bbox_inshop.txt``.
INSHOP_VIEWS = {"1": "frontal", "2": "side", "3": "back", "4": "zoom-out", "5": "zoom-in", "6": "stand-alone"}
#: ``source type`` codes of ``list_bbox_consumer2shop.txt``.
SOURCE_TYPES = {"1": "shop", "2": "street"}

_ANNOTATION_FOLDERS = ("Anno", "Anno_coarse", "Eval", "")
_SPLIT_CHOICES = {split: split for split in SPLITS}
_INSHOP_STATUSES = {"train": "train", "query": "test", "gallery": "test"}
#: Attribute label -> tag value, indexed by label + 1: -1 negative, 0 unknown (unlabelled, not negative), 1 positive.
_ATTRIBUTE_VALUES = np.array([0.0, np.nan, 1.0], dtype=np.float32)


class _BoxRow(NamedTuple):
    box: BBox
    codes: list[str]  # the decoded fields between the image name and the box (clothes type, pose...)


def read_deepfashion(root: str | Path, *, attributes: bool = True, skip_missing: bool = True) -> Manifest:
    """Read the Category and Attribute Prediction Benchmark (289,222 images, 50 categories, 1,000 attributes).

    Rows are the images of ``list_category_img.txt`` (``image_name category_label``), with

    * ``class:category`` (e.g. ``Blouse``) and ``class:category_type`` (upper/lower/full) from
      ``list_category_cloth.txt``, which the 1-based ``category_label`` indexes;
    * ``split`` from ``list_eval_partition.txt`` (``image_name evaluation_status``: train/val/test);
    * the box from ``list_bbox.txt`` (``image_name x_1 y_1 x_2 y_2``);
    * with ``attributes``, one ``tag:<name>`` per line of ``list_attr_cloth.txt`` (``attribute_name attribute_type``;
      names contain spaces, so the name is everything before the trailing type number), valued from
      ``list_attr_img.txt``: ``1`` positive, ``-1`` negative, and ``0`` "unknown", kept *unlabelled* so it is
      neither trained nor scored as a negative. A name listed twice gets its type appended (``"knit (fabric)"``);
      an image without an attribute row is unlabelled, and rows of images not in ``list_category_img.txt`` are
      ignored.

    Args:
        root: The benchmark folder.
        attributes: Read the attributes; turn off to skip the largest file when only categories are needed.
        skip_missing: Drop and count images missing on disk (``stats["missing_images"]``), else raise ImageError.

    Raises:
        DataError: A missing file, a malformed line (file and line named), or a file shorter than its row count.
    """
    root = _root(root)
    category_names = _locate(root, "list_category_cloth.txt")
    categories = [(name, _choice(category_names, line_no, code, CLOTHES_TYPES, "category type"))
                  for line_no, (name, code) in _rows(category_names, 2, _name_and_code)]
    category_images = _locate(root, "list_category_img.txt")
    names, labels = [], []
    for line_no, (name, label) in _rows(category_images, 2):
        number = _integer(category_images, line_no, label, "category label")
        if not 1 <= number <= len(categories):
            raise DataError(f"{category_images}, line {line_no}: category label {number} is outside "
                            f"1..{len(categories)} (the categories of {category_names.name})")
        names.append(name)
        labels.append(categories[number - 1])
    partition = _locate(root, "list_eval_partition.txt")
    splits = {name: _choice(partition, line_no, status, _SPLIT_CHOICES, "evaluation status")
              for line_no, (name, status) in _rows(partition, 2)}
    columns: dict[str, list[Any]] = {
        "split": [splits.get(name, "") for name in names],
        CLASS_PREFIX + "category": [category for category, _ in labels],
        CLASS_PREFIX + "category_type": [kind for _, kind in labels],
    }
    frame = _frame(root, names, columns, _read_boxes(_locate(root, "list_bbox.txt"), ()))
    if attributes:
        frame = pd.concat([frame, _read_attributes(root, names)], axis=1)
    return build_manifest(frame, name="deepfashion", source=category_images, skip_missing=skip_missing)


def read_deepfashion_inshop(root: str | Path, *, skip_missing: bool = True) -> Manifest:
    """Read the In-shop Clothes Retrieval Benchmark (52,712 shop photos of 7,982 items).

    ``list_eval_partition.txt`` rows are ``image_name item_id evaluation_status`` with status train, query or
    gallery. All photos are shop photos (``domain="shop"``); ``train`` stays ``train``, while query and gallery
    images both become ``test`` with ``meta:role`` = ``query``/``gallery``, because the benchmark's protocol searches
    queries among gallery images of the same unseen items. ``list_bbox_inshop.txt`` (``image_name clothes_type
    pose_type x_1 y_1 x_2 y_2``) is optional -- many copies ship only the partition file -- and adds the box,
    ``class:category_type`` and ``meta:view`` (frontal/side/back/zoom-out/zoom-in/stand-alone).

    Args:
        root: The benchmark folder.
        skip_missing: Drop and count images missing on disk (``stats["missing_images"]``), else raise ImageError.
    """
    root = _root(root)
    partition = _locate(root, "list_eval_partition.txt")
    names, items, statuses = [], [], []
    for line_no, (name, item, status) in _rows(partition, 3):
        _choice(partition, line_no, status, _INSHOP_STATUSES, "evaluation status")
        names.append(name)
        items.append(item)
        statuses.append(status)
    boxes = _optional_boxes(root, "list_bbox_inshop.txt", (("clothes type", CLOTHES_TYPES),
                                                           ("pose type", INSHOP_VIEWS)))
    columns: dict[str, list[Any]] = {
        "split": [_INSHOP_STATUSES[status] for status in statuses],
        "item_id": items,
        "domain": ["shop"] * len(names),
        META_PREFIX + "role": [None if status == "train" else status for status in statuses],
        CLASS_PREFIX + "category_type": _box_codes(boxes, names, 0),
        META_PREFIX + "view": _box_codes(boxes, names, 1),
    }
    frame = _frame(root, names, columns, boxes)
    return build_manifest(frame, name="deepfashion-inshop", source=partition, skip_missing=skip_missing)


def read_deepfashion_consumer2shop(root: str | Path, *, skip_missing: bool = True) -> Manifest:
    """Read the Consumer-to-shop Clothes Retrieval Benchmark (239,557 photos of 33,881 items).

    ``list_eval_partition.txt`` rows are ``image_pair_name_1 image_pair_name_2 item_id evaluation_status``: a
    consumer (street) photo, a shop photo of the same item, and train/val/test. A photo takes part in many pairs, so
    each image becomes one row (``domain`` street or shop) carrying the item and split of its pairs; ``stats["pairs"]``
    counts the pairs. An image listed with two different items, splits or roles is a DataError, since retrieval
    scores would otherwise silently count wrong matches. ``list_bbox_consumer2shop.txt`` (``image_name clothes_type
    source_type x_1 y_1 x_2 y_2``) is optional and adds the box and ``class:category_type``.

    Args:
        root: The benchmark folder.
        skip_missing: Drop and count images missing on disk (``stats["missing_images"]``), else raise ImageError.
    """
    root = _root(root)
    partition = _locate(root, "list_eval_partition.txt")
    images: dict[str, tuple[str, str, str]] = {}
    pairs = 0
    for line_no, (consumer, shop, item, status) in _rows(partition, 4):
        split = _choice(partition, line_no, status, _SPLIT_CHOICES, "evaluation status")
        pairs += 1
        for name, domain in ((consumer, "street"), (shop, "shop")):
            entry = (item, split, domain)
            first = images.setdefault(name, entry)
            if first != entry:
                raise DataError(f"{partition}, line {line_no}: {name} is listed as (item, split, domain) {entry} "
                                f"but earlier as {first}")
    names = list(images)
    boxes = _optional_boxes(root, "list_bbox_consumer2shop.txt", (("clothes type", CLOTHES_TYPES),
                                                                  ("source type", SOURCE_TYPES)))
    columns: dict[str, list[Any]] = {
        "item_id": [images[name][0] for name in names],
        "split": [images[name][1] for name in names],
        "domain": [images[name][2] for name in names],
        CLASS_PREFIX + "category_type": _box_codes(boxes, names, 0),
    }
    frame = _frame(root, names, columns, boxes)
    return build_manifest(frame, name="deepfashion-consumer2shop", source=partition, skip_missing=skip_missing,
                          stats={"pairs": pairs})


# ---------------------------------------------------------------------------------------------------- files
def _root(root: str | Path) -> Path:
    path = Path(root).expanduser().resolve()
    if not path.is_dir():
        raise DataError(f"DeepFashion benchmark folder not found: {path}")
    return path


def _find(root: Path, name: str) -> Path | None:
    return next((root / folder / name for folder in _ANNOTATION_FOLDERS if (root / folder / name).is_file()), None)


def _locate(root: Path, name: str) -> Path:
    path = _find(root, name)
    if path is None:
        raise DataError(f"DeepFashion file '{name}' not found in {root} (looked in Anno/, Anno_coarse/, Eval/ and "
                        "the folder itself)")
    return path


def _name_and_code(line: str) -> list[str]:
    """Split ``"abstract chevron print   1"`` into the (space-containing) name and the trailing code."""
    return line.rsplit(None, 1)


def _rows(path: Path, n_fields: int, split: Callable[[str], list[str]] = str.split) -> Iterator[tuple[int, list[str]]]:
    """Yield ``(line number, fields)`` for the data rows of a DeepFashion list file.

    Line 1 holds the row count and line 2 the entry names. A file with fewer or more rows than announced is an
    error (reported once every row is read), so a truncated download is not mistaken for a smaller dataset.
    """
    seen = 0
    try:
        with path.open(encoding="utf-8") as handle:
            first = handle.readline()
            try:
                expected = int(first)
            except ValueError:
                raise DataError(f"{path}, line 1: expected the number of rows, got {first.strip()[:40]!r}") from None
            handle.readline()
            for line_no, line in enumerate(handle, start=3):
                if not line.strip():
                    continue
                fields = split(line.strip())
                if len(fields) != n_fields:
                    raise DataError(f"{path}, line {line_no}: expected {n_fields} fields, got {len(fields)}")
                seen += 1
                yield line_no, fields
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"cannot read {path}: {error}") from error
    if seen != expected:
        raise DataError(f"{path}: line 1 announces {expected} rows but {seen} follow (truncated or edited file?)")


def _choice(path: Path, line_no: int, value: str, choices: Mapping[str, str], what: str) -> str:
    if value not in choices:
        raise DataError(f"{path}, line {line_no}: unknown {what} '{value}'; expected one of {sorted(choices)}")
    return choices[value]


def _integer(path: Path, line_no: int, value: str, what: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise DataError(f"{path}, line {line_no}: {what} must be an integer, got '{value}'") from None


def _read_boxes(path: Path, codes: Sequence[tuple[str, Mapping[str, str]]]) -> dict[str, _BoxRow]:
    """Rows ``image_name <codes...> x_1 y_1 x_2 y_2``, keyed by image name, with each code decoded."""
    boxes = {}
    for line_no, fields in _rows(path, 5 + len(codes)):
        decoded = [_choice(path, line_no, value, choices, what)
                   for value, (what, choices) in zip(fields[1:-4], codes, strict=True)]
        x0, y0, x1, y1 = (_integer(path, line_no, value, "box coordinate") for value in fields[-4:])
        boxes[fields[0]] = _BoxRow((float(x0), float(y0), float(x1), float(y1)), decoded)
    return boxes


def _optional_boxes(root: Path, name: str, codes: Sequence[tuple[str, Mapping[str, str]]]) -> dict[str, _BoxRow]:
    path = _find(root, name)
    return _read_boxes(path, codes) if path is not None else {}


def _box_codes(boxes: Mapping[str, _BoxRow], names: Sequence[str], index: int) -> list[str | None]:
    return [boxes[name].codes[index] if name in boxes else None for name in names]


def _frame(root: Path, names: Sequence[str], columns: Mapping[str, list[Any]],
           boxes: Mapping[str, _BoxRow]) -> pd.DataFrame:
    """Manifest columns: absolute paths, the given columns, and boxes (NaN for images without one)."""
    base = str(root / "Img") if (root / "Img").is_dir() else str(root)
    no_box = (np.nan, np.nan, np.nan, np.nan)
    box_rows = [boxes[name].box if name in boxes else no_box for name in names]
    data: dict[str, list[Any]] = {"path": [os.path.join(base, name) for name in names], **columns}
    data.update({column: [box[i] for box in box_rows] for i, column in enumerate(BBOX_COLUMNS)})
    return pd.DataFrame(data)


def _read_attributes(root: Path, names: Sequence[str]) -> pd.DataFrame:
    """``tag:<attribute>`` columns aligned with ``names``; images without an attribute row stay unlabelled."""
    attribute_file = _locate(root, "list_attr_cloth.txt")
    declared = [(name, _choice(attribute_file, line_no, code, ATTRIBUTE_TYPES, "attribute type"))
                for line_no, (name, code) in _rows(attribute_file, 2, _name_and_code)]
    counts = Counter(name for name, _ in declared)
    tags = [f"{name} ({kind})" if counts[name] > 1 else name for name, kind in declared]
    duplicates = sorted(tag for tag, count in Counter(tags).items() if count > 1)
    if duplicates:
        raise DataError(f"{attribute_file}: attribute(s) listed twice with the same type: {duplicates}")
    position = {name: row for row, name in enumerate(names)}
    matrix = np.full((len(names), len(tags)), np.nan, dtype=np.float32)
    image_file = _locate(root, "list_attr_img.txt")
    for line_no, (name, values) in _rows(image_file, 2, lambda line: line.split(None, 1)):
        try:
            labels = np.fromstring(values, dtype=np.int32, sep=" ")
        except ValueError:
            raise DataError(f"{image_file}, line {line_no}: attribute labels must be integers") from None
        if len(labels) != len(tags):
            raise DataError(f"{image_file}, line {line_no}: expected {len(tags)} attribute labels "
                            f"(the attributes of {attribute_file.name}), got {len(labels)}")
        if np.any(np.abs(labels) > 1):
            raise DataError(f"{image_file}, line {line_no}: attribute labels must be -1, 0 or 1")
        if name in position:
            matrix[position[name]] = _ATTRIBUTE_VALUES[labels + 1]
    return pd.DataFrame(matrix, columns=[TAG_PREFIX + tag for tag in tags])
