"""Small real models for the service tests, trained once per session on the shared data, and a live server.

* tagger: trained on 150 Clothing Attributes photos (frozen-feature mode, a few epochs);
* hierarchy: HMCN-F on 240 Fashion Product images (frozen-feature mode, a few epochs);
* index: the untrained baseline embedder (ImageNet features) over 200 of those product images, so the index can be
  searched by photo without ``--embedder``; ``embedder`` is the same embedder saved as a directory.

The remaining product images (not in the index) serve as query photos.

Torch runs single-threaded here: on a 2-core machine shared with other jobs, its two spinning intra-op threads
make these tiny models 10-50x slower (measured: 19 s instead of 0.4 s to train the tagger under load).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import uvicorn
from fastapi import FastAPI
from rich.console import Console

from fashionlens.data.domains import load_domain_mapping
from fashionlens.data.readers import read_clothing_attributes, read_fashion_product_images
from fashionlens.data.records import Manifest
from fashionlens.data.splits import split_manifest
from fashionlens.engine import TrainConfig
from fashionlens.index import CatalogueIndex
from fashionlens.models.backbones import BackboneConfig
from fashionlens.service.app import create_app
from fashionlens.tasks.common import frozen_features
from fashionlens.tasks.hierarchy import HierarchyConfig, TaxonomyConfig, train_hierarchy
from fashionlens.tasks.retrieval import Embedder, catalogue_metadata
from fashionlens.tasks.tagging import TaggingConfig, train_tagger

QUIET = Console(quiet=True)
CATALOGUE_SIZE = 200


@dataclass(frozen=True)
class ServiceModels:
    """Model directories and the images they were (and were not) trained or indexed on."""

    tagger: Path
    hierarchy: Path
    index: Path
    embedder: Path
    catalogue: Manifest
    queries: list[Path]
    street_photos: list[Path]
    hires_photo: Path


@contextmanager
def single_threaded_torch() -> Iterator[None]:
    """Run torch on one intra-op thread, restoring the previous setting afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread() -> Iterator[None]:
    with single_threaded_torch():
        yield


def _first(manifest: Manifest, n: int) -> Manifest:
    return manifest.subset(np.arange(len(manifest)) < n)


def _quick(epochs: int) -> TrainConfig:
    return TrainConfig(epochs=epochs, lr=3e-3, batch_size=32, early_stop_patience=epochs)


@pytest.fixture(scope="session")
def service_models(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> ServiceModels:
    """Train the small models once (a few seconds; about 20 s more with a cold feature cache)."""
    with single_threaded_torch():
        return _train_service_models(shared_data, tmp_path_factory.mktemp("service-models"))


def _train_service_models(shared_data: Path, out: Path) -> ServiceModels:
    backbone = BackboneConfig()
    clothing = split_manifest(_first(read_clothing_attributes(shared_data / "clothing-attributes"), 150), seed=0)
    tagger_config = TaggingConfig(backbone=backbone, hidden=64, dropout=0.1, train=_quick(8))
    train_tagger(clothing, tagger_config, console=QUIET, show_progress=False,
                 features=frozen_features(clothing, backbone, show_progress=False)).save(out / "tagger")

    products = split_manifest(_first(read_fashion_product_images(shared_data / "fashion-product-images"), 240),
                              seed=0)
    product_features = frozen_features(products, backbone, show_progress=False)
    hierarchy_config = HierarchyConfig(backbone=backbone, hidden=64, taxonomy=TaxonomyConfig(min_count=3),
                                       train=_quick(8))
    train_hierarchy(products, hierarchy_config, features=product_features, console=QUIET,
                    show_progress=False).save(out / "hierarchy")

    embedder = Embedder.untrained(backbone)
    embedder.save(out / "embedder")
    catalogue = _first(products, CATALOGUE_SIZE)
    vectors = embedder.embed_features(product_features[:CATALOGUE_SIZE])
    CatalogueIndex.build(vectors, catalogue_metadata(catalogue), embedder.model_id, embedder.metric).save(
        out / "index")
    hires = sorted((shared_data / "fashion-product-images-hires").rglob("*.jpg"))
    return ServiceModels(
        tagger=out / "tagger", hierarchy=out / "hierarchy", index=out / "index", embedder=out / "embedder",
        catalogue=catalogue, queries=[Path(p) for p in products.frame["path"].iloc[CATALOGUE_SIZE:]],
        street_photos=[Path(p) for p in clothing.frame["path"].iloc[:20]], hires_photo=hires[0])


@pytest.fixture(scope="session")
def full_app(service_models: ServiceModels) -> FastAPI:
    """The app with every component (tagger, hierarchy, index searchable by photo)."""
    return create_app(service_models.tagger, service_models.hierarchy, service_models.index)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="session")
def live_server(full_app: FastAPI) -> Iterator[str]:
    """``full_app`` served by uvicorn on a loopback port in a background thread; yields its base URL."""
    with _served(full_app) as url:
        yield url


@pytest.fixture(scope="session")
def mapped_index(service_models: ServiceModels, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An index of the baseline embedder over items of every articleType and baseColour the shipped domain mapping
    names, recording the service tagger, so photo search is steered by attributes (random vectors: which items are
    nearest is arbitrary, so only the steering orders the kinds)."""
    mapping = load_domain_mapping()
    kinds = sorted({kind for names in mapping.categories.values() for kind in names})
    colours = sorted({colour for names in mapping.colours.values() for colour in names})
    rows = max(len(kinds), len(colours))
    photo = str(service_models.catalogue.frame["path"].iloc[0])
    metadata = pd.DataFrame({"item_id": [f"item{i}" for i in range(rows)], "path": [photo] * rows,
                             "articleType": [kinds[i % len(kinds)] for i in range(rows)],
                             "baseColour": [colours[i % len(colours)] for i in range(rows)]})
    embedder = Embedder.untrained(BackboneConfig())
    vectors = np.random.default_rng(0).normal(size=(rows, embedder.dim)).astype(np.float32)
    index = CatalogueIndex.build(vectors, metadata, embedder.model_id, embedder.metric)
    index.record_model("tagger", service_models.tagger)
    return index.save(tmp_path_factory.mktemp("mapped") / "index")


@pytest.fixture(scope="session")
def steered_server(mapped_index: Path) -> Iterator[str]:
    """The app over ``mapped_index`` alone (its recorded tagger steers photo search), served like ``live_server``."""
    with _served(create_app(index_dir=mapped_index)) as url:
        yield url


@contextmanager
def _served(app: FastAPI) -> Iterator[str]:
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=_free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, name="test-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{server.config.port}"
    server.should_exit = True
    thread.join(10)
