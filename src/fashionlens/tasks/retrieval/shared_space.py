"""Cross-domain training: street photos and catalogue photos in one shared label space
(:mod:`fashionlens.tasks.retrieval.shared_labels`), learnt with PML proxy losses per label head plus mined triplets.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from rich.console import Console
from torch import nn
from torch.utils.data import DataLoader

from fashionlens.data.domains import DomainMapping
from fashionlens.data.records import Manifest
from fashionlens.errors import DataError
from fashionlens.io import run_dir
from fashionlens.models.embedding import EmbeddingHead
from fashionlens.runtime import resolve_device
from fashionlens.tasks.common import fit
from fashionlens.tasks.retrieval.config import SHARED_LOSSES, RetrievalConfig, SharedSpaceConfig
from fashionlens.tasks.retrieval.model import Embedder
from fashionlens.tasks.retrieval.ranking import rank_gallery, relevance_keys, score_ranking
from fashionlens.tasks.retrieval.shared_labels import HEADS, SharedSpaceSampler, shared_labels
from fashionlens.tasks.retrieval.street_eval import StreetRelevance, catalogue_metadata
from fashionlens.tasks.retrieval.train import (
    TripletObjective,
    features_setup,
    finetune_setup,
    trained_embedder,
    whole_batch,
)


class _WithProxies(nn.Module):
    """The embedding network plus the shared-space losses (their class proxies), so that one optimiser trains all."""

    def __init__(self, network: nn.Module, head_losses: Mapping[str, nn.Module]):
        super().__init__()
        self.network = network
        self.head_losses = nn.ModuleDict(dict(head_losses))

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """The network's embeddings (the losses only train)."""
        embeddings: torch.Tensor = self.network(inputs)
        return embeddings


class SharedSpaceObjective:
    """PML proxy/classification losses over the shared label heads, plus an optional mined triplet term.

    Args:
        shared: Loss and weights.
        classes: Class names per head (:attr:`~fashionlens.tasks.retrieval.shared_labels.SharedLabels.classes`).
        dim: Embedding width.
        margin: Margin of the triplet term.
        miner: Key of :data:`MINERS` for the triplet term (``semihard`` when ``None``).
    """

    def __init__(self, shared: SharedSpaceConfig, classes: Mapping[str, Sequence[str]], dim: int, margin: float,
                 miner: str | None = None):
        weights = {"category": shared.category_weight, "colour": shared.colour_weight, "fine": shared.fine_weight}
        self.weights = {head: w for head, w in weights.items() if w > 0 and len(classes[head]) > 1}
        # the model holds these modules too (so the optimiser trains their proxies and .to() moves them)
        self.head_losses = {head: SHARED_LOSSES[shared.loss](len(classes[head]), dim) for head in self.weights}
        self.triplet_weight, self.triplet_heads = shared.triplet_weight, list(shared.triplet_heads)
        self.triplet = TripletObjective(margin, miner or "semihard") if shared.triplet_weight > 0 else None

    def loss(self, model: nn.Module, batch: Any, device: torch.device) -> torch.Tensor:
        """Engine callback: the weighted sum of each head's loss over the batch rows labelled in that head."""
        inputs, labels, _ = batch
        embeddings = model(inputs.to(device)).float()
        labels = labels.to(device)
        total = embeddings.new_zeros(())
        for head, weight in self.weights.items():
            codes = labels[:, HEADS.index(head)]
            known = codes >= 0
            if bool(known.any()):
                total = total + weight * self.head_losses[head](embeddings[known], codes[known])
        for head in self.triplet_heads if self.triplet is not None else ():
            assert self.triplet is not None and self.triplet.miner is not None
            codes = labels[:, HEADS.index(head)]
            known = codes >= 0
            indices = self.triplet.miner(embeddings[known], codes[known])
            total = total + self.triplet_weight * self.triplet.loss_function(embeddings[known], codes[known], indices)
        return total


def _shared_validation(config: RetrievalConfig, embed_rows: Callable[[nn.Module], np.ndarray], gallery: np.ndarray,
                       queries: np.ndarray, relevance: StreetRelevance, similar: np.ndarray, keys: np.ndarray,
                       strict_keys: np.ndarray) -> Callable[[nn.Module], dict[str, float]]:
    """Engine callback: real street photos of val against the whole catalogue, and the catalogue's val items
    against each other (same articleType, and strict: same articleType + baseColour).

    Reports ``val_street_p@K``, ``val_street_colour_p@K``, ``val_similar_p@K``, ``val_similar_strict_p@K``,
    their mAP@K, ``val_score`` (the mean of the four P@K) and ``val_map`` (the mean of the four mAP@K).
    """
    k = config.eval_k
    metric = "ip" if config.normalize else "l2"
    embedded = np.union1d(gallery, queries)  # the rows ``embed_rows`` embeds, in this order

    def evaluate(model: nn.Module) -> dict[str, float]:
        vectors = embed_rows(model)
        at = {name: vectors[np.searchsorted(embedded, rows)] for name, rows in
              (("gallery", gallery), ("queries", queries), ("similar", similar))}
        ranked = rank_gallery(at["queries"], at["gallery"], metric, k)
        street = relevance.score([[str(i) for i in relevance.item_ids[row[row >= 0]]] for row in ranked], k)
        near = rank_gallery(at["similar"], at["similar"], metric, k, exclude_self=True)
        same = score_ranking(keys[similar], keys[similar], near, [k], exclude_self=True)
        strict = score_ranking(strict_keys[similar], strict_keys[similar], near, [k], exclude_self=True)
        scores = {f"val_street_p@{k}": street[f"category P@{k}"], f"val_street_map@{k}": street[f"category mAP@{k}"],
                  f"val_street_colour_p@{k}": street.get(f"category+colour P@{k}", 0.0),
                  f"val_street_colour_map@{k}": street.get(f"category+colour mAP@{k}", 0.0),
                  f"val_similar_p@{k}": same[f"precision@{k}"], f"val_similar_map@{k}": same["mAP"],
                  f"val_similar_strict_p@{k}": strict[f"precision@{k}"], f"val_similar_strict_map@{k}": strict["mAP"]}
        scores["val_score"] = float(np.mean([v for name, v in scores.items() if "_p@" in name]))
        scores["val_map"] = float(np.mean([v for name, v in scores.items() if "_map@" in name]))
        return scores

    return evaluate


