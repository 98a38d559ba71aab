"""The ``--crop`` spec: parsing, one-line errors for malformed and empty boxes, boxes checked against the image."""

from __future__ import annotations

import pytest

from fashionlens.data.crops import CropSpec, box_part, box_text, check_box, whole_image
from fashionlens.errors import ConfigError, DataError


@pytest.mark.parametrize(("text", "mode", "box"), [
    ("auto", "auto", None), (" NONE ", "none", None), ("10,20,110,220", "box", (10.0, 20.0, 110.0, 220.0)),
    ("0, 0, 5.5, 7", "box", (0.0, 0.0, 5.5, 7.0)),
])
def test_parse_accepts_the_three_forms(text: str, mode: str, box: tuple[float, ...] | None) -> None:
    spec = CropSpec.parse(text)
    assert (spec.mode, spec.box) == (mode, box)
    assert CropSpec.parse(spec) is spec
    assert CropSpec.parse(str(spec)) == spec  # its text is the spec's own syntax


@pytest.mark.parametrize("text", ["", "autox", "1,2,3", "1,2,3,4,5", "a,b,c,d", "1,2,,4", "nan,0,1,1", "0,0,inf,1"])
def test_malformed_specs_are_one_line_errors(text: str) -> None:
    with pytest.raises(ConfigError, match=r"is malformed: use auto.*none.*x1,y1,x2,y2") as error:
        CropSpec.parse(text)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("text", ["10,10,10,20", "10,10,20,10", "30,10,20,40"])
def test_empty_boxes_are_refused(text: str) -> None:
    with pytest.raises(ConfigError, match="is empty"):
        CropSpec.parse(text)


def test_boxes_must_lie_inside_the_image() -> None:
    assert check_box((0, 0, 640, 480), (640, 480), "p.jpg") == (0, 0, 640, 480)
    for outside in [(-1, 0, 10, 10), (0, -0.5, 10, 10), (0, 0, 641, 10), (0, 0, 10, 481), (700, 0, 800, 10)]:
        with pytest.raises(DataError, match=r"lies outside the 640x480 image p\.jpg"):
            check_box(outside, (640, 480), "p.jpg")


def test_whole_image_and_box_parts() -> None:
    assert whole_image((300, 400)) == (0.0, 0.0, 300.0, 400.0)
    upper, lower = box_part((10, 100, 50, 300), "upper"), box_part((10, 100, 50, 300), "lower")
    assert upper == (10, 100, 50, 220) and lower == (10, 180, 50, 300)  # halves overlapping by 10 % of the height
    assert box_text((1.0, 2.5, 30.0, 40.0)) == "1,2.5,30,40"
    with pytest.raises(ConfigError, match="'middle'"):
        box_part((0, 0, 1, 1), "middle")
