"""Multi-crop querying: crop plans (given, none, auto with its fallback), views, and the two fusions on constructed
cases; the search method plugs into the real street-to-shop evaluation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fashionlens.data.records import BBOX_COLUMNS, Manifest
from fashionlens.errors import ConfigError, DataError, ImageError
from fashionlens.index import CatalogueIndex, SearchHit
from fashionlens.models.localiser import GarmentLocaliser
from fashionlens.tasks.retrieval.localised import (
    QueryCrop,
    fuse_embeddings,
    fuse_rankings,
    localised_search,
    plan_crops,
    search_views,
    view_images,
    views_manifest,
)

ITEMS = pd.DataFrame({"item_id": ["top", "bottom", "both"]})


def _index() -> CatalogueIndex:
    vectors = np.array([[1, 0], [0, 1], [0.6, 0.8]], dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return CatalogueIndex.build(vectors, ITEMS, model_id="toy", metric="ip")


def _embed_by_box(manifest: Manifest) -> np.ndarray:
    """A toy embedder: a view ending in the upper 250 px of a 400-px photo looks like a top, any other a bottom."""
    bottoms = manifest.frame["bbox_y1"].to_numpy() > 250
    return np.stack([~bottoms, bottoms], axis=1).astype(np.float32)


def test_fused_views_find_what_no_single_view_ranks_first() -> None:
    crop = QueryCrop((0, 0, 100, 400), (100, 400), "auto")
    paths = ["photo.jpg"]
    box_only = search_views(_index(), _embed_by_box, paths, [crop], k=3, views=("box",))
    upper_only = search_views(_index(), _embed_by_box, paths, [crop], k=3, views=("upper",))
    fused = search_views(_index(), _embed_by_box, paths, [crop], k=3, views=("box", "upper"), fusion="mean")
    assert box_only[0][0].item_id == "bottom" and upper_only[0][0].item_id == "top"
    assert fused[0][0].item_id == "both"  # the mean of a top's and a bottom's view is nearest the item with both
    by_rank = search_views(_index(), _embed_by_box, paths, [crop], k=2, views=("box", "upper"), fusion="rrf")
    assert [h.rank for h in by_rank[0]] == [1, 2] and {h.item_id for h in by_rank[0]} <= {"top", "bottom", "both"}


def test_reciprocal_rank_fusion_rewards_agreement() -> None:
    def hits(*items: str) -> list[SearchHit]:
        return [SearchHit(item, 0.0, rank, {"item": item}) for rank, item in enumerate(items, 1)]

    fused = fuse_rankings([hits("a", "x", "b"), hits("c", "x", "d")], k=3)
    assert [h.item_id for h in fused] == ["x", "a", "c"]  # second in both views (2/62) beats first in one (1/61)
    assert [h.rank for h in fused] == [1, 2, 3] and fused[0].score == pytest.approx(2 / 62, abs=1e-6)
    assert fused[1].metadata == {"item": "a"}


def test_mean_fusion_normalises_views_for_cosine_indexes() -> None:
    views = np.array([[[3.0, 0.0], [0.0, 1.0]]], dtype=np.float32)
    assert fuse_embeddings(views, normalize=True) == pytest.approx(np.array([[0.70710677, 0.70710677]]))
    assert fuse_embeddings(views, normalize=False) == pytest.approx(np.array([[1.5, 0.5]]))


def test_views_are_boxes_of_the_photo_in_its_pixels(tmp_path: Path) -> None:
    crop = QueryCrop((10, 20, 110, 220), (200, 300), "auto")
    assert crop.views(["whole", "box", "upper", "lower"]) == [(0, 0, 200, 300), (10, 20, 110, 220),
                                                              (10, 20, 110, 140), (10, 100, 110, 220)]
    # a given box, the whole photo and a fallback are searched as they are
    for plain in (QueryCrop((10, 20, 110, 220), (200, 300), "box"), QueryCrop((0, 0, 200, 300), (200, 300), "none"),
                  QueryCrop((0, 0, 200, 300), (200, 300), "auto", "no garment found")):
        assert plain.views(["whole", "upper"]) == [plain.box, plain.box]
    manifest = views_manifest(["a.jpg", "b.jpg"], [crop, crop], ["whole", "box"])
    assert manifest.frame["path"].tolist() == ["a.jpg", "a.jpg", "b.jpg", "b.jpg"]
    assert manifest.frame[list(BBOX_COLUMNS)].iloc[1].tolist() == [10, 20, 110, 220]
    shrunk = Image.new("RGB", (100, 150))  # a half-size copy of the 200x300 original
    assert [v.size for v in view_images(shrunk, crop, ["whole", "box"])] == [(100, 150), (50, 100)]
    assert crop.as_dict() == {"box": [10, 20, 110, 220], "box_text": "10,20,110,220", "mode": "auto",
                              "fallback": False, "reason": None}
    with pytest.raises(ConfigError, match="query views"):
        search_views(_index(), _embed_by_box, ["a.jpg"], [crop], views=("box", "box"))
    with pytest.raises(ConfigError, match="unknown fusion 'max'"):
        search_views(_index(), _embed_by_box, ["a.jpg"], [crop], views=("box",), fusion="max")


def test_plan_crops_given_none_and_auto(tmp_path: Path) -> None:
    photo = tmp_path / "blank.png"
    Image.new("RGB", (120, 160), (255, 255, 255)).save(photo)
    assert plan_crops([photo], "none")[0] == QueryCrop((0, 0, 120, 160), (120, 160), "none")
    assert plan_crops([photo], "5,5,60,80")[0].box == (5, 5, 60, 80)
    with pytest.raises(DataError, match=r"crop box 5,5,130,80 lies outside the 120x160 image .*blank\.png"):
        plan_crops([photo], "5,5,130,80")
    with pytest.raises(ConfigError, match="malformed"):
        plan_crops([photo], "5,5")
    with pytest.raises(ImageError, match=r"missing\.jpg"):
        plan_crops([tmp_path / "missing.jpg"], "none")
    blank = plan_crops([photo], "auto", GarmentLocaliser())[0]
    assert blank.mode == "auto" and blank.box == (0, 0, 120, 160) and blank.fallback is not None
    assert blank.as_dict()["fallback"] is True and "no garment found" in blank.as_dict()["reason"]


def test_localised_search_is_a_search_method(tmp_path: Path) -> None:
    photo = tmp_path / "p.png"
    Image.new("RGB", (100, 400), (0, 0, 0)).save(photo)
    queries = Manifest(pd.DataFrame({"path": [str(photo)]}), name="q")
    search = localised_search(_index(), _embed_by_box, crop="0,0,100,240", views=("box",), k=2)
    assert search(queries) == [["top", "both"]]
    # crops planned once (a benchmark's repeated runs) are used as given: the whole photo here, not the box above
    planned = {str(photo): plan_crops([photo], "none")[0]}
    reused = localised_search(_index(), _embed_by_box, crop="0,0,100,240", views=("box",), k=2, planned=planned)
    assert reused(queries) == [["bottom", "both"]]
    with pytest.raises(ConfigError, match="query views"):
        localised_search(_index(), _embed_by_box, views=("left",))
