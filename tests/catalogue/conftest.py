"""A saved six-item catalogue index of a synthetic embedder (no backbone is ever built)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from fashionlens.data.records import Manifest
from fashionlens.index import CatalogueIndex
from fashionlens.models.embedding import EmbeddingHead
from fashionlens.tasks.retrieval import Embedder, RetrievalConfig, catalogue_metadata


def synthetic_embedder(in_features: int = 16, dim: int | None = 8, seed: int = 0, normalize: bool = True) -> Embedder:
    """An embedder on synthetic features (no backbone is ever built)."""
    torch.manual_seed(seed)
    config = RetrievalConfig(dim=dim, hidden=None, normalize=normalize)
    return Embedder(config, EmbeddingHead(in_features, dim, None, normalize), weights_id="synthetic")


@pytest.fixture
def saved_index(tmp_path: Path) -> tuple[Path, Embedder, Manifest]:
    manifest = Manifest(pd.DataFrame({"path": [f"/c/{i}.jpg" for i in range(6)], "item_id": list("abcdef"),
                                      "class:articleType": ["Tops", "Tops", "Bags", "Bags", "Tops", "Shoes"]}))
    embedder = synthetic_embedder()
    features = np.random.default_rng(1).normal(size=(6, 16)).astype(np.float32)
    index = CatalogueIndex.build(embedder.embed_features(features), catalogue_metadata(manifest), embedder.model_id,
                                 embedder.metric)
    index.save(tmp_path / "index")
    return tmp_path / "index", embedder, manifest
