"""Cross-domain training over the shared street/catalogue label space."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fashionlens.config import from_dict
from fashionlens.data.domains import DomainMapping
from fashionlens.data.readers import read_clothing_attributes
from fashionlens.data.records import Manifest
from fashionlens.engine import TrainConfig
from fashionlens.errors import ConfigError, DataError
from fashionlens.models.backbones import BackboneConfig
from fashionlens.tasks.retrieval import (
    Embedder,
    RetrievalConfig,
    SharedSpaceConfig,
    StreetRelevance,
    catalogue_metadata,
    rank_gallery,
    train_cross_domain_embedder,
    train_embedder,
)

from .conftest import QUIET, small_real_catalogue

STREET_MAPPING = DomainMapping.from_dict({
    "street": {"category": "category"}, "catalogue": {"category": "articleType", "colour": "baseColour"},
    "categories": {"Shirt": ["Shirts"], "Outerwear": ["Jackets"], "Dress": ["Dresses"]},
    "colours": {"black": ["Black"], "red": ["Red"]},
})


def _synthetic_two_domains(seed: int = 0) -> tuple[Manifest, Manifest, np.ndarray]:
    """Catalogue and street 'features' whose garment signal lies in DIFFERENT dimensions (a domain gap that no
    untrained similarity bridges), colour in shared ones, next to per-photo nuisance."""
    rng = np.random.default_rng(seed)
    types, colours = np.array(["Shirts", "Jackets", "Dresses", "Watches"]), np.array(["Black", "Red"])
    street_of = {"Shirts": "Shirt", "Jackets": "Outerwear", "Dresses": "Dress"}
    n_items, n_photos = 240, 120
    kind, colour = rng.integers(0, 4, n_items), rng.integers(0, 2, n_items)
    street_kind, street_colour = rng.integers(0, 3, n_photos), rng.integers(0, 2, n_photos)

    def features(kinds: np.ndarray, hues: np.ndarray, offset: int) -> np.ndarray:
        out = rng.normal(size=(len(kinds), 16))
        out[np.arange(len(kinds)), offset + kinds] += 4.0
        out[np.arange(len(kinds)), 8 + hues] += 3.0
        return out

    split = np.array(["train", "train", "train", "val", "test"])
    catalogue = Manifest(pd.DataFrame({
        "path": [f"/synthetic/shop/{i}.jpg" for i in range(n_items)], "item_id": [str(i) for i in range(n_items)],
        "domain": "shop", "split": np.resize(split, n_items), "class:articleType": types[kind],
        "class:baseColour": colours[colour]}), name="catalogue")
    street = Manifest(pd.DataFrame({
        "path": [f"/synthetic/street/{i}.jpg" for i in range(n_photos)], "item_id": "", "domain": "street",
        "split": np.resize(split, n_photos), "class:category": [street_of[t] for t in types[street_kind]],
        "tag:black": (street_colour == 0).astype(float), "tag:red": (street_colour == 1).astype(float)}),
        name="street")
    vectors = np.vstack([features(kind, colour, 0), features(street_kind, street_colour, 4)]).astype(np.float32)
    return catalogue, street, vectors


@pytest.mark.usefixtures("one_torch_thread")
def test_cross_domain_training_bridges_a_domain_gap_through_the_shared_classes() -> None:
    catalogue, street, features = _synthetic_two_domains()
    config = RetrievalConfig(dim=8, miner="semihard", shared=SharedSpaceConfig(loss="normalized_softmax"),
                             train=TrainConfig(epochs=12, batch_size=32, lr=1e-2, monitor="val_map", mode="max",
                                               early_stop_patience=None, scheduler="none"))
    embedder = train_cross_domain_embedder(catalogue, street, STREET_MAPPING, config, features=features,
                                           console=QUIET, show_progress=False)
    queries = np.flatnonzero(street.frame["split"] == "val")
    relevance = StreetRelevance.build(street.subset(street.frame["split"].to_numpy() == "val"),
                                      catalogue_metadata(catalogue), STREET_MAPPING)
    raw = rank_gallery(features[len(catalogue) + queries], features[:len(catalogue)], "ip", 10)
    untrained = relevance.score([[str(i) for i in row] for row in raw], 10)
    assert embedder.metrics["val_street_p@10"] > untrained["category P@10"] + 0.3
    assert embedder.metrics["val_street_colour_p@10"] > untrained["category+colour P@10"] + 0.2
    assert embedder.metrics["val_similar_p@10"] > 0.8  # the catalogue's own similar items stay sharp
    trained = rank_gallery(embedder.embed_features(features[len(catalogue) + queries]),
                           embedder.embed_features(features[:len(catalogue)]), embedder.metric, 10)
    scores = relevance.score([[str(i) for i in row] for row in trained], 10)  # validation scored the kept epoch
    assert scores["category P@10"] == pytest.approx(embedder.metrics["val_street_p@10"])


def test_cross_domain_training_needs_both_splits_and_known_settings() -> None:
    catalogue, street, features = _synthetic_two_domains()
    street.frame["split"] = "train"
    with pytest.raises(DataError, match="manifest 'street' needs train and val rows"):
        train_cross_domain_embedder(catalogue, street, STREET_MAPPING, RetrievalConfig(), features=features,
                                    console=QUIET, show_progress=False)
    with pytest.raises(ConfigError, match="use train_cross_domain_embedder"):
        train_embedder(catalogue, RetrievalConfig(shared=SharedSpaceConfig()), features=features[:len(catalogue)],
                       console=QUIET, show_progress=False)
    for bad, match in (({"loss": "hinge"}, "unknown shared-space loss 'hinge'"),
                       ({"category_weight": -1.0}, "weights must be >= 0"),
                       ({"triplet_heads": ["style"]}, "unknown triplet head"),
                       ({"street_share": 1.0}, "street_share")):
        with pytest.raises(ConfigError, match=match):
            from_dict(RetrievalConfig, {"shared": bad})


@pytest.mark.slow  # about 12 s: fine-tunes a tiny backbone on 44 real photos
def test_cross_domain_finetune_mode_runs_on_real_photos(shared_data: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FASHIONLENS_CACHE", str(tmp_path / "cache"))
    shop = small_real_catalogue(shared_data)
    photos = read_clothing_attributes(shared_data / "clothing-attributes")
    tees = np.flatnonzero(photos.class_column("category") == "T-shirt")[:8]
    street = photos.subset(np.isin(np.arange(len(photos)), tees))
    street.frame["split"] = ["train"] * 5 + ["val"] * 3
    mapping = DomainMapping.from_dict({
        "street": {"category": "category"}, "catalogue": {"category": "articleType", "colour": "baseColour"},
        "categories": {"T-shirt": ["Tshirts"]}, "colours": {"black": ["Black"], "white": ["White"]}})
    config = RetrievalConfig(
        backbone=BackboneConfig(name="test_efficientnet", pretrained=False, num_workers=0, freeze=1), mode="finetune",
        dim=8, shared=SharedSpaceConfig(), train=TrainConfig(epochs=1, batch_size=8, monitor="val_map", mode="max"))
    embedder = train_cross_domain_embedder(shop, street, mapping, config, tmp_path / "embedder", console=QUIET,
                                           show_progress=False)
    assert embedder.weights_id.startswith("weights-") and 0.0 <= embedder.metrics["val_street_p@10"] <= 1.0
    loaded = Embedder.load(tmp_path / "embedder")
    assert loaded.model_id == embedder.model_id and loaded.config.shared == config.shared
