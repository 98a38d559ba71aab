"""Triplet training of an :class:`~fashionlens.tasks.retrieval.model.Embedder` on one manifest (``features`` or
``finetune`` mode), with the paper's triplets or PML's online miners.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pytorch_metric_learning import losses
from rich.console import Console
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from fashionlens.data.dataset import ManifestImageDataset, collate_skipping
from fashionlens.data.records import Manifest
from fashionlens.data.transforms import eval_transform, train_transform
from fashionlens.engine import TrainResult
from fashionlens.errors import ConfigError, DataError
from fashionlens.io import run_dir
from fashionlens.models.backbones import build_backbone
from fashionlens.models.embedding import EmbeddingHead
from fashionlens.models.network import TaskNetwork
from fashionlens.runtime import SINGLE_OUTPUT, default_workers, forward_batches, resolve_device, seed_everything
from fashionlens.tasks.common import finetune_network, fit, frozen_features, tuned_parts
from fashionlens.tasks.retrieval.config import MINERS, RetrievalConfig, squared_l2
from fashionlens.tasks.retrieval.model import Embedder
from fashionlens.tasks.retrieval.ranking import QueryRoles, rank_gallery, relevance_keys, score_ranking
from fashionlens.tasks.retrieval.triplets import (
    ClassBalancedSampler,
    PaperTripletSampler,
    TripletBatch,
    encode,
)


class _FeatureBatches(Dataset[Any]):
    """Batch items for ``features`` mode: the cached features of a :class:`TripletBatch`'s rows."""

    def __init__(self, features: np.ndarray):
        self.features = torch.as_tensor(features)

    def __getitem__(self, batch: TripletBatch) -> tuple[torch.Tensor, torch.Tensor, Any]:
        return self.features[batch.rows], batch.labels, batch.triplets


class _ImageBatches(Dataset[Any]):
    """Batch items for ``finetune`` mode: the augmented images of a :class:`TripletBatch`'s rows."""

    def __init__(self, manifest: Manifest, transform: Callable[..., torch.Tensor]):
        self.images = ManifestImageDataset(manifest, transform)

    def image(self, row: int) -> torch.Tensor:
        item = self.images[row]
        assert item is not None, "unreadable images raise (skip_bad_images is off)"
        return item[0]

    def __getitem__(self, batch: TripletBatch) -> tuple[torch.Tensor, torch.Tensor, Any]:
        return torch.stack([self.image(int(row)) for row in batch.rows]), batch.labels, batch.triplets


def whole_batch(item: Any) -> Any:
    """Collate function of the training loaders: the sampler yields whole batches, so each item is one already."""
    return item


class TripletObjective:
    """PML's triplet margin loss on squared L2 distances, over given triplets or those an online miner picks."""

    def __init__(self, margin: float, miner: str | None = None, swap: bool = False):
        self.loss_function = losses.TripletMarginLoss(margin=margin, swap=swap, distance=squared_l2())
        self.miner = MINERS[miner](margin) if miner else None

    def loss(self, model: nn.Module, batch: Any, device: torch.device) -> torch.Tensor:
        """Engine callback: the mean loss of the batch's triplets that violate the margin."""
        inputs, labels, triplets = batch
        embeddings = model(inputs.to(device)).float()
        labels = labels.to(device)
        if triplets is None:
            assert self.miner is not None, "batches without triplets need a miner"
            indices = self.miner(embeddings, labels)
        else:
            indices = tuple(t.to(device) for t in triplets)
        loss: torch.Tensor = self.loss_function(embeddings, labels, indices)
        return loss


def _sampler(config: RetrievalConfig, rows: np.ndarray, identity: np.ndarray, domain: np.ndarray,
             categories: Sequence[np.ndarray]) -> Sampler[TripletBatch]:
    if config.miner is not None:
        return ClassBalancedSampler(rows, identity[rows], config.train.batch_size, seed=config.train.seed)
    return PaperTripletSampler(rows, identity[rows], domain[rows], [c[rows] for c in categories],
                               config.train.batch_size, config.negatives_per_pair, config.easy_fraction,
                               config.max_pairs, config.train.seed, negative_domain=config.negatives)


