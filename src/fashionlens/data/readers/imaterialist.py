"""iMaterialist Challenge (Fashion) at FGVC5, 2018: 228 multi-label attributes on ~1M product photos.

The Kaggle release (kaggle.com/c/imaterialist-challenge-fashion-2018) ships ``train.json``, ``validation.json`` and
``test.json``: ``{"images": [{"url": ..., "imageId": "1"}, ...], "annotations": [{"imageId": "1",
"labelId": ["62", "17", ...]}, ...]}`` (``test.json`` has no annotations). Only URLs are distributed, so images are
fetched with :func:`fashionlens.data.readers.download.download_images` (see :func:`imaterialist_downloads`) into a
folder of ``<imageId>.jpg`` files, as the competition's download scripts do (e.g. KDercksen/hunter2_fashion). The
downloader saves a file under its real format's extension (``<imageId>.png`` when a server sends a PNG), and the
reader finds it whatever the extension; an ``imageId`` that is not a plain file name (``../../x``, ``/abs/path``)
becomes a safe one (:func:`~fashionlens.data.readers.download.safe_id`), the same in the downloads and the manifest.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fashionlens.data.readers.download import downloaded_files, safe_id
from fashionlens.data.readers.generic import build_manifest, split_from_name
from fashionlens.data.records import META_PREFIX, TAG_PREFIX, Manifest
from fashionlens.errors import DataError


def read_imaterialist(json_path: str | Path, images_dir: str | Path | None = None, *, split: str | None = None,
                      skip_missing: bool = True) -> Manifest:
    """Read one iMaterialist-Fashion JSON file into a manifest of ``<images_dir>/<imageId>.<ext>`` rows.

    Every ``labelId`` seen in the file becomes ``tag:<labelId>`` (ordered numerically). An annotation lists *all*
    of an image's labels, so each annotated image is 1 for its labels and 0 -- a true negative -- for the others;
    images without an annotation (all of ``test.json``) stay unlabelled. The URL is kept as ``meta:url``.

    Args:
        json_path: ``train.json``, ``validation.json`` or ``test.json``.
        images_dir: Folder of downloaded ``<imageId>.jpg`` files (or ``.png``... as the downloader saved them); by
            default the folder named after the JSON file beside it (``data/train.json`` -> ``data/train/``), the
            layout the competition's scripts use.
        split: The rows' split; by default taken from the file name (``validation.json`` -> ``val``).
        skip_missing: Drop and count images not downloaded (``stats["missing_images"]``); images with dead URLs
            are the norm for this dataset. When false, the first missing image is an ImageError.

    Raises:
        DataError: Unreadable JSON, a missing key, a duplicate ``imageId``, or an annotation of an unknown image.
    """
    json_path = Path(json_path).expanduser().resolve()
    data = _load(json_path)
    entries = _images(json_path, data)
    position = {image_id: row for row, (image_id, _) in enumerate(entries)}
    annotations = data.get("annotations")
    label_sets: dict[str, set[str]] = {}
    if annotations is not None:
        if not isinstance(annotations, list):
            raise DataError(f"{json_path}: 'annotations' must be a list")
        for index, annotation in enumerate(annotations):
            image_id = _key(json_path, annotation, "imageId", f"annotations[{index}]")
            labels = annotation.get("labelId")
            if not isinstance(labels, list):
                raise DataError(f"{json_path}: annotations[{index}] has no 'labelId' list")
            if image_id not in position:
                raise DataError(f"{json_path}: annotations[{index}] refers to unknown imageId '{image_id}'")
            label_sets.setdefault(image_id, set()).update(str(label) for label in labels)
    names = sorted(set().union(*label_sets.values()), key=lambda label: (not label.isdigit(), label.zfill(12)))
    column = {name: index for index, name in enumerate(names)}
    matrix = np.full((len(entries), len(names)), np.nan, dtype=np.float32)
    for image_id, labels in label_sets.items():
        row = position[image_id]
        matrix[row] = 0.0
        matrix[row, [column[label] for label in labels]] = 1.0
    images = _images_dir(json_path, images_dir)
    found = downloaded_files(images)
    frame = pd.DataFrame({
        "path": [str(found.get(name) or images / f"{name}.jpg") for name in map(safe_id, (i for i, _ in entries))],
        "split": split if split is not None else split_from_name(json_path.name),
        META_PREFIX + "url": [url or None for _, url in entries],
    })
    frame = pd.concat([frame, pd.DataFrame(matrix, columns=[TAG_PREFIX + name for name in names])], axis=1)
    return build_manifest(frame, name="imaterialist", source=json_path, skip_missing=skip_missing,
                          stats={"unlabelled_images": len(entries) - len(label_sets)})


def imaterialist_downloads(json_path: str | Path, images_dir: str | Path | None = None) -> list[tuple[str, Path]]:
    """``(url, <images_dir>/<imageId>.jpg)`` pairs for :func:`~fashionlens.data.readers.download.download_images`.

    ``images_dir`` defaults as in :func:`read_imaterialist`; images without a URL are left out. Ids become file names
    through :func:`~fashionlens.data.readers.download.safe_id`, so every destination lies in ``images_dir``; pass it
    as the downloader's ``root`` too, which also refuses a destination that a symbolic link takes elsewhere.
    """
    json_path = Path(json_path).expanduser().resolve()
    images = _images_dir(json_path, images_dir)
    return [(url, images / f"{safe_id(image_id)}.jpg") for image_id, url in _images(json_path, _load(json_path))
            if url]


def _images_dir(json_path: Path, images_dir: str | Path | None) -> Path:
    return Path(images_dir).expanduser().resolve() if images_dir is not None else json_path.with_suffix("")


def _load(json_path: Path) -> dict[str, Any]:
    try:
        data = json.loads(json_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"iMaterialist JSON file not found: {json_path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DataError(f"cannot read iMaterialist JSON {json_path}: {error}") from error
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DataError(f"{json_path}: expected a JSON object with an 'images' list")
    return data


def _images(json_path: Path, data: dict[str, Any]) -> list[tuple[str, str]]:
    """``(imageId, url)`` per image; the 2018 files hold one URL string (some iMaterialist years: a list of them)."""
    entries, seen = [], set()
    for index, entry in enumerate(data["images"]):
        image_id = _key(json_path, entry, "imageId", f"images[{index}]")
        if image_id in seen:
            raise DataError(f"{json_path}: images[{index}] repeats imageId '{image_id}'")
        seen.add(image_id)
        url = entry.get("url")
        if isinstance(url, list):
            url = url[0] if url else ""
        if not isinstance(url, str | None):
            raise DataError(f"{json_path}: images[{index}] has a 'url' that is not text: {url!r}")
        entries.append((image_id, (url or "").strip()))
    return entries


def _key(json_path: Path, entry: Any, key: str, where: str) -> str:
    value = entry.get(key) if isinstance(entry, dict) else None
    if value is None or str(value).strip() == "":
        raise DataError(f"{json_path}: {where} has no '{key}'")
    return str(value).strip()


MERGED_FILES = ("train.json", "validation.json")
"""The annotated files of an iMaterialist folder, merged by :func:`read_imaterialist_merged`."""


def read_imaterialist_merged(source: str | Path, *, skip_missing: bool = True) -> Manifest:
    """One manifest with one label space from an iMaterialist folder's ``train.json`` and ``validation.json``.

    ``source`` is the folder (each file's images in the folder named after it, as :func:`read_imaterialist`
    expects) or, for ``fashionlens data build imaterialist FILE.json``, a single JSON file read on its own. Rows keep
    their split (``train`` / ``val``). The label space is the union of both files' labels, in numeric order; an
    annotated image lists *all* its labels, so it is 0 -- a true negative -- for a label seen only in the other
    file, while an image without an annotation stays unlabelled for every label.

    Raises:
        DataError: Neither file is in the folder, or one of them is malformed (see :func:`read_imaterialist`).
    """
    source = Path(source).expanduser()
    if not source.is_dir():
        return read_imaterialist(source, skip_missing=skip_missing)
    files = [source / name for name in MERGED_FILES if (source / name).is_file()]
    if not files:
        raise DataError(f"{source} holds none of {', '.join(MERGED_FILES)} (the iMaterialist annotation files)")
    parts = [read_imaterialist(path, skip_missing=skip_missing) for path in files]
    names = sorted({name for part in parts for name in part.tag_names},
                   key=lambda label: (not label.isdigit(), label.zfill(12)))
    frames = []
    for part in parts:
        frame = part.frame.copy()
        annotated = ~np.isnan(part.tag_matrix()).all(axis=1) if part.tag_names else np.zeros(len(frame), bool)
        for name in names:
            if TAG_PREFIX + name not in frame:
                frame[TAG_PREFIX + name] = np.where(annotated, 0.0, np.nan).astype(np.float32)
        frames.append(frame)
    merged = pd.concat(frames, ignore_index=True)
    tag_columns = [TAG_PREFIX + name for name in names]
    merged = merged[[c for c in merged.columns if c not in tag_columns] + tag_columns]
    duplicated = merged["path"].duplicated()
    if duplicated.any():
        raise DataError(f"image {merged['path'][duplicated].iloc[0]} appears in more than one of "
                        f"{', '.join(f.name for f in files)}")
    stats: dict[str, int] = {}
    for part in parts:
        for key, value in part.stats.items():
            stats[key] = stats.get(key, 0) + int(value)
    return Manifest(merged, name="imaterialist", stats=stats)
