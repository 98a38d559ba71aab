"""The embedder: saved and loaded with its model id; a tampered directory is detected."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fashionlens.errors import ModelError
from fashionlens.tasks.retrieval import (
    Embedder,
)

from .conftest import synthetic_embedder


def test_embedder_round_trips_with_its_model_id(tmp_path: Path) -> None:
    embedder = synthetic_embedder()
    features = np.random.default_rng(0).normal(size=(5, 16)).astype(np.float32)
    embedder.save(tmp_path / "model")
    loaded = Embedder.load(tmp_path / "model")
    assert loaded.model_id == embedder.model_id and loaded.dim == 8 and loaded.metric == "ip"
    assert np.allclose(loaded.embed_features(features), embedder.embed_features(features))
    assert synthetic_embedder(seed=1).model_id != embedder.model_id
    assert synthetic_embedder(normalize=False).metric == "l2"


def test_a_tampered_embedder_directory_is_detected(tmp_path: Path) -> None:
    import json

    synthetic_embedder().save(tmp_path / "model")
    document = tmp_path / "model" / "embedder.json"
    content = json.loads(document.read_text())
    content["model_id"] = "something|else"
    document.write_text(json.dumps(content))
    with pytest.raises(ModelError, match="was modified"):
        Embedder.load(tmp_path / "model")
    with pytest.raises(ModelError, match="not found"):
        Embedder.load(tmp_path / "missing")


def test_a_bad_query_photo_is_named_with_its_problem(tmp_path: Path) -> None:
    from PIL import Image

    from fashionlens.errors import ImageError
    from fashionlens.models.backbones import BackboneConfig
    from fashionlens.tasks.retrieval import Embedder

    good, broken = tmp_path / "good.jpg", tmp_path / "broken.jpg"
    Image.new("RGB", (64, 80), (200, 30, 30)).save(good)
    broken.write_bytes(b"\xff\xd8 not really a jpeg")
    embedder = Embedder.untrained(BackboneConfig(runtime="torch"))
    assert embedder.embed_paths([good]).shape == (1, embedder.dim)
    with pytest.raises(ImageError, match=r"broken\.jpg"):
        embedder.embed_paths([good, broken])
