"""Garment localisation from class-activation maps: boxes inside real street photos, the whole image when no
garment is there (and the reason), and settings checked."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from timm.data import ImageNetInfo

from fashionlens.data.images import decode_for_model
from fashionlens.errors import ConfigError
from fashionlens.models.localiser import GARMENT_CLASSES, GarmentLocaliser


@pytest.fixture(scope="module")
def localiser() -> Iterator[GarmentLocaliser]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield GarmentLocaliser()
    torch.set_num_threads(threads)


def test_garment_classes_are_the_imagenet_classes_named() -> None:
    info = ImageNetInfo()
    for index, name in GARMENT_CLASSES.items():
        assert info.index_to_description(index).startswith(name), (index, name)


def test_boxes_lie_inside_real_street_photos(localiser: GarmentLocaliser, shared_data: Path) -> None:
    paths = sorted((shared_data / "clothing-attributes" / "images").glob("*.jpg"))[:12]
    decoded = [decode_for_model(path) for path in paths]
    # the localiser may see a shrunk copy: boxes must still be in pixels of the original
    found = localiser.localise([d.image.resize((d.image.width // 2, d.image.height // 2)) for d in decoded],
                               [d.full_size for d in decoded])
    assert len(found) == len(paths)
    areas = []
    for place, image in zip(found, decoded, strict=True):
        width, height = image.full_size
        assert place.size == (width, height) and len(place.boxes) == len(place.scores) >= 1
        for x0, y0, x1, y1 in place.boxes:
            assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
        x0, y0, x1, y1 = place.box
        areas.append((x1 - x0) * (y1 - y0) / (width * height))
    assert sum(place.fallback is None for place in found) >= 10  # people in clothes: a garment is found
    # the garment box is a part of the photo, not the photo (measured: median 61 % of the area)
    assert float(np.median(areas)) < 0.8


def test_a_blank_image_falls_back_to_the_whole_image_and_says_why(localiser: GarmentLocaliser) -> None:
    blank = Image.new("RGB", (300, 400), (255, 255, 255))
    place = localiser.localise([blank], [(600, 800)])[0]
    assert place.boxes == ((0.0, 0.0, 600.0, 800.0),) and place.box == (0.0, 0.0, 600.0, 800.0)
    assert place.fallback is not None and place.fallback.startswith("no garment found")
    assert place.garment_probability < localiser.min_garment_probability


def test_activation_maps_are_normalised(localiser: GarmentLocaliser) -> None:
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 48, 3), dtype=np.uint8))
    maps, probabilities = localiser.activation_maps([image, image])
    assert maps.shape == (2, localiser.input_size, localiser.input_size)
    assert maps.min() >= 0 and maps.max() <= 1 and probabilities.shape == (2,)
    assert localiser.localise([]) == []


@pytest.mark.parametrize("settings", [{"threshold": 0}, {"threshold": 1.2}, {"padding": -0.1}, {"max_boxes": 0},
                                      {"min_garment_probability": 1.5}, {"classes": [1000]}, {"classes": []}])
def test_bad_settings_are_refused(settings: dict[str, object]) -> None:
    with pytest.raises(ConfigError, match="localiser"):
        GarmentLocaliser(**settings)  # type: ignore[arg-type]


def test_sizes_must_match_images(localiser: GarmentLocaliser) -> None:
    with pytest.raises(ConfigError, match="2 sizes for 1 images"):
        localiser.localise([Image.new("RGB", (8, 8))], [(8, 8), (9, 9)])
