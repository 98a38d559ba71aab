"""Synthetic embedders and manifests shared by the retrieval task tests, and a small real catalogue."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from rich.console import Console

from fashionlens.data.readers import read_fashion_product_images
from fashionlens.data.records import Manifest
from fashionlens.models.embedding import EmbeddingHead
from fashionlens.tasks.retrieval import (
    Embedder,
    RetrievalConfig,
)

QUIET = Console(quiet=True)




QUIET = Console(quiet=True)


def synthetic_embedder(in_features: int = 16, dim: int | None = 8, seed: int = 0, normalize: bool = True) -> Embedder:
    """An embedder on synthetic features (no backbone is ever built)."""
    torch.manual_seed(seed)
    config = RetrievalConfig(dim=dim, hidden=None, normalize=normalize)
    return Embedder(config, EmbeddingHead(in_features, dim, None, normalize), weights_id="synthetic")


def synthetic_street_to_shop(n_items: int = 200, signal: int = 8, nuisance: int = 16,
                              seed: int = 0) -> tuple[Manifest, np.ndarray]:
    """Shop and street 'features' of each item: a shared identity part next to larger per-photo nuisance."""
    rng = np.random.default_rng(seed)
    identity = rng.normal(size=(n_items, signal))
    shop = np.hstack([identity, 2.0 * rng.normal(size=(n_items, nuisance))])
    street = np.hstack([identity + 0.1 * rng.normal(size=identity.shape), 2.0 * rng.normal(size=(n_items, nuisance))])
    split = np.array(["train", "train", "train", "val", "test"] * (n_items // 5))
    frame = pd.DataFrame({
        "path": [f"/synthetic/{d}/{i}.jpg" for d in ("shop", "street") for i in range(n_items)],
        "item_id": [str(i) for i in range(n_items)] * 2, "domain": ["shop"] * n_items + ["street"] * n_items,
        "split": np.concatenate([split, split]), "class:articleType": [f"type{i % 4}" for i in range(n_items)] * 2,
    })
    return Manifest(frame, name="synthetic"), np.vstack([shop, street]).astype(np.float32)


def small_real_catalogue(root: Path) -> Manifest:
    """Nine products of each of four article types: five train, two val, two test each."""
    products = read_fashion_product_images(root / "fashion-product-images")
    types = products.class_column("articleType")
    chosen = np.concatenate([np.flatnonzero(types == t)[:9] for t in ("Tshirts", "Casual Shoes", "Watches", "Jeans")])
    subset = products.subset(np.isin(np.arange(len(products)), chosen))
    subset.frame["split"] = subset.frame.groupby("class:articleType").cumcount().map(
        lambda i: "train" if i < 5 else "val" if i < 7 else "test")
    return Manifest(subset.frame, name="small-catalogue")
