"""Reader for Kaggle's Fashion Product Images (Myntra catalogue) ``styles.csv`` layout.

Layout: ``<root>/styles.csv`` with columns ``id, gender, masterCategory, subCategory, articleType, baseColour,
season, year, usage, productDisplayName, image`` and the images under ``<root>/images/``. The three category
columns form the hierarchy masterCategory > subCategory > articleType; gender, baseColour, season and usage are
attribute heads. Every product photo is a catalogue (``shop``) image of its own item.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from fashionlens.data.records import CLASS_PREFIX, META_PREFIX, Manifest
from fashionlens.errors import DataError, ImageError

HIERARCHY = ("masterCategory", "subCategory", "articleType")
ATTRIBUTES = ("gender", "baseColour", "season", "usage")
REQUIRED_COLUMNS = ("id", *HIERARCHY, *ATTRIBUTES)


def read_fashion_product_images(root: str | Path, skip_missing: bool = True) -> Manifest:
    """Read ``<root>/styles.csv`` into a manifest with hierarchy and attribute heads.

    Args:
        root: Folder holding ``styles.csv`` and ``images/``.
        skip_missing: Skip rows whose image file is absent (counted in ``stats['missing_images']``);
            when false, the first missing image raises :class:`ImageError`.

    Returns:
        A manifest with ``class:<head>`` columns for the hierarchy and attributes, ``item_id`` = product id,
        ``domain`` = ``shop`` and ``meta:productDisplayName`` / ``meta:year``.
    """
    root = Path(root).expanduser().resolve()
    table_path = root / "styles.csv"
    if not table_path.is_file():
        raise DataError(f"Fashion Product Images table not found: {table_path}")
    try:
        table = pd.read_csv(table_path, dtype=str, keep_default_na=True, on_bad_lines="error")
    except (ValueError, pd.errors.ParserError) as error:
        raise DataError(f"cannot parse {table_path}: {error}") from error
    missing_columns = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    if missing_columns:
        raise DataError(f"{table_path} lacks column(s) {missing_columns}; found {list(table.columns)}")
    relative = table["image"] if "image" in table.columns else "images/" + table["id"].astype(str) + ".jpg"
    paths = [str(root / p) for p in relative.fillna("")]
    exists = pd.Series([Path(p).is_file() for p in paths], index=table.index)
    if not skip_missing and not exists.all():
        raise ImageError(f"image not found: {paths[int(exists.to_numpy().argmin())]}")
    frame = pd.DataFrame({"path": paths, "item_id": table["id"].astype(str), "domain": "shop"})
    for head in (*HIERARCHY, *ATTRIBUTES):
        frame[CLASS_PREFIX + head] = table[head].str.strip()
    for field in ("productDisplayName", "year"):
        if field in table.columns:
            frame[META_PREFIX + field] = table[field]
    frame = frame[exists.to_numpy()]
    stats = {"rows": len(table), "missing_images": int((~exists).sum())}
    return Manifest(frame, name="fashion-product-images", stats=stats)
