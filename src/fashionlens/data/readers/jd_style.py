"""JD AI Fashion-Challenge 2018, style recognition track: 13 multi-label clothing styles per photo.

The challenge's ``train.txt`` rows are ``image id, image url, 13 flags`` (1 = the style is present, 0 = absent) and
``test.txt`` rows ``image id, image url``, comma-separated. Its data README gives the label order as
运动, 休闲, OL/通勤, 日系, 韩版, 欧美, 英伦, 少女, 名媛/淑女, 简约, 自然, 街头/朋克, 民族;
:data:`JD_STYLES` are English names in that order. Derived copies of the table often drop the URL
(``image_name, 13 flags``) or add a header line with their own style names; both are accepted.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from fashionlens.data.readers.generic import build_manifest, split_from_name
from fashionlens.data.records import META_PREFIX, TAG_PREFIX, Manifest
from fashionlens.errors import DataError

#: The 13 styles in the official column order: sporty (运动), casual (休闲), office (OL/通勤), japanese (日系),
#: korean (韩版), western (欧美), british (英伦), girlish (少女), ladylike (名媛/淑女), minimalist (简约),
#: natural (自然), street (街头/朋克, street/punk), ethnic (民族).
JD_STYLES = ("sporty", "casual", "office", "japanese", "korean", "western", "british", "girlish", "ladylike",
             "minimalist", "natural", "street", "ethnic")
_FLAGS = {"1": 1.0, "0": 0.0}


def read_jd_style(path: str | Path, images_dir: str | Path | None = None, *, split: str | None = None,
                  extension: str = ".jpg", skip_missing: bool = True) -> Manifest:
    """Read a JD style table into a manifest with one ``tag:<style>`` per style.

    Rows may be ``name, 13 flags``, ``name, url, 13 flags`` (the official ``train.txt``), or ``name[, url]`` without
    flags (``test.txt``: the style tags are then present but unlabelled). Fields are comma-separated, or
    whitespace-separated when a line has no comma. A first line whose last 13 fields hold no 0/1 flag is a header and
    names the styles; without one the names are :data:`JD_STYLES`. All rows must have the same layout.

    Args:
        path: The table (``train.txt``, ``test.txt`` or a derived CSV).
        images_dir: Folder of the images (default: the table's folder).
        split: The rows' split; by default taken from the file name (``train.txt`` -> ``train``).
        extension: Appended to names without one (the official tables list bare image ids).
        skip_missing: Drop and count images missing on disk (``stats["missing_images"]``), else raise ImageError.

    Raises:
        DataError: Missing file, a row with another layout, or a flag other than 0/1 (file and line named).
    """
    path = Path(path).expanduser().resolve()
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except FileNotFoundError:
        raise DataError(f"JD style table not found: {path}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"cannot read {path}: {error}") from error
    rows = [(number, _fields(line)) for number, line in enumerate(lines, start=1) if line.strip()]
    styles = list(JD_STYLES)
    if rows and len(rows[0][1]) > len(styles) and not set(rows[0][1][-len(styles):]) & set(_FLAGS):
        header_line, header = rows.pop(0)
        styles = header[-len(styles):]
        if len(set(styles)) != len(styles):
            raise DataError(f"{path}, line {header_line}: the header repeats a style name: {styles}")
    if not rows:
        raise DataError(f"{path}: no data rows")
    width = len(rows[0][1])
    layouts = {1: False, 2: True, len(styles) + 1: False, len(styles) + 2: True}  # field count -> has a URL
    if width not in layouts:
        raise DataError(f"{path}, line {rows[0][0]}: expected name[, url][, {len(styles)} style flags], "
                        f"got {width} fields")
    has_url, has_flags = layouts[width], width > 2
    images = Path(images_dir).expanduser().resolve() if images_dir is not None else path.parent
    data: dict[str, list[Any]] = {"path": [], META_PREFIX + "url": []}
    data.update({TAG_PREFIX + style: [] for style in styles})
    for number, fields in rows:
        if len(fields) != width:
            raise DataError(f"{path}, line {number}: expected {width} fields like line {rows[0][0]}, "
                            f"got {len(fields)}")
        name = fields[0]
        data["path"].append(str(images / (name if Path(name).suffix else name + extension)))
        data[META_PREFIX + "url"].append(fields[1] if has_url else None)
        flags = fields[-len(styles):] if has_flags else [""] * len(styles)
        for style, flag in zip(styles, flags, strict=True):
            if has_flags and flag not in _FLAGS:
                raise DataError(f"{path}, line {number}: style '{style}' must be 0 or 1, got '{flag}'")
            data[TAG_PREFIX + style].append(_FLAGS.get(flag, math.nan))
    frame = pd.DataFrame(data)
    frame["split"] = split if split is not None else split_from_name(path.name)
    return build_manifest(frame, name="jd-style", source=path, skip_missing=skip_missing)


def _fields(line: str) -> list[str]:
    return [field.strip() for field in line.split(",")] if "," in line else line.split()
