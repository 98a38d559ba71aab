"""DeepFashion2 reader: one manifest row per annotated garment, for detection-free street-to-shop retrieval.

Layout and fields follow the dataset README (switchablenorms/DeepFashion2, "Data Organization"): a split folder
holds ``image/000001.jpg`` and ``annos/000001.json``; each JSON has the image-level ``source`` (``user`` or ``shop``)
and ``pair_id``, and one ``item<N>`` object per garment with ``category_id``/``category_name`` (13 categories),
``style``, ``bounding_box`` ``[x1, y1, x2, y2]``, ``scale``, ``occlusion``, ``zoom_in``, ``viewpoint``, landmarks and
segmentation (the last two are not needed for tagging or retrieval and are not read into the manifest).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from fashionlens.data.readers.generic import DOMAIN_ALIASES, build_manifest, split_from_name
from fashionlens.data.records import BASE_COLUMNS, CLASS_PREFIX, META_PREFIX, Manifest
from fashionlens.errors import DataError

#: Decoded values of the per-item variation codes (README: 1 = small scale / slight occlusion / no zoom-in / no wear).
VARIATIONS: Mapping[str, Mapping[int, str]] = {
    "scale": {1: "small", 2: "modest", 3: "large"},
    "occlusion": {1: "slight", 2: "medium", 3: "heavy"},
    "zoom_in": {1: "no", 2: "medium", 3: "large"},
    "viewpoint": {1: "no-wear", 2: "frontal", 3: "side-or-back"},
}
_ITEM_KEY = re.compile(r"item\d+")
_COLUMNS = [*BASE_COLUMNS, CLASS_PREFIX + "category", META_PREFIX + "pair_id", META_PREFIX + "style",
            *(META_PREFIX + field for field in VARIATIONS)]


def read_deepfashion2(root: str | Path, *, skip_missing: bool = True) -> Manifest:
    """Read DeepFashion2 annotations: one row per garment, cropped by its box.

    ``root`` is either one split folder -- ``annos/`` plus ``image/`` (or ``images/``, as some re-packaged copies
    name it), the folder's name giving the split: ``train`` -> train, ``validation`` -> val -- or the dataset folder
    holding such split folders (``test/`` has no public annotations and is ignored).

    Each row has ``class:category`` (the ``category_name``), ``domain`` (``user`` -> street, ``shop`` -> shop), the
    box, ``meta:pair_id``, ``meta:style`` and the decoded variations (``meta:scale``, ``meta:occlusion``,
    ``meta:zoom_in``, ``meta:viewpoint``). ``item_id`` is ``"<pair_id>:<style>"`` only when ``style > 0``: by the
    DeepFashion2 protocol a shop and a street garment match only if they share ``pair_id`` and a positive ``style``,
    so style-0 garments get no identity and never count as matches. When several split folders are read, the item id
    is prefixed with the folder name (``"validation/12:1"``) because pair ids are only unique within a split.

    Args:
        root: A split folder or the dataset folder.
        skip_missing: Drop and count images missing on disk (``stats["missing_images"]``), else raise ImageError.

    Raises:
        DataError: No ``annos`` folder, unreadable JSON, or a missing / malformed field (file and key named).
    """
    root = Path(root).expanduser().resolve()
    if (root / "annos").is_dir():
        folders = [(root, "")]
    else:
        folders = [(folder, f"{folder.name}/") for folder in sorted(root.iterdir() if root.is_dir() else [])
                   if (folder / "annos").is_dir()]
    if not folders:
        raise DataError(f"no DeepFashion2 'annos' folder in {root} or in its split folders (train/, validation/)")
    rows: list[dict[str, Any]] = []
    files = 0
    for folder, prefix in folders:
        split = split_from_name(folder.name)
        images = folder / "images" if (folder / "images").is_dir() else folder / "image"
        for anno in sorted((folder / "annos").glob("*.json")):
            rows.extend(_garments(anno, images / f"{anno.stem}.jpg", split, prefix))
            files += 1
    frame = pd.DataFrame(rows, columns=_COLUMNS)
    return build_manifest(frame, name="deepfashion2", source=root, skip_missing=skip_missing,
                          stats={"annotation_files": files})


def _garments(anno: Path, image: Path, split: str, prefix: str) -> list[dict[str, Any]]:
    """The rows of one annotation file (one per ``item<N>``)."""
    try:
        data = json.loads(anno.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DataError(f"cannot read DeepFashion2 annotation {anno}: {error}") from error
    if not isinstance(data, dict):
        raise DataError(f"{anno}: expected a JSON object")
    source = _field(anno, data, "source", str)
    if source not in ("user", "shop"):
        raise DataError(f"{anno}: 'source' must be 'user' or 'shop', got {source!r}")
    pair_id = _field(anno, data, "pair_id", int)
    rows = []
    for key in sorted((key for key in data if _ITEM_KEY.fullmatch(key)), key=lambda key: int(key[4:])):
        item = data[key]
        if not isinstance(item, dict):
            raise DataError(f"{anno}: '{key}' must be a JSON object")
        where = f"{key}."
        style = _field(anno, item, "style", int, where)
        box = _field(anno, item, "bounding_box", list, where)
        if len(box) != 4 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in box):
            raise DataError(f"{anno}: '{key}.bounding_box' must be [x1, y1, x2, y2], got {box!r}")
        row: dict[str, Any] = {
            "path": str(image), "split": split, "domain": DOMAIN_ALIASES[source],
            "item_id": f"{prefix}{pair_id}:{style}" if style > 0 else "",
            "bbox_x0": float(box[0]), "bbox_y0": float(box[1]), "bbox_x1": float(box[2]), "bbox_y1": float(box[3]),
            CLASS_PREFIX + "category": _field(anno, item, "category_name", str, where),
            META_PREFIX + "pair_id": pair_id, META_PREFIX + "style": style,
        }
        for field, names in VARIATIONS.items():
            code = item.get(field)
            if code is not None and (not isinstance(code, int) or code not in names):
                raise DataError(f"{anno}: '{key}.{field}' must be one of {sorted(names)}, got {code!r}")
            row[META_PREFIX + field] = names[code] if code is not None else None
        rows.append(row)
    return rows


def _field(anno: Path, data: Mapping[str, Any], key: str, kind: type, where: str = "") -> Any:
    value = data.get(key)
    if value is None:
        raise DataError(f"{anno}: missing '{where}{key}'")
    if not isinstance(value, kind) or isinstance(value, bool) or (kind is str and not value):
        raise DataError(f"{anno}: '{where}{key}' must be a {'non-empty ' if kind is str else ''}{kind.__name__}, "
                        f"got {value!r}")
    return value
