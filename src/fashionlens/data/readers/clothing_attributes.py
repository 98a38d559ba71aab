"""Reader for the Clothing Attributes dataset (Chen, Gallagher & Girod, ECCV 2012).

Layout: ``<root>/images/NNNNNN.jpg`` (1-based, zero-padded to 6 digits) and ``<root>/labels/<attr>_GT.mat``, each a
MATLAB file with one variable ``GT`` of shape (N, 1) whose row i describes image i+1. Binary attributes use
1 = no and 2 = yes; ``category_GT`` (7 classes), ``sleevelength_GT`` and ``neckline_GT`` (3 classes each) are
multi-class. ``NaN`` means the annotators disagreed (or the row is held back): it becomes *unlabelled*.
For ``gender`` the dataset codes 1 = male, 2 = female, so the ``gender`` tag is positive for *female*.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import scipy.io

from fashionlens.data.records import CLASS_PREFIX, TAG_PREFIX, Manifest
from fashionlens.errors import DataError, ImageError

MULTICLASS_HEADS: dict[str, tuple[str, ...]] = {
    "category": ("Shirt", "Sweater", "T-shirt", "Outerwear", "Suit", "Tank top", "Dress"),
    "sleevelength": ("No sleeves", "Short sleeves", "Long sleeves"),
    "neckline": ("V-shape", "Round", "Other shapes"),
}

#: What a positive means for the tags whose name does not say it (the dataset's README: gender 1 = male, 2 = female;
#: skin exposure 1 = low, 2 = high): a tagger's ``positive_names``. The shipped tagging configs say the same.
POSITIVE_NAMES = {"gender": "gender=female", "skin_exposure": "skin_exposure=high"}

#: The 20 labels the street-fashion attribute paper reports its F1 on.
PAPER_LABELS = ("black", "blue", "brown", "collar", "cyan", "gender", "gray", "green", "pattern_floral",
                "pattern_graphics", "pattern_plaid", "pattern_solid", "pattern_spot", "pattern_stripe", "purple",
                "red", "scarf", "skin_exposure", "white", "yellow")


def _read_gt(path: Path) -> np.ndarray:
    try:
        content = scipy.io.loadmat(path)
    except (OSError, ValueError, TypeError, scipy.io.matlab.MatReadError) as error:
        raise DataError(f"cannot read MATLAB label file {path}: {error}") from error
    if "GT" not in content:
        raise DataError(f"{path} has no 'GT' variable (found {[k for k in content if not k.startswith('__')]})")
    return np.asarray(content["GT"], dtype=np.float64).reshape(-1)


def read_clothing_attributes(root: str | Path, skip_missing: bool = True) -> Manifest:
    """Read the 23 binary attributes as tags and the 3 multi-class attributes as class heads.

    Args:
        root: Folder holding ``images/`` and ``labels/``.
        skip_missing: Skip images that are absent (counted in ``stats['missing_images']``);
            when false, the first missing image raises :class:`ImageError`.
    """
    root = Path(root).expanduser().resolve()
    label_dir = root / "labels"
    files = sorted(label_dir.glob("*_GT.mat"))
    if not files:
        raise DataError(f"no '*_GT.mat' label files in {label_dir}")
    columns: dict[str, np.ndarray] = {}
    for path in files:
        name = path.name[: -len("_GT.mat")]
        values = _read_gt(path)
        expected = len(next(iter(columns.values()))) if columns else len(values)
        if len(values) != expected:
            raise DataError(f"{path} has {len(values)} rows, other label files have {expected}")
        labelled = values[~np.isnan(values)]
        if name in MULTICLASS_HEADS:
            classes = MULTICLASS_HEADS[name]
            if labelled.size and (labelled.min() < 1 or labelled.max() > len(classes)):
                raise DataError(f"{path} has values outside 1..{len(classes)}")
            columns[CLASS_PREFIX + name] = np.array(
                [None if np.isnan(v) else classes[int(v) - 1] for v in values], dtype=object)
        else:
            if labelled.size and not np.isin(labelled, (1.0, 2.0)).all():
                raise DataError(f"{path} has values other than 1 (no), 2 (yes) and NaN")
            columns[TAG_PREFIX + name] = values - 1.0
    n_rows = len(next(iter(columns.values())))
    paths = [root / "images" / f"{i + 1:06d}.jpg" for i in range(n_rows)]
    exists = np.array([p.is_file() for p in paths])
    if not skip_missing and not exists.all():
        raise ImageError(f"image not found: {paths[int(exists.argmin())]}")
    frame = pd.DataFrame({"path": [str(p) for p in paths], "domain": "street",
                          "item_id": [f"{i + 1:06d}" for i in range(n_rows)], **columns})
    tag_columns = sorted(c for c in columns if c.startswith(TAG_PREFIX))
    class_columns = [CLASS_PREFIX + h for h in MULTICLASS_HEADS if CLASS_PREFIX + h in columns]
    frame = frame[["path", "domain", "item_id", *tag_columns, *class_columns]][exists]
    return Manifest(frame, name="clothing-attributes",
                    stats={"rows": n_rows, "missing_images": int((~exists).sum())})
