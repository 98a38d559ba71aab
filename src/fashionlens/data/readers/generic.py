"""Read a user's own CSV / JSONL manifest, plus the pieces every dataset reader shares.

Users bring their catalogue as a table: one row per image, a ``path`` (or ``image``) column, and label columns in
whatever shape their tooling produced -- binary flag columns, multi-class columns, or one column holding a set of
labels. :func:`read_generic` turns all three into a :class:`~fashionlens.data.records.Manifest` without the user
having to reshape anything, and refuses (with the file, line and column) any value it would otherwise have to guess.

:func:`build_manifest` is the common last step of every reader: public datasets are rarely complete on disk
(dead URLs, partial downloads, held-out images), so rows whose image is missing are dropped and counted rather
than failing a whole ingestion.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fashionlens.data.records import BBOX_COLUMNS, CLASS_PREFIX, DOMAINS, META_PREFIX, SPLITS, TAG_PREFIX, Manifest
from fashionlens.errors import DataError, ImageError

#: Split spellings used by public datasets (DeepFashion2's ``validation`` folder, iMaterialist's
#: ``validation.json``...), mapped to fashionlens splits.
SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
                 "test": "test"}
#: Domain spellings: DeepFashion2 calls street photos ``user``, DeepFashion calls them ``consumer``.
DOMAIN_ALIASES = {"shop": "shop", "street": "street", "user": "street", "consumer": "street"}

_FLAGS = {"1": 1.0, "0": 0.0, "1.0": 1.0, "0.0": 0.0, "true": 1.0, "false": 0.0, "yes": 1.0, "no": 0.0}
_PATH_COLUMNS = ("path", "image")
_DEFAULT_DELIMITERS = r"[,;|]"


def build_manifest(frame: pd.DataFrame, *, name: str, source: str | Path, skip_missing: bool,
                   stats: Mapping[str, int] | None = None) -> Manifest:
    """Make a manifest from a reader's table, dropping the rows whose image file does not exist.

    Args:
        frame: Manifest columns, with absolute image paths in ``path``.
        name: Manifest name.
        source: The annotation file the rows came from, named in the error message.
        skip_missing: Drop and count missing images (``stats["missing_images"]``, distinct files); when false,
            the first missing image is an :class:`ImageError`, for users who need the complete dataset.
        stats: Reader statistics to keep alongside ``missing_images``.
    """
    paths = frame["path"].astype(str)
    exists = {path: os.path.isfile(path) for path in paths.unique()}
    missing = [path for path, found in exists.items() if not found]
    if missing and not skip_missing:
        raise ImageError(f"image not found: {missing[0]} (listed in {source}; {len(missing)} missing in total)")
    present = paths.map(exists).to_numpy(dtype=bool)
    return Manifest(frame[present], name=name, stats={**(stats or {}), "missing_images": len(missing)})


def split_from_name(name: str) -> str:
    """The split a dataset file or folder is named after (``train.json`` -> ``train``), or ``""``."""
    return SPLIT_ALIASES.get(Path(name).stem.lower(), "")


def read_generic(path: str | Path, *, tags: Sequence[str] = (), classes: Sequence[str] = (),
                 labels: str | None = None, delimiter: str | None = None, meta: Sequence[str] = (),
                 name: str | None = None, skip_missing: bool = True) -> Manifest:
    """Read a user's CSV (``.csv``/``.tsv``) or JSON-lines (``.jsonl``/``.ndjson``) manifest.

    Recognised columns: ``path`` or ``image`` (required; relative paths are resolved against the manifest's
    folder so a dataset folder can be moved as a whole), and optionally ``split`` (train/val/test, also
    ``validation``), ``item_id``, ``domain`` (shop/street, also ``consumer``/``user``) and a box, either as
    ``bbox_x0, bbox_y0, bbox_x1, bbox_y1`` columns or one ``bbox`` column (``"x0,y0,x1,y1"`` or a list).

    Args:
        path: The manifest file.
        tags: Binary label columns: ``1/0``, ``true/false``, ``yes/no``; an empty cell is *unlabelled*.
        classes: Multi-class columns (e.g. ``articleType``); an empty cell is unlabelled.
        labels: A column holding each image's label set -- a JSON list, or text split on ``delimiter``. Every
            distinct label becomes a tag: 1 if in the row's set, else 0, since a listed set is complete. An empty
            cell (or missing key) leaves the row unlabelled; an empty list ``[]`` means "none of them".
        delimiter: Separator of label sets given as text; by default any of ``,`` ``;`` ``|`` (not spaces, which
            occur inside labels such as ``long sleeve``).
        meta: Columns carried along as ``meta:<column>`` (product name, brand...) for search filters and reports.
        name: Manifest name (default: the file's stem).
        skip_missing: See :func:`build_manifest`.

    Raises:
        DataError: Unreadable file, missing column (the available ones are listed), or a bad value (file, line,
            column and value named).
        ImageError: A listed image is missing and ``skip_missing`` is false.
    """
    path = Path(path).expanduser().resolve()
    rows, lines, columns = _load_rows(path)
    path_column = next((column for column in _PATH_COLUMNS if column in columns), None)
    if path_column is None:
        raise DataError(f"{path}: no 'path' or 'image' column (columns: {', '.join(columns) or 'none'})")
    for column in (*tags, *classes, *meta, *([labels] if labels else [])):
        if column not in columns:
            raise DataError(f"{path}: no column '{column}' (columns: {', '.join(columns)})")

    def convert(column: str, function: Callable[[Any], Any]) -> list[Any]:
        values = []
        for row, line in zip(rows, lines, strict=True):
            try:
                values.append(function(row.get(column)))
            except ValueError as error:
                raise DataError(f"{path}, line {line}, column '{column}': {error}") from error
        return values

    base = str(path.parent)
    out: dict[str, list[Any]] = {
        "path": convert(path_column, lambda value: os.path.normpath(os.path.join(base, _image_path(value)))),
        "split": convert("split", _split),
        "item_id": convert("item_id", _text),
        "domain": convert("domain", _domain),
    }
    if "bbox" in columns:
        boxes = convert("bbox", _bbox)
        out.update({column: [box[i] for box in boxes] for i, column in enumerate(BBOX_COLUMNS)})
    else:
        out.update({column: convert(column, _number) for column in BBOX_COLUMNS})
    out.update({TAG_PREFIX + column: convert(column, _flag) for column in tags})
    out.update({CLASS_PREFIX + column: convert(column, _optional_text) for column in classes})
    out.update({META_PREFIX + column: convert(column, _optional_text) for column in meta})
    frame = pd.DataFrame(out)
    if labels:
        sets = convert(labels, lambda value: _label_set(value, delimiter))
        label_tags = _label_tags(sets)
        clashes = sorted(set(label_tags.columns) & set(frame.columns))
        if clashes:
            raise DataError(f"{path}: labels in column '{labels}' clash with tag columns: {clashes}")
        frame = pd.concat([frame, label_tags], axis=1)
    return build_manifest(frame, name=name or path.stem, source=path, skip_missing=skip_missing)


def _load_rows(path: Path) -> tuple[list[dict[str, Any]], list[int], list[str]]:
    """Rows as dicts, the line each came from, and the column names (in first-seen order)."""
    if not path.is_file():
        raise DataError(f"manifest file not found: {path}")
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        try:
            frame = pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",", dtype=str, keep_default_na=False)
        except (ValueError, OSError, UnicodeDecodeError) as error:
            raise DataError(f"cannot read {path}: {error}") from error
        columns = [str(column) for column in frame.columns]
        records = [dict(zip(columns, values, strict=True)) for values in frame.itertuples(index=False, name=None)]
        return records, list(range(2, len(records) + 2)), columns
    if suffix in (".jsonl", ".ndjson"):
        rows: list[dict[str, Any]] = []
        lines: list[int] = []
        seen: dict[str, None] = {}
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise DataError(f"cannot read {path}: {error}") from error
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise DataError(f"{path}, line {number}: invalid JSON ({error.msg})") from error
            if not isinstance(row, dict):
                raise DataError(f"{path}, line {number}: expected a JSON object, got {type(row).__name__}")
            rows.append(row)
            lines.append(number)
            seen.update(dict.fromkeys(map(str, row)))
        return rows, lines, list(seen)
    raise DataError(f"cannot read manifest '{path}': expected a .csv, .tsv, .jsonl or .ndjson file")


def _text(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value).strip()


def _optional_text(value: Any) -> str | None:
    return _text(value) or None


def _image_path(value: Any) -> str:
    text = _text(value)
    if not text:
        raise ValueError("empty image path")
    return os.path.expanduser(text)


def _split(value: Any) -> str:
    text = _text(value).lower()
    if text and text not in SPLIT_ALIASES:
        raise ValueError(f"unknown split '{text}'; expected one of {SPLITS} or empty")
    return SPLIT_ALIASES.get(text, "")


def _domain(value: Any) -> str:
    text = _text(value).lower()
    if text and text not in DOMAIN_ALIASES:
        raise ValueError(f"unknown domain '{text}'; expected one of {DOMAINS} or empty")
    return DOMAIN_ALIASES.get(text, "")


def _flag(value: Any) -> float:
    text = _text(value).lower()
    if not text:
        return math.nan
    if text not in _FLAGS:
        raise ValueError(f"expected 1/0, true/false, yes/no or empty, got {value!r}")
    return _FLAGS[text]


def _number(value: Any) -> float:
    text = _text(value)
    if not text:
        return math.nan
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"expected a number, got {value!r}") from None


def _bbox(value: Any) -> tuple[float, float, float, float]:
    if isinstance(value, (list, tuple)):
        parts = [str(part) for part in value]
    else:
        text = _text(value).strip("[]() ")
        if not text:
            return math.nan, math.nan, math.nan, math.nan
        parts = re.split(r"[,\s]+", text)
    if len(parts) != 4:
        raise ValueError(f"expected a box 'x0,y0,x1,y1', got {value!r}")
    x0, y0, x1, y1 = (_number(part) for part in parts)
    return x0, y0, x1, y1


def _label_set(value: Any, delimiter: str | None) -> frozenset[str] | None:
    if isinstance(value, str) and value.strip().startswith("["):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise ValueError(f"invalid JSON list {value!r}") from None
    if isinstance(value, (list, tuple)):
        return frozenset(filter(None, map(_text, value)))
    text = _text(value)
    if not text:
        return None
    parts = text.split(delimiter) if delimiter else re.split(_DEFAULT_DELIMITERS, text)
    return frozenset(filter(None, (part.strip() for part in parts)))


def _label_tags(sets: Sequence[frozenset[str] | None]) -> pd.DataFrame:
    """One 1/0 column per distinct label (sorted); rows without a set are NaN (unlabelled)."""
    names = sorted(set().union(*(labels for labels in sets if labels is not None)))
    index = {label: position for position, label in enumerate(names)}
    matrix = np.zeros((len(sets), len(names)), dtype=np.float32)
    for row, labels in enumerate(sets):
        if labels is None:
            matrix[row] = np.nan
        else:
            matrix[row, [index[label] for label in labels]] = 1.0
    return pd.DataFrame(matrix, columns=[TAG_PREFIX + label for label in names])
