"""The pipeline's catalogue side without any backbone: the embedder check names the service's option, and item
metadata comes from the index (unknown items are a 404-kind error)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from fashionlens.errors import CatalogueIndexError
from fashionlens.index import CatalogueIndex
from fashionlens.models.embedding import EmbeddingHead
from fashionlens.service.jobs import UnknownItemError
from fashionlens.service.pipeline import Pipeline
from fashionlens.tasks.retrieval import Embedder, RetrievalConfig


def _embedder(seed: int) -> Embedder:
    torch.manual_seed(seed)
    return Embedder(RetrievalConfig(dim=4, hidden=None), EmbeddingHead(8, 4, None, True), weights_id="synthetic")


@pytest.fixture
def index(tmp_path: Path) -> CatalogueIndex:
    image = tmp_path / "a.jpg"
    image.write_bytes(b"not read here")
    items = pd.DataFrame({"item_id": ["a", "b", "c"], "path": [str(image), None, str(tmp_path / "gone.jpg")],
                          "gender": ["Men", "Women", "Men"]})
    vectors = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    return CatalogueIndex.build(vectors, items, _embedder(0).model_id, "ip")


def test_an_embedder_that_did_not_build_the_index_is_refused_naming_the_option(index: CatalogueIndex) -> None:
    with pytest.raises(CatalogueIndexError, match=r"not '.*'; pass the embedder directory that built it "
                                                  r"\(--embedder DIR\)"):
        Pipeline(index=index, embedder=_embedder(1))


def test_item_images_and_similar_items_come_from_the_index(index: CatalogueIndex, tmp_path: Path) -> None:
    pipeline = Pipeline(index=index)
    assert pipeline.item_image("a") == tmp_path / "a.jpg"
    for missing in ("b", "c"):  # no path recorded, or the file is not on this machine
        with pytest.raises(UnknownItemError, match=f"the image of item '{missing}' is not available"):
            pipeline.item_image(missing)
    with pytest.raises(UnknownItemError, match="item_id 'zzz' is not in the catalogue index"):
        pipeline.item_image("zzz")
    with pytest.raises(UnknownItemError, match="item_id 'zzz' is not in the catalogue index"):
        pipeline.similar("zzz", k=2)
    results = pipeline.similar("a", k=2)["results"]
    assert sorted(hit["item_id"] for hit in results) == ["b", "c"]  # never the item itself
    assert all("path" not in hit["metadata"] and "gender" in hit["metadata"] for hit in results)  # paths stay private
