"""Which part of a query photo to search with: the ``--crop`` spec and garment boxes in image pixels.

A street photo shows a person, a background and the garment somewhere in it; searching with the garment's box works
better than with the whole photo. The spec says where the box comes from:

* ``auto``: a garment localiser finds it (:class:`fashionlens.models.localiser.GarmentLocaliser`);
* ``none``: the whole photo;
* ``x1,y1,x2,y2``: a box given in pixels of the upright image (origin top left, ``x`` to the right), which must lie
  inside the image and be non-empty.

Boxes are ``(x0, y0, x1, y1)`` tuples in pixels of the original (upright) image, as the manifests' ``bbox_*`` columns.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from fashionlens.data.records import BBox
from fashionlens.errors import ConfigError, DataError

CropMode = Literal["auto", "none", "box"]
CROP_HELP = "auto (find the garment), none (whole photo) or x1,y1,x2,y2 (a box in image pixels)"


@dataclass(frozen=True)
class CropSpec:
    """A parsed ``--crop`` value.

    Attributes:
        mode: ``auto``, ``none`` or ``box``.
        box: The given box (``mode == "box"`` only).
    """

    mode: CropMode
    box: BBox | None = None

    @classmethod
    def parse(cls, text: str | CropSpec) -> CropSpec:
        """``auto``, ``none`` or ``x1,y1,x2,y2`` (pixels; whitespace allowed) → a spec; a spec passes through.

        Raises:
            ConfigError: Anything else, or a box with ``x2 <= x1`` or ``y2 <= y1`` (empty).
        """
        if isinstance(text, CropSpec):
            return text
        value = str(text).strip().lower()
        if value in ("auto", "none"):
            return cls(value)  # type: ignore[arg-type]
        parts = value.split(",")
        try:
            numbers = [float(part) for part in parts]
        except ValueError:
            numbers = []
        if len(numbers) != 4 or len(parts) != 4 or not all(math.isfinite(v) for v in numbers):
            raise ConfigError(f"crop {str(text)!r} is malformed: use {CROP_HELP}")
        x0, y0, x1, y1 = numbers
        if x1 <= x0 or y1 <= y0:
            raise ConfigError(f"crop box {str(text)!r} is empty: x2 must exceed x1 and y2 exceed y1")
        return cls("box", (x0, y0, x1, y1))

    def __str__(self) -> str:
        return box_text(self.box) if self.box is not None else self.mode


def box_text(box: BBox) -> str:
    """``x1,y1,x2,y2`` with whole pixels shown without decimals (the spec's own syntax)."""
    return ",".join(f"{v:g}" for v in box)


def check_box(box: BBox, size: tuple[int, int], source: str) -> BBox:
    """``box`` when it lies inside an image of ``size`` (width, height) pixels; else a one-line error.

    Raises:
        DataError: Some corner lies outside the image (a negative coordinate, or beyond its width or height).
    """
    width, height = size
    x0, y0, x1, y1 = box
    if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
        raise DataError(f"crop box {box_text(box)} lies outside the {width}x{height} image {source}")
    return box


def whole_image(size: tuple[int, int]) -> BBox:
    """The box of a whole image of ``size`` (width, height)."""
    return (0.0, 0.0, float(size[0]), float(size[1]))


def box_part(box: BBox, part: str, overlap: float = 0.1) -> BBox:
    """The ``upper`` or ``lower`` part of a box (a person region's top or bottom garment), each a half plus
    ``overlap`` (fraction of the box height) so that a garment on the waistline is whole in one of them.

    Raises:
        ConfigError: ``part`` is neither ``upper`` nor ``lower``.
    """
    x0, y0, x1, y1 = box
    middle, reach = (y0 + y1) / 2, (y1 - y0) * overlap
    if part == "upper":
        return (x0, y0, x1, min(y1, middle + reach))
    if part == "lower":
        return (x0, max(y0, middle - reach), x1, y1)
    raise ConfigError(f"unknown box part {part!r}; use 'upper' or 'lower'")
