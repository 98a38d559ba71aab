"""Triplet training: it learns to ignore photo nuisance, refuses manifests it cannot train on, and fine-tunes a
backbone on real photos."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fashionlens.engine import TrainConfig
from fashionlens.errors import DataError
from fashionlens.models.backbones import BackboneConfig
from fashionlens.tasks.retrieval import (
    Embedder,
    RetrievalConfig,
    rank_gallery,
    score_ranking,
    train_embedder,
)

from .conftest import QUIET, small_real_catalogue, synthetic_street_to_shop


@pytest.mark.parametrize("miner", [None, "semihard"])
@pytest.mark.usefixtures("one_torch_thread")
def test_triplet_training_learns_to_ignore_photo_nuisance(miner: str | None) -> None:
    manifest, features = synthetic_street_to_shop()
    config = RetrievalConfig(dim=8, hidden=None, margin=0.2, miner=miner,
                             train=TrainConfig(epochs=15, batch_size=16, lr=1e-2, monitor="val_map", mode="max",
                                               early_stop_patience=None, scheduler="none"))
    embedder = train_embedder(manifest, config, features=features, console=QUIET, show_progress=False)
    val = np.flatnonzero(manifest.frame["split"] == "val")
    shop, street = val[val < 200], val[val >= 200]
    raw = rank_gallery(features[street], features[shop], "ip", 10)
    untrained = score_ranking(manifest.frame["item_id"][street], manifest.frame["item_id"][shop], raw, [1, 10])
    assert embedder.metrics["val_map"] > untrained["mAP"] + 0.3
    assert embedder.metrics["val_recall@1"] > untrained["recall@1"] + 0.3


def test_training_needs_train_and_val_rows_with_the_identity() -> None:
    manifest, features = synthetic_street_to_shop()
    manifest.frame["split"] = "train"
    with pytest.raises(DataError, match="split 'val'"):
        train_embedder(manifest, RetrievalConfig(), features=features, console=QUIET, show_progress=False)
    with pytest.raises(DataError, match="unknown field 'style'"):
        train_embedder(manifest, RetrievalConfig(identity="style"), features=features, console=QUIET)
    manifest, features = synthetic_street_to_shop()
    manifest.frame.loc[(manifest.frame["split"] == "val") & (manifest.frame["domain"] == "shop"), "split"] = "test"
    with pytest.raises(DataError, match=r"no val row .* has a match"):
        train_embedder(manifest, RetrievalConfig(), features=features, console=QUIET, show_progress=False)


def test_finetune_mode_trains_the_backbone_and_reloads(shared_data: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch, built_backbones: Any) -> None:
    monkeypatch.setenv("FASHIONLENS_CACHE", str(tmp_path / "cache"))  # fine-tuned weights: features not worth keeping
    shop = small_real_catalogue(shared_data)
    config = RetrievalConfig(
        backbone=BackboneConfig(name="test_efficientnet", pretrained=False, num_workers=0, freeze=1), mode="finetune",
        identity="articleType", categories=["masterCategory"], dim=8, hidden=None, max_pairs=4,
        train=TrainConfig(epochs=1, batch_size=2, monitor="val_map", mode="max"))
    embedder = train_embedder(shop, config, tmp_path / "embedder", console=QUIET, show_progress=False)
    built_backbones.assert_finetuned(frozen=("model.conv_stem.", "model.bn1.", "model.blocks.0."))  # freeze 1
    assert embedder.weights_id.startswith("weights-")  # fingerprint of the fine-tuned backbone
    loaded = Embedder.load(tmp_path / "embedder")
    assert loaded.model_id == embedder.model_id
    some = shop.subset(np.arange(len(shop)) < 3)
    assert np.allclose(loaded.embed(some), embedder.embed(some), atol=1e-5)
