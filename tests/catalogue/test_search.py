"""Searching a catalogue by item and by photo: filters, k against the catalogue, bad photos, foreign models."""

from __future__ import annotations

from pathlib import Path

import pytest

from fashionlens.catalogue import open_index, search_images, similar_items
from fashionlens.data.records import Manifest
from fashionlens.errors import CatalogueIndexError, ImageError
from fashionlens.tasks.retrieval import Embedder

from .conftest import synthetic_embedder


def test_similar_items_exclude_the_item_and_honour_filters(saved_index: tuple[Path, Embedder, Manifest]) -> None:
    index = open_index(saved_index[0])
    hits = similar_items(index, "a", k=5)
    assert len(hits) == 5 and "a" not in {h.item_id for h in hits}
    tops = similar_items(index, "a", k=3, filters={"articleType": "Tops"})
    assert {h.item_id for h in tops} == {"b", "e"}  # only two other tops exist
    with pytest.raises(CatalogueIndexError, match="unknown filter field 'colour'"):
        similar_items(index, "a", k=3, filters={"colour": "red"})
    with pytest.raises(CatalogueIndexError, match="k=6 is larger than the 5 other items"):
        similar_items(index, "a", k=6)
    with pytest.raises(CatalogueIndexError, match="'zzz' is not in the catalogue"):
        similar_items(index, "zzz")


def test_image_search_rejects_bad_photos_large_k_and_foreign_models(
        saved_index: tuple[Path, Embedder, Manifest], tmp_path: Path) -> None:
    directory, embedder, _ = saved_index
    index = open_index(directory, embedder)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(ImageError, match=r"broken\.jpg"):
        search_images(index, embedder, [broken], k=3)
    with pytest.raises(CatalogueIndexError, match="k=7 is larger than the 6 items"):
        search_images(index, embedder, [broken], k=7)
    with pytest.raises(CatalogueIndexError, match=r"pass the embedder directory that built it \(--model DIR\)"):
        search_images(index, synthetic_embedder(seed=9), [broken], k=3)