def _validation(config: RetrievalConfig, embed_rows: Callable[[nn.Module], np.ndarray], roles: QueryRoles,
                keys: np.ndarray) -> Callable[[nn.Module], dict[str, float]]:
    """Engine callback: ``val_recall@1``, ``val_recall@K``, ``val_precision@K`` and ``val_map`` on the val split."""
    ks = sorted({1, config.eval_k})
    metric = "ip" if config.normalize else "l2"

    def evaluate(model: nn.Module) -> dict[str, float]:
        vectors = embed_rows(model)
        embedded = np.union1d(roles.queries, roles.gallery)  # the rows ``embed_rows`` embeds, in this order
        queries, gallery = np.searchsorted(embedded, roles.queries), np.searchsorted(embedded, roles.gallery)
        ranked = rank_gallery(vectors[queries], vectors[gallery], metric, max(ks), roles.exclude_self)
        scores = score_ranking(keys[roles.queries], keys[roles.gallery], ranked, ks, roles.exclude_self)
        return {f"val_{name.lower()}": value for name, value in scores.items() if name != "queries"}

    return evaluate


@dataclass
class TrainingSetup:
    """What a training mode contributes: the model, its batch inputs, and how to embed the val rows."""

    model: nn.Module
    dataset: Dataset[Any]
    workers: int
    embed_val: Callable[[nn.Module], np.ndarray]
    weights_id: str


def features_setup(manifest: Manifest, config: RetrievalConfig, features: np.ndarray | None, val_rows: np.ndarray,
                   device: torch.device, show_progress: bool) -> TrainingSetup:
    """``features`` mode: the head alone, on cached frozen features."""
    network = build_backbone(config.backbone)
    if features is None:
        features = frozen_features(manifest, config.backbone, backbone=network, show_progress=show_progress)
    if len(features) != len(manifest):
        raise DataError(f"{len(features)} feature rows given for {len(manifest)} manifest rows")
    val_inputs = torch.as_tensor(features[val_rows])

    def embed_val(model: nn.Module) -> np.ndarray:
        return forward_batches(model, [(val_inputs, np.arange(len(val_rows)))], len(val_rows), device)[0][
            SINGLE_OUTPUT]

    seed_everything(config.train.seed)  # the head's initial weights repeat, whether or not features were cached
    head = EmbeddingHead(features.shape[1], config.dim, config.hidden, config.normalize)
    return TrainingSetup(head, _FeatureBatches(features), 0, embed_val, network.weights_id)


def finetune_setup(manifest: Manifest, config: RetrievalConfig, val_rows: np.ndarray,
                   device: torch.device) -> TrainingSetup:
    """``finetune`` mode: backbone (first stages frozen) and head on augmented images; val re-embedded each epoch."""
    seed_everything(config.train.seed)
    model = finetune_network(config.backbone,
                             lambda width: EmbeddingHead(width, config.dim, config.hidden, config.normalize))
    network: Any = model.backbone
    workers = default_workers() if config.backbone.num_workers is None else config.backbone.num_workers
    val_set = ManifestImageDataset(manifest.subset(np.isin(np.arange(len(manifest)), val_rows)),
                                   eval_transform(network.preprocess))
    val_loader = DataLoader(val_set, batch_size=config.backbone.batch_size, num_workers=workers,
                            collate_fn=collate_skipping)

    def embed_val(net: nn.Module) -> np.ndarray:
        return forward_batches(net, val_loader, len(val_set), device)[0][SINGLE_OUTPUT]

    return TrainingSetup(model, _ImageBatches(manifest, train_transform(network.preprocess)), workers, embed_val,
                  network.weights_id)


