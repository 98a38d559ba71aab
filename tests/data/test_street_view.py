"""The street-view simulator: garment cut-out, reproducible degradations, real backgrounds, cached files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fashionlens.data.images import decode_image
from fashionlens.data.readers import read_fashion_product_images
from fashionlens.data.records import Manifest
from fashionlens.data.street_view import StreetViewConfig, StreetViewSimulator, garment_mask
from fashionlens.errors import ConfigError, DataError, ImageError


def _product(size: int = 120, colour: tuple[int, int, int] = (180, 30, 30)) -> Image.Image:
    """A catalogue-style photo: a coloured garment with a white logo patch, on white."""
    pixels = np.full((size, size, 3), 255, dtype=np.uint8)
    pixels[20:100, 30:90] = colour
    pixels[50:60, 55:65] = 255  # enclosed white: part of the garment
    return Image.fromarray(pixels)


def _white_fraction(image: Image.Image) -> float:
    return float((np.asarray(image).min(axis=2) >= 235).mean())


@pytest.fixture
def backgrounds(tmp_path: Path) -> list[Path]:
    paths = []
    for i, colour in enumerate([(20, 90, 40), (60, 60, 160)]):
        path = tmp_path / "backgrounds" / f"{i}.jpg"
        path.parent.mkdir(exist_ok=True)
        Image.new("RGB", (200, 150), colour).save(path)
        paths.append(path)
    return paths


def test_mask_keeps_enclosed_white_and_drops_the_white_surround() -> None:
    mask = garment_mask(_product())
    assert mask[55, 60]  # the logo inside the garment
    assert not mask[5, 5] and not mask[110, 110]
    assert mask.sum() == 80 * 60


def test_mask_of_a_photo_without_white_background_is_everything() -> None:
    assert garment_mask(Image.new("RGB", (40, 40), (90, 90, 90))).all()


def test_render_repeats_for_the_same_key_and_view_and_varies_otherwise(backgrounds: list[Path]) -> None:
    simulator = StreetViewSimulator(backgrounds, seed=3)
    image = _product()
    first = np.asarray(simulator.render(image, "item-1", view=0))
    assert first.shape == (224, 224, 3)
    assert np.array_equal(first, np.asarray(simulator.render(image, "item-1", view=0)))
    assert not np.array_equal(first, np.asarray(simulator.render(image, "item-1", view=1)))
    assert not np.array_equal(first, np.asarray(StreetViewSimulator(backgrounds, seed=4).render(image, "item-1")))


def test_render_replaces_the_white_background(backgrounds: list[Path]) -> None:
    config = StreetViewConfig(size=96, occlusion_probability=0.0, crop_probability=0.0)
    image = _product()
    assert _white_fraction(image) > 0.6
    for view in range(3):
        street = StreetViewSimulator(backgrounds, config).render(image, "x", view)
        assert street.size == (96, 96)
        assert _white_fraction(street) < 0.05


def test_without_backgrounds_the_frame_is_a_noisy_colour() -> None:
    street = StreetViewSimulator(config=StreetViewConfig(size=64)).render(_product(), "x")
    assert _white_fraction(street) < 0.05
    assert np.asarray(street).std() > 5


@pytest.mark.parametrize("bad", [{"crop_probability": 1.5}, {"scale": (0.9, 0.5)}, {"size": 4}])
def test_invalid_settings_are_rejected(bad: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        StreetViewConfig(**bad)  # type: ignore[arg-type]


def test_background_folder_must_hold_images(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"no \.jpg/\.png"):
        StreetViewSimulator.from_folder(tmp_path)
    with pytest.raises(DataError, match="not found"):
        StreetViewSimulator.from_folder(tmp_path / "missing")


def test_simulated_manifest_is_labelled_cached_and_keeps_items(tmp_path: Path, backgrounds: list[Path]) -> None:
    sources = []
    for i in range(3):
        path = tmp_path / f"p{i}.png"
        _product(colour=(40 * i, 100, 200)).save(path)
        sources.append(str(path))
    frame = pd.DataFrame({"path": sources, "item_id": ["a", "b", "c"], "split": ["train", "val", "test"],
                          "domain": "shop", "class:articleType": ["Tshirts", "Shirts", "Tshirts"],
                          "bbox_x0": [0.0, np.nan, np.nan], "bbox_y0": [0.0, np.nan, np.nan],
                          "bbox_x1": [60.0, np.nan, np.nan], "bbox_y1": [60.0, np.nan, np.nan]})
    shop = Manifest(frame, name="shop")
    simulator = StreetViewSimulator(backgrounds, StreetViewConfig(size=64), seed=7)
    street = simulator.simulate_manifest(shop, tmp_path / "cache", views=2)
    assert "simulated" in street.name and len(street) == 6
    frame = street.frame
    assert (frame["domain"] == "street").all() and (frame["meta:simulated"] == "true").all()
    assert frame["item_id"].tolist() == ["a", "b", "c"] * 2
    assert frame["split"].tolist() == ["train", "val", "test"] * 2
    assert frame["meta:source_path"].tolist() == sources * 2
    assert frame[["bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1"]].isna().all().all()
    files = [Path(p) for p in frame["path"]]
    assert len(set(files)) == 6
    assert all(f.parent == tmp_path / "cache" / "7" / simulator.digest() for f in files)
    assert decode_image(files[0]).size == (64, 64)
    stamps = [f.stat().st_mtime_ns for f in files]
    again = simulator.simulate_manifest(shop, tmp_path / "cache", views=2)
    assert again.frame["path"].tolist() == frame["path"].tolist()
    assert [f.stat().st_mtime_ns for f in files] == stamps  # reused, not rewritten


def test_a_different_configuration_gets_its_own_cache_folder(backgrounds: list[Path]) -> None:
    one = StreetViewSimulator(backgrounds, StreetViewConfig(size=64))
    assert one.digest() != StreetViewSimulator(backgrounds, StreetViewConfig(size=65)).digest()
    assert one.digest() != StreetViewSimulator(backgrounds[:1], StreetViewConfig(size=64)).digest()


def test_an_unreadable_source_image_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(ImageError, match=r"bad\.jpg"):
        StreetViewSimulator().simulate_manifest(Manifest(pd.DataFrame({"path": [str(bad)]})), tmp_path / "out")


def test_real_products_on_real_street_backgrounds(shared_data: Path, tmp_path: Path) -> None:
    # One view can land on a bright patch of sky or wall, so the claim is about many: the studio white is gone.
    products = read_fashion_product_images(shared_data / "fashion-product-images")
    subset = products.subset(np.arange(len(products)) < 12)
    simulator = StreetViewSimulator.from_folder(shared_data / "clothing-attributes" / "images", seed=0)
    street = simulator.simulate_manifest(subset, tmp_path)
    originals, views = [], []
    for source, made in zip(subset.frame["path"], street.frame["path"], strict=True):
        original, view = decode_image(source), decode_image(made)
        assert view.size == (224, 224)
        originals.append(_white_fraction(original))
        views.append(_white_fraction(view))
    assert np.mean(views) < 0.5 * np.mean(originals)


def test_cache_folder_does_not_depend_on_how_background_paths_are_spelled(backgrounds: list[Path],
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(backgrounds[0].parent)
    relative = StreetViewSimulator([Path(p.name) for p in backgrounds])
    assert relative.digest() == StreetViewSimulator(backgrounds).digest()
