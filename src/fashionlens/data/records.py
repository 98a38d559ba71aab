"""The canonical labelled-image record and the manifest (a table of records).

Every dataset reader produces a :class:`Manifest`; every task consumes one. A manifest is a pandas table with
fixed columns plus one column per label:

* ``path`` (absolute image path), ``split`` (``train``/``val``/``test`` or empty), ``item_id``, ``domain``
  (``shop``/``street`` or empty), ``bbox_x0, bbox_y0, bbox_x1, bbox_y1`` (pixels, NaN when absent).
* ``tag:<name>`` -- a binary label: ``1.0`` positive, ``0.0`` negative, ``NaN`` *unlabelled* (never negative).
* ``class:<head>`` -- a multi-class head (e.g. ``class:articleType``): the class name, or missing when unlabelled.
* ``meta:<field>`` -- free metadata carried along (product name, year...), used by search filters and reports.

The same information is available row-wise as :class:`ImageRecord` objects.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from fashionlens.errors import DataError
from fashionlens.io import atomic_path

TAG_PREFIX = "tag:"
CLASS_PREFIX = "class:"
META_PREFIX = "meta:"
BBOX_COLUMNS = ("bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1")
BASE_COLUMNS = ("path", "split", "item_id", "domain", *BBOX_COLUMNS)
SPLITS = ("train", "val", "test")
DOMAINS = ("shop", "street")

Domain = Literal["shop", "street"]
BBox = tuple[float, float, float, float]


@dataclass(frozen=True)
class ImageRecord:
    """One labelled image.

    Attributes:
        path: Image file path.
        tags: Binary labels present in the annotation: name -> True (positive) / False (negative).
            A label that is absent from the mapping is *unlabelled*, which is not the same as negative.
        classes: Multi-class heads: head name -> class name. Absent heads are unlabelled.
        bbox: Optional garment box ``(x0, y0, x1, y1)`` in pixels of the original image.
        item_id: Optional product identity shared by the shop and street photos of the same item.
        domain: ``"shop"`` or ``"street"`` when known.
        split: ``"train"``, ``"val"``, ``"test"`` or ``None`` when not yet split.
        meta: Extra fields carried along (display name, year...).
    """

    path: str
    tags: Mapping[str, bool] = field(default_factory=dict)
    classes: Mapping[str, str] = field(default_factory=dict)
    bbox: BBox | None = None
    item_id: str | None = None
    domain: Domain | None = None
    split: str | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)


def _is_missing(value: Any) -> bool:
    if value is None or value is pd.NA:
        return True
    if isinstance(value, (float, np.floating)) and math.isnan(value):
        return True
    return isinstance(value, str) and value == ""


class Manifest:
    """A table of :class:`ImageRecord` rows backed by a :class:`pandas.DataFrame`.

    Args:
        frame: A table with at least a ``path`` column; missing base columns are added empty.
        name: A short name used in messages and reports (e.g. ``"clothing-attributes"``).
        stats: Reader statistics worth reporting (e.g. ``{"missing_images": 278}``).
    """

    def __init__(self, frame: pd.DataFrame, name: str = "manifest", stats: Mapping[str, int] | None = None):
        if "path" not in frame.columns:
            raise DataError(f"manifest '{name}' has no 'path' column (columns: {', '.join(map(str, frame.columns))})")
        frame = frame.copy()
        for column in BASE_COLUMNS:
            if column not in frame.columns:
                frame[column] = np.nan if column.startswith("bbox_") else ""
        for column in ("path", "split", "item_id", "domain"):
            frame[column] = frame[column].fillna("").astype(str)
        for column in self._columns_with(frame, TAG_PREFIX):
            try:
                frame[column] = pd.to_numeric(frame[column], errors="raise").astype("float32")
            except (TypeError, ValueError) as error:
                raise DataError(f"column '{column}' of manifest '{name}' must hold 1, 0 or empty: {error}") from error
        bad_splits = sorted(set(frame["split"]) - {"", *SPLITS})
        if bad_splits:
            raise DataError(f"manifest '{name}' has unknown split value(s) {bad_splits}; expected one of {SPLITS}")
        bad_domains = sorted(set(frame["domain"]) - {"", *DOMAINS})
        if bad_domains:
            raise DataError(f"manifest '{name}' has unknown domain value(s) {bad_domains}; expected one of {DOMAINS}")
        self.frame = frame.reset_index(drop=True)
        self.name = name
        self.stats: dict[str, int] = dict(stats or {})

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_records(cls, records: Iterable[ImageRecord], name: str = "manifest",
                     stats: Mapping[str, int] | None = None) -> Manifest:
        """Build a manifest from records; the union of all label names becomes the columns."""
        rows: list[dict[str, Any]] = []
        for record in records:
            row: dict[str, Any] = {
                "path": record.path,
                "split": record.split or "",
                "item_id": record.item_id or "",
                "domain": record.domain or "",
            }
            box = record.bbox or (np.nan, np.nan, np.nan, np.nan)
            row.update(dict(zip(BBOX_COLUMNS, box, strict=True)))
            row.update({TAG_PREFIX + k: float(v) for k, v in record.tags.items()})
            row.update({CLASS_PREFIX + k: v for k, v in record.classes.items()})
            row.update({META_PREFIX + k: v for k, v in record.meta.items()})
            rows.append(row)
        frame = pd.DataFrame(rows, columns=list(BASE_COLUMNS)) if not rows else pd.DataFrame(rows)
        return cls(frame, name=name, stats=stats)

    # ------------------------------------------------------------------ schema
    @staticmethod
    def _columns_with(frame: pd.DataFrame, prefix: str) -> list[str]:
        return [c for c in frame.columns if isinstance(c, str) and c.startswith(prefix)]

    @property
    def tag_names(self) -> list[str]:
        """Names of the binary labels, in column order."""
        return [c[len(TAG_PREFIX):] for c in self._columns_with(self.frame, TAG_PREFIX)]

    @property
    def class_heads(self) -> list[str]:
        """Names of the multi-class heads, in column order."""
        return [c[len(CLASS_PREFIX):] for c in self._columns_with(self.frame, CLASS_PREFIX)]

    @property
    def meta_fields(self) -> list[str]:
        """Names of the metadata fields."""
        return [c[len(META_PREFIX):] for c in self._columns_with(self.frame, META_PREFIX)]

    def tag_matrix(self, names: Sequence[str] | None = None) -> np.ndarray:
        """Binary label matrix ``(n, len(names))`` with 1/0 and NaN for unlabelled."""
        names = list(names) if names is not None else self.tag_names
        missing = [n for n in names if TAG_PREFIX + n not in self.frame.columns]
        if missing:
            raise DataError(f"unknown label(s) {missing} in manifest '{self.name}'; known: {self.tag_names}")
        return self.frame[[TAG_PREFIX + n for n in names]].to_numpy(dtype=np.float32)

    def class_column(self, head: str) -> pd.Series:
        """The class names of ``head`` (missing values as empty strings)."""
        column = CLASS_PREFIX + head
        if column not in self.frame.columns:
            raise DataError(f"unknown class head '{head}' in manifest '{self.name}'; known: {self.class_heads}")
        return self.frame[column].fillna("").astype(str)

    def column(self, name: str) -> pd.Series:
        """A base, ``meta:``, ``class:`` or ``tag:`` column looked up by bare or prefixed name."""
        for candidate in (name, CLASS_PREFIX + name, META_PREFIX + name, TAG_PREFIX + name):
            if candidate in self.frame.columns:
                return self.frame[candidate]
        raise DataError(f"unknown field '{name}' in manifest '{self.name}'")

    # ------------------------------------------------------------------ rows
    def __len__(self) -> int:
        return len(self.frame)

    def __iter__(self) -> Iterator[ImageRecord]:
        for index in range(len(self.frame)):
            yield self.record(index)

    def record(self, index: int) -> ImageRecord:
        """The row ``index`` as an :class:`ImageRecord`."""
        row = self.frame.iloc[index]
        tags = {c[len(TAG_PREFIX):]: bool(row[c] >= 0.5) for c in self._columns_with(self.frame, TAG_PREFIX)
                if not _is_missing(row[c])}
        classes = {c[len(CLASS_PREFIX):]: str(row[c]) for c in self._columns_with(self.frame, CLASS_PREFIX)
                   if not _is_missing(row[c])}
        meta = {c[len(META_PREFIX):]: row[c] for c in self._columns_with(self.frame, META_PREFIX)
                if not _is_missing(row[c])}
        box_values = [row[c] for c in BBOX_COLUMNS]
        bbox = None if any(_is_missing(v) for v in box_values) else tuple(float(v) for v in box_values)
        domain = row["domain"] or None
        return ImageRecord(
            path=row["path"], tags=tags, classes=classes, bbox=bbox,  # type: ignore[arg-type]
            item_id=row["item_id"] or None, domain=domain, split=row["split"] or None, meta=meta,
        )

    def subset(self, mask: np.ndarray | pd.Series | Sequence[bool]) -> Manifest:
        """Rows where ``mask`` is true, as a new manifest."""
        return Manifest(self.frame[np.asarray(mask, dtype=bool)], name=self.name, stats=self.stats)

    def split_subset(self, split: str) -> Manifest:
        """Rows of one split; an unknown or empty split is a :class:`DataError`."""
        if split not in SPLITS:
            raise DataError(f"unknown split '{split}'; expected one of {SPLITS}")
        subset = self.subset(self.frame["split"] == split)
        if len(subset) == 0:
            counts = self.frame["split"].replace("", "<none>").value_counts().to_dict()
            raise DataError(f"split '{split}' of manifest '{self.name}' is empty (splits present: {counts})")
        return subset

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        """Save atomically as parquet (``.parquet``) or CSV (``.csv``), with name and stats alongside."""
        path = Path(path)
        with atomic_path(path) as tmp:
            if path.suffix == ".parquet":
                table_frame = self.frame.copy()
                table_frame.attrs = {"fashionlens": json.dumps({"name": self.name, "stats": self.stats})}
                table_frame.to_parquet(tmp, index=False)
            elif path.suffix == ".csv":
                self.frame.to_csv(tmp, index=False)
            else:
                raise DataError(f"cannot save manifest to '{path}': use a .parquet or .csv file name")
        return path

    @classmethod
    def load(cls, path: str | Path) -> Manifest:
        """Load a manifest written by :meth:`save` (or any parquet/CSV table with the same columns)."""
        path = Path(path)
        if not path.is_file():
            raise DataError(f"manifest file not found: {path}")
        name, stats = path.stem, {}
        try:
            if path.suffix == ".parquet":
                frame = pd.read_parquet(path)
                info = json.loads(frame.attrs.get("fashionlens", "{}")) if frame.attrs else {}
                name, stats = info.get("name", name), info.get("stats", {})
            elif path.suffix == ".csv":
                header = pd.read_csv(path, nrows=0).columns
                text_columns = [c for c in header if c in ("path", "split", "item_id", "domain")
                                or c.startswith((CLASS_PREFIX, META_PREFIX))]
                frame = pd.read_csv(path, dtype=dict.fromkeys(text_columns, str))
            else:
                raise DataError(f"cannot read manifest '{path}': expected a .parquet or .csv file")
        except (OSError, ValueError) as error:
            raise DataError(f"cannot read manifest '{path}': {error}") from error
        return cls(frame, name=name, stats=stats)

    def __repr__(self) -> str:
        return (f"Manifest(name={self.name!r}, rows={len(self)}, tags={len(self.tag_names)}, "
                f"heads={self.class_heads})")