def train_embedder(manifest: Manifest, config: RetrievalConfig, out_dir: str | Path | None = None,
                   features: np.ndarray | None = None, console: Console | None = None,
                   show_progress: bool = True) -> Embedder:
    """Triplet-train an embedder on the ``train`` split, keeping the epoch that scores best on ``val``.

    Args:
        manifest: Rows with ``split`` set. Street-to-shop: shop and street photos sharing ``item_id``; similar-item
            search: one split-labelled catalogue with the ``identity`` field (e.g. ``articleType``).
        config: Model and training settings.
        out_dir: Model directory to write (``None``: don't save); the resumable run goes to ``<out_dir>.run``.
        features: Frozen backbone features aligned with ``manifest`` (skips extraction; ``features`` mode).
        console: Where progress messages go.
        show_progress: Draw progress bars.

    Raises:
        ConfigError: ``config.shared`` is set (cross-domain training: :func:`train_cross_domain_embedder`).
        DataError: Empty ``train``/``val`` split, unknown identity/category field, no positive pairs, or no val
            row with a match to score.
    """
    if config.shared is not None:
        raise ConfigError("the config sets 'shared' (cross-domain training), which needs a catalogue and a street "
                          "manifest: use train_cross_domain_embedder, or remove 'shared' for triplet training")
    console = console or Console(stderr=True)
    identity_text = manifest.column(config.identity).fillna("").astype(str).to_numpy()
    split, domain = manifest.frame["split"].to_numpy(), manifest.frame["domain"].to_numpy()
    rows = {name: np.flatnonzero((split == name) & (identity_text != "")) for name in ("train", "val")}
    for name, chosen in rows.items():
        if len(chosen) == 0:
            raise DataError(f"split '{name}' of manifest '{manifest.name}' has no rows with a '{config.identity}'; "
                            f"split the manifest first (fashionlens data split)")
    identity = encode(identity_text)
    categories = [encode(manifest.column(name).fillna("").astype(str)) for name in config.categories]
    sampler = _sampler(config, rows["train"], identity, domain, categories)
    roles = QueryRoles.of(domain, rows["val"])
    keys = relevance_keys(manifest, [config.identity])
    if not roles.answerable(keys):
        raise DataError(f"no val row of manifest '{manifest.name}' has a match (same '{config.identity}') among the "
                        f"val gallery, so validation cannot score; give the val split more items per identity")
    device = resolve_device(config.train.device)
    val_rows = np.union1d(roles.queries, roles.gallery)
    setup = (features_setup(manifest, config, features, val_rows, device, show_progress) if config.mode == "features"
             else finetune_setup(manifest, config, val_rows, device))
    loader = DataLoader(setup.dataset, sampler=sampler, batch_size=None, num_workers=setup.workers,
                        collate_fn=whole_batch)
    trained, result = fit(setup.model, TripletObjective(config.margin, config.miner, config.swap).loss,
                          _validation(config, setup.embed_val, roles, keys), loader, config.train,
                          run_dir(out_dir) if out_dir else None, console, show_progress)
    return trained_embedder(trained, config, setup, result, out_dir, console)


def trained_embedder(trained: nn.Module, config: RetrievalConfig, setup: TrainingSetup, result: TrainResult,
                     out_dir: str | Path | None, console: Console) -> Embedder:
    """The :class:`Embedder` of a trained head (``features``) or network (``finetune``; from :func:`fit`, so on the
    CPU in eval mode), saved when asked."""
    best = next((h for h in result.history if h["epoch"] == result.best_epoch), {})
    summary = {**{k: v for k, v in best.items() if k.startswith("val_")}, "best_epoch": result.best_epoch,
               "epochs_run": len(result.history), "seconds": result.seconds}
    if isinstance(trained, TaskNetwork):
        backbone, head = tuned_parts(trained)
        embedder = Embedder(config, head, backbone.weights_id, backbone, summary)  # type: ignore[arg-type]
    else:
        embedder = Embedder(config, trained, setup.weights_id, None, summary)  # type: ignore[arg-type]
    if out_dir:
        embedder.save(out_dir)
        console.print(f"saved embedder to {out_dir}")
    return embedder

