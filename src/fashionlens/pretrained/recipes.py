"""How each shipped model is trained from the shared data and scored on its held-out test split.

A :class:`Recipe` is the best CPU recipe its task's benchmarks found (``benchmarks/results/``): a head on frozen,
cached EfficientNet-Lite0 ImageNet features, trained with fixed seeds on the demo's split of the dataset. The same
:meth:`Recipe.evaluate` computes the test figures written into a shipped model's ``metrics.json`` and model card, and
re-checks them in the tests, so the card cannot drift from the weights.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import pandas as pd
from rich.console import Console

from fashionlens.catalogue import build_catalogue_index
from fashionlens.config import load_config
from fashionlens.data.domains import load_domain_mapping
from fashionlens.data.readers.clothing_attributes import PAPER_LABELS, POSITIVE_NAMES
from fashionlens.data.records import Manifest
from fashionlens.data.standard_splits import clothing_split, products_split
from fashionlens.errors import ModelError
from fashionlens.models.backbones import BackboneConfig
from fashionlens.tasks.hierarchy import HierarchyClassifier, HierarchyConfig, evaluate_hierarchy, train_hierarchy
from fashionlens.tasks.retrieval import (
    Embedder,
    RetrievalConfig,
    catalogue_metadata,
    evaluate_similar_items,
    evaluate_street_search,
    index_search,
    train_cross_domain_embedder,
)
from fashionlens.tasks.tagging import Tagger, TaggingConfig, evaluate_predictions, train_tagger

SPLIT_SEED = 0
"""Seed of the demo's dataset splits, which the shipped models are trained and tested on."""


class Recipe(ABC):
    """Train one shipped model from the shared data, and score it on the test split it never saw."""

    @abstractmethod
    def manifest(self, data: Path) -> Manifest:
        """The dataset under ``data`` with its ``train``/``val``/``test`` split."""

    @abstractmethod
    def train(self, manifest: Manifest, out: Path) -> Any:
        """Train on the ``train`` (and ``val``) rows of ``manifest``; the task's trainer saves to ``out``."""

    @abstractmethod
    def evaluate(self, model: Any, manifest: Manifest) -> dict[str, float]:
        """Test figures of ``model`` (features through the shared cache): ``{figure name: value}``."""


def _quiet() -> Console:
    return Console(stderr=True, quiet=True)


class ClothingTaggerRecipe(Recipe):
    """The default frozen-feature tagger (weighted BCE head, thresholds from out-of-fold predictions, head refit on
    train+val): row 3 of ``benchmarks/results/tagging_clothing.md``, as ``make demo`` trains it."""

    def manifest(self, data: Path) -> Manifest:
        return clothing_split(data, seed=SPLIT_SEED)

    def train(self, manifest: Manifest, out: Path) -> Tagger:
        config = TaggingConfig(backbone=BackboneConfig(), positive_names=dict(POSITIVE_NAMES))
        return train_tagger(manifest, config, out, console=_quiet(), show_progress=False)

    def evaluate(self, model: Any, manifest: Manifest) -> dict[str, float]:
        if not isinstance(model, Tagger):
            raise ModelError(f"the clothing tagger recipe scores taggers, not a {type(model).__name__}")
        rows = manifest.split_subset("test")
        predictions = model.predict(rows, show_progress=False)
        f1, f2 = (evaluate_predictions(model.labels, model.thresholds_for(beta), predictions, rows, "test",
                                       beta=beta, focus=list(PAPER_LABELS)).summary for beta in (1.0, 2.0))
        figures = {"rows": float(len(rows)), "macro_f1": f1["macro_f1@tuned"],
                   "macro_f1_paper20": f1["macro_f1@tuned[focus]"], "micro_f1": f1["micro_f1@tuned"],
                   "sample_f1": f1["sample_f1@tuned"], "macro_f2@f2_thresholds": f2["macro_f2@tuned"],
                   "mAP": f1["mAP"]}
        figures.update({key: value for key, value in f1.items() if key.startswith("top1_")})
        return {key: float(value) for key, value in figures.items()}


class ProductHierarchyRecipe(Recipe):
    """HMCN-F with learned uncertainty weighting on frozen features, the taxonomy of
    ``configs/hierarchy_fashion_products.yaml`` (the config's defaults): the best variant of
    ``benchmarks/results/hierarchy.md``."""

    def manifest(self, data: Path) -> Manifest:
        return products_split(data, seed=SPLIT_SEED)

    def train(self, manifest: Manifest, out: Path) -> HierarchyClassifier:
        return train_hierarchy(manifest, HierarchyConfig(backbone=BackboneConfig()), out, console=_quiet(),
                               show_progress=False)

    def evaluate(self, model: Any, manifest: Manifest) -> dict[str, float]:
        if not isinstance(model, HierarchyClassifier):
            raise ModelError(f"the product hierarchy recipe scores hierarchy classifiers, not a "
                             f"{type(model).__name__}")
        evaluation, _ = evaluate_hierarchy(model, manifest, "test", show_progress=False)
        return {key: float(value) for key, value in evaluation.summary.items()}


class StreetToShopEmbedderRecipe(Recipe):
    """The cross-domain embedder of ``make demo``: Fashion Product Images catalogue photos and Clothing Attributes
    street photos (train splits) in one label space through the shipped street2shop mapping, shipped config
    ``retrieval_street2shop`` (a 256-d head on frozen features; ProxyAnchor per shared head + mined cross-domain
    triplets). The best row of ``benchmarks/results/retrieval_street.md`` without a tagger; it also serves
    catalogue-only similar-item search."""

    def manifest(self, data: Path) -> Manifest:
        products, street = products_split(data, seed=SPLIT_SEED), clothing_split(data, seed=SPLIT_SEED)
        return Manifest(pd.concat([products.frame, street.frame], ignore_index=True), name="street2shop")

    @staticmethod
    def _domains(manifest: Manifest) -> tuple[Manifest, Manifest]:
        shop = (manifest.frame["domain"] == "shop").to_numpy()
        return manifest.subset(shop), manifest.subset(~shop)

    def train(self, manifest: Manifest, out: Path) -> Embedder:
        products, street = self._domains(manifest)
        return train_cross_domain_embedder(products, street, load_domain_mapping(),
                                           load_config(RetrievalConfig, "retrieval_street2shop"), out,
                                           console=_quiet(), show_progress=False)

    def evaluate(self, model: Any, manifest: Manifest) -> dict[str, float]:
        if not isinstance(model, Embedder):
            raise ModelError(f"the street-to-shop recipe scores embedders, not a {type(model).__name__}")
        products, street = self._domains(manifest)
        similar = evaluate_similar_items(model, products, "test", k=10)
        index = build_catalogue_index(model, products)
        scores = evaluate_street_search(index_search(index, model.embed), street, catalogue_metadata(products),
                                        load_domain_mapping(), "test")
        return {"rows": float((products.frame["split"] == "test").sum()) + scores["queries"],
                "similar_p@10": similar["precision@10"], "similar_p@10_strict": similar["precision@10_strict"],
                "street_category_p@10": scores["category P@10"],
                "street_category_colour_p@10": scores["category+colour P@10"],
                "street_queries": scores["queries"]}