def train_cross_domain_embedder(catalogue: Manifest, street: Manifest, mapping: DomainMapping,
                                config: RetrievalConfig, out_dir: str | Path | None = None,
                                features: np.ndarray | None = None, console: Console | None = None,
                                show_progress: bool = True) -> Embedder:
    """Train an embedder on catalogue photos and street photos in one shared label space.

    The ``train`` rows of both manifests train (street photos through their mapped category and colour labels,
    catalogue photos through articleType, baseColour and ``shared.fine_fields``; see
    :mod:`fashionlens.tasks.retrieval.shared_labels`) with ``config.shared``'s PML losses. Each epoch is scored on the
    street photos of ``val`` querying the whole catalogue (as the demo's index) and on the catalogue's ``val`` items
    querying each other (see :func:`_shared_validation`); the epoch best on ``config.train.monitor`` is kept
    (``val_map``, the default, or e.g. ``val_score``).

    Args:
        catalogue: Catalogue photos (Fashion Product Images) with ``split`` set.
        street: Street photos (Clothing Attributes) with ``split`` set (the demo's:
            ``split_manifest(street, seed=0, stratify="category")``).
        mapping: Street labels → catalogue values (:func:`~fashionlens.data.domains.load_domain_mapping`).
        config: Model and training settings; ``config.shared`` (default :class:`SharedSpaceConfig` when ``None``).
        out_dir: Model directory to write (``None``: don't save); the resumable run goes to ``<out_dir>.run``.
        features: Frozen backbone features of the catalogue rows followed by the street rows (``features`` mode;
            skips extraction).
        console: Where progress messages go.
        show_progress: Draw progress bars.

    Raises:
        DataError: A manifest lacks ``train`` or ``val`` rows (or mapped street labels there), a field the mapping
            or ``fine_fields`` name, or the mapping names values the catalogue lacks.
    """
    console = console or Console(stderr=True)
    config = replace(config, shared=config.shared or SharedSpaceConfig())
    assert config.shared is not None
    for manifest in (catalogue, street):
        present = set(manifest.frame["split"].astype(str))
        if not {"train", "val"} <= present:
            raise DataError(f"manifest '{manifest.name}' needs train and val rows for cross-domain training; split "
                            f"it first (fashionlens data split)")
    labels = shared_labels(catalogue, street, mapping, config.shared.fine_fields)
    combined = Manifest(pd.concat([catalogue.frame, street.frame], ignore_index=True),
                        name=f"{catalogue.name}+{street.name}")
    n_catalogue, split = len(catalogue), combined.frame["split"].to_numpy()
    is_street = np.arange(len(combined)) >= n_catalogue
    train = np.flatnonzero((split == "train") & (labels.codes >= 0).any(axis=1))
    sampler = SharedSpaceSampler(train, labels.codes[train], is_street[train], config.train.batch_size,
                                 config.shared.street_share, config.train.seed)
    street_val = (np.array([c is not None for c in mapping.street_labels(street)[0]], dtype=bool)
                  & (street.frame["split"].to_numpy() == "val"))
    if not street_val.any():
        raise DataError(f"no val photo of street manifest '{street.name}' has a category that domain mapping "
                        f"{mapping.source} maps")
    relevance = StreetRelevance.build(street.subset(street_val), catalogue_metadata(catalogue), mapping)
    queries, gallery = n_catalogue + np.flatnonzero(street_val), np.arange(n_catalogue)
    similar = np.flatnonzero(split[:n_catalogue] == "val")
    device = resolve_device(config.train.device)
    val_rows = np.union1d(gallery, queries)
    setup = (features_setup(combined, config, features, val_rows, device, show_progress)
             if config.mode == "features" else finetune_setup(combined, config, val_rows, device))
    head = next(m for m in setup.model.modules() if isinstance(m, EmbeddingHead))
    objective = SharedSpaceObjective(config.shared, labels.classes, head.out_features, config.margin, config.miner)
    loader = DataLoader(setup.dataset, sampler=sampler, batch_size=None, num_workers=setup.workers,
                        collate_fn=whole_batch)
    validation = _shared_validation(config, setup.embed_val, gallery, queries, relevance, similar,
                                    relevance_keys(combined, [mapping.catalogue_category]),
                                    relevance_keys(combined, [mapping.catalogue_category, mapping.catalogue_colour]))
    with_proxies, result = fit(_WithProxies(setup.model, objective.head_losses), objective.loss, validation, loader,
                               config.train, run_dir(out_dir) if out_dir else None, console, show_progress)
    trained: nn.Module = with_proxies.network  # type: ignore[assignment]
    return trained_embedder(trained, config, setup, result, out_dir, console)

