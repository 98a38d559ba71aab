"""Street-to-shop and similar-item visual search: triplet-trained embeddings, catalogue indexes and their evaluation.

An :class:`Embedder` turns images into vectors: a pretrained backbone's pooled features, then an
:class:`~fashionlens.models.embedding.EmbeddingHead` (projection to ``dim`` dimensions, optional L2 normalisation).
The untrained baseline (:meth:`Embedder.untrained`) is the ImageNet features themselves. Training modes:

* ``features`` -- only the head trains, on cached frozen features (CPU-friendly: minutes on 8k images);
* ``finetune`` -- backbone (stem and first ``backbone.freeze`` stages frozen) and head train end to end on images
  (for GPUs).

Either way an image is cropped to its garment box when the manifest has one and resized to the network's square
input (224x224 for EfficientNet-Lite0), as the paper does with its bounding-box crops.

Both use pytorch-metric-learning's triplet margin loss on squared L2 distances, with the seed paper's triplets
(:mod:`fashionlens.tasks.triplets`: anchor shop photo, positive street photo, 4 negatives, easy:hard = 1:4; the
negatives are user-shot photos of other pairs as in the paper, ``negatives: street``, or other items' shop photos,
``negatives: shop``, this project's default) or PML's online miners. Which rows are positives is the ``identity``
field: ``item_id`` (street-to-shop pairs) or a category such as ``articleType`` (similar-item search).

Cross-domain training (:func:`train_cross_domain_embedder`, ``RetrievalConfig.shared``, the shipped config
``retrieval_street2shop``) trains on real street photos too: street photos (Clothing Attributes) and catalogue photos
(Fashion Product Images) get classes in one label space through the street↔shop
:class:`~fashionlens.data.domains.DomainMapping` (:mod:`fashionlens.tasks.shared_space`), learnt with PML proxy
losses (ProxyAnchor by default) per label head, composed with mined triplets across the domains.

Evaluation ranks a gallery with a :class:`~fashionlens.index.CatalogueIndex`. When a split has both domains, its
street photos query its shop photos; otherwise each item queries the others (never itself). Scores come from
:func:`fashionlens.metrics.retrieval_metrics`: ``recall@K`` is the HIT RATE (a query counts when at least one
relevant item is in its top K), which is also the paper's top-K accuracy ("correct shop image assigned" within
the first K); ``precision@K`` is the mean fraction of relevant items in the top K; ``mAP`` is over the ranked lists.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
from pytorch_metric_learning import distances, losses, miners
from rich.console import Console
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from fashionlens.data.crops import CropSpec
from fashionlens.data.dataset import ManifestImageDataset, collate_skipping
from fashionlens.data.domains import DomainMapping
from fashionlens.data.images import decode_image
from fashionlens.data.records import CLASS_PREFIX, META_PREFIX, Manifest
from fashionlens.data.transforms import eval_transform, train_transform
from fashionlens.engine import TrainConfig, Trainer, TrainResult
from fashionlens.errors import CatalogueIndexError, ConfigError, DataError, ModelError
from fashionlens.features import extract_features
from fashionlens.index import CatalogueIndex, Filters, SearchHit
from fashionlens.index.catalogue import model_fix
from fashionlens.metrics import relevance_matrix, retrieval_metrics
from fashionlens.models.backbones import Backbone, BackboneConfig, build_backbone
from fashionlens.models.embedding import EmbeddingHead
from fashionlens.models.localiser import GarmentLocaliser
from fashionlens.models.network import TaskNetwork
from fashionlens.reports.retrieval_grid import save_results_grid
from fashionlens.runtime import SINGLE_OUTPUT, default_workers, forward_batches, resolve_device, seed_everything
from fashionlens.tasks.base import TaskModel, load_head
from fashionlens.tasks.common import fold_legacy_freeze, frozen_features, manifest_of_paths, state_fingerprint
from fashionlens.tasks.localised import DEFAULT_VIEWS, QueryCrop, plan_crops, search_views
from fashionlens.tasks.registry import register_model
from fashionlens.tasks.shared_space import HEADS, SharedSpaceSampler, shared_labels
from fashionlens.tasks.street_eval import StreetRelevance
from fashionlens.tasks.triplets import (
    NEGATIVE_DOMAINS,
    ClassBalancedSampler,
    PaperTripletSampler,
    TripletBatch,
    encode,
)

MODES = ("features", "finetune")
SIMULATED_FIELD = META_PREFIX + "simulated"


def _squared_l2() -> distances.LpDistance:
    """The paper's distance: squared Euclidean, on the embeddings as the model outputs them."""
    return distances.LpDistance(normalize_embeddings=False, p=2, power=2)


MINERS: dict[str, Callable[[float], miners.BaseMiner]] = {
    "semihard": lambda margin: miners.TripletMarginMiner(margin, "semihard", distance=_squared_l2()),
    "hard": lambda margin: miners.TripletMarginMiner(margin, "hard", distance=_squared_l2()),
    "all": lambda margin: miners.TripletMarginMiner(margin, "all", distance=_squared_l2()),
    "batch_hard": lambda margin: miners.BatchHardMiner(distance=_squared_l2()),
}
"""PML online miners selectable by ``RetrievalConfig.miner`` (the margin is the loss margin)."""


SHARED_LOSSES: dict[str, Callable[[int, int], losses.BaseMetricLossFunction]] = {
    "normalized_softmax": lambda classes, dim: losses.NormalizedSoftmaxLoss(classes, dim),
    "proxy_anchor": lambda classes, dim: losses.ProxyAnchorLoss(classes, dim),
    "arcface": lambda classes, dim: losses.ArcFaceLoss(classes, dim),
}
"""PML proxy/classification losses selectable by ``SharedSpaceConfig.loss`` (``(num_classes, embedding_size)``)."""


@dataclass
class SharedSpaceConfig:
    """Cross-domain training over one label space shared by street and catalogue photos
    (:mod:`fashionlens.tasks.shared_space`; see :func:`train_cross_domain_embedder`).

    Attributes:
        loss: A key of :data:`SHARED_LOSSES`, one loss (with its own class proxies) per label head.
        category_weight: Weight of the shared garment classes (street category ↔ catalogue articleTypes).
        colour_weight: Weight of the shared colour classes (street colour tags ↔ catalogue baseColours).
        fine_weight: Weight of the catalogue-only ``fine_fields`` classes.
        fine_fields: Catalogue fields whose joined values are the fine classes (articleType + baseColour keeps
            same-type, same-colour items together in similar-item search).
        triplet_weight: Weight of an added triplet margin loss (``RetrievalConfig.margin``) on triplets that
            ``RetrievalConfig.miner`` (``semihard`` when unset) mines in each batch over the classes of each of
            ``triplet_heads``; 0: none.
        triplet_heads: Heads the triplets are mined over: ``category`` gives cross-domain triplets (a street photo
            and a catalogue photo of the same shared class are a positive pair), ``fine`` catalogue-only ones.
        street_share: Share of each batch that is street photos.
    """

    loss: str = "proxy_anchor"
    category_weight: float = 1.0
    colour_weight: float = 0.5
    fine_weight: float = 1.0
    fine_fields: list[str] = field(default_factory=lambda: ["articleType"])
    triplet_weight: float = 1.0
    triplet_heads: list[str] = field(default_factory=lambda: ["category", "fine"])
    street_share: float = 0.25

    def __post_init__(self) -> None:
        if self.loss not in SHARED_LOSSES:
            raise ConfigError(f"unknown shared-space loss '{self.loss}'; use one of {sorted(SHARED_LOSSES)}")
        weights = (self.category_weight, self.colour_weight, self.fine_weight, self.triplet_weight)
        if min(weights) < 0 or max(weights) == 0:
            raise ConfigError(f"shared-space loss weights must be >= 0 with one > 0, got {weights}")
        if not 0.0 <= self.street_share < 1.0:
            raise ConfigError(f"street_share must lie in 0..1 (exclusive of 1), got {self.street_share}")
        unknown = sorted(set(self.triplet_heads) - set(HEADS))
        if unknown:
            raise ConfigError(f"unknown triplet head(s) {unknown}; use some of {list(HEADS)}")


def _default_retrieval_train() -> TrainConfig:
    return TrainConfig(epochs=30, batch_size=64, optimizer="adam", lr=1e-3, scheduler="step", step_size=20,
                       gamma=0.1, monitor="val_map", mode="max", early_stop_patience=6)


@dataclass
class RetrievalConfig:
    """How an embedder is built and trained (YAML-loadable; shipped config ``retrieval_triplet``).

    Attributes:
        backbone: Feature extractor; its ``freeze`` (default here: 5) is what stays frozen in ``finetune`` mode.
        mode: ``features`` or ``finetune`` (see the module docstring).
        dim: Embedding width; ``None``: no projection (the backbone features).
        hidden: Hidden width of a projection MLP; ``None``: a linear projection (on 5-8k frozen-feature training
            images the MLP overfitted and scored lower on val).
        normalize: L2-normalise embeddings (searched by cosine); else raw squared L2, as the paper's best model.
        identity: Field whose equal values make positive pairs: ``item_id`` for street-to-shop, a class head such
            as ``articleType`` for similar-item search. Rows where it is empty take no part in training.
        categories: Fields whose equality makes a negative hard, finest first (see :mod:`fashionlens.tasks.triplets`).
        negatives_per_pair: Negatives per (anchor, positive) pair (4 in the paper).
        negatives: Where cross-domain negatives come from: ``street`` (the paper's: user-shot photos of other
            pairs; the shipped config ``papers/street2shop_triplet``) or ``shop`` (other items' shop photos, the
            default: with ``swap`` it trains the street photo vs other shop photos comparison a query is ranked by).
        easy_fraction: Share of easy negatives: 0.2 is the paper's easy:hard = 1:4, 0 means hard only.
        miner: A key of :data:`MINERS` to mine triplets online from class-balanced batches instead of the paper's
            triplets; ``None`` uses the paper's (with ``negatives``).
        margin: Triplet margin α on squared L2 distances (the paper's best: 4.0 without normalisation; with
            normalisation distances lie in 0..4, so use well under 1).
        swap: PML's distance swap: a triplet also counts as violated when the *positive* is closer to the negative
            than allowed. With shop anchors, street positives and shop negatives this adds the street photo vs
            other shop photos comparison, which is what a street-to-shop query is ranked by; without it, training on
            frozen features made simulated street-to-shop *worse* than the untrained baseline (see the benchmark).
        max_pairs: Pairs per epoch at most (a random subset each epoch); ``None`` uses all.
        eval_k: Cut-off of the per-epoch validation scores (``val_recall@K``, ``val_precision@K``).
        shared: Cross-domain training settings (:func:`train_cross_domain_embedder`); ``None`` for triplet
            training on one manifest (:func:`train_embedder`).
        train: Optimisation settings; ``batch_size`` counts pairs (with their negatives) or, with a miner or
            ``shared``, rows.
    """

    migrate_legacy = staticmethod(fold_legacy_freeze)

    backbone: BackboneConfig = field(default_factory=lambda: BackboneConfig(freeze=5))
    mode: str = "features"
    dim: int | None = 256
    hidden: int | None = None
    normalize: bool = True
    identity: str = "item_id"
    categories: list[str] = field(default_factory=lambda: ["articleType"])
    negatives_per_pair: int = 4
    negatives: str = "shop"
    easy_fraction: float = 0.2
    miner: str | None = None
    margin: float = 0.2
    swap: bool = True
    max_pairs: int | None = None
    eval_k: int = 10
    shared: SharedSpaceConfig | None = None
    train: TrainConfig = field(default_factory=_default_retrieval_train)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"unknown retrieval mode '{self.mode}'; use one of {MODES}")
        if self.negatives not in NEGATIVE_DOMAINS:
            raise ConfigError(f"unknown negatives '{self.negatives}'; use one of {NEGATIVE_DOMAINS}")
        if self.miner is not None and self.miner not in MINERS:
            raise ConfigError(f"unknown miner '{self.miner}'; use one of {sorted(MINERS)} or null")
        if self.margin <= 0:
            raise ConfigError(f"margin must be > 0, got {self.margin}")
        if self.dim is not None and self.dim < 1:
            raise ConfigError(f"dim must be >= 1 or null, got {self.dim}")
        if self.eval_k < 1:
            raise ConfigError(f"eval_k must be >= 1, got {self.eval_k}")


@register_model
class Embedder(TaskModel[np.ndarray]):
    """A trained (or untrained baseline) embedding model: images → vectors for a catalogue index.

    Args:
        config: How it was built.
        head: The embedding head on pooled backbone features.
        weights_id: Identity of the backbone weights whose features the head expects.
        backbone: The fine-tuned backbone (``finetune`` mode); ``None`` builds the pretrained one when needed.
        metrics_summary: Validation scores from training.
    """

    kind: ClassVar[str] = "embedder"
    config_class: ClassVar[type] = RetrievalConfig
    required_documents: ClassVar[tuple[str, ...]] = ("embedder",)
    config: RetrievalConfig
    head: EmbeddingHead

    def __init__(self, config: RetrievalConfig, head: EmbeddingHead, weights_id: str,
                 backbone: Backbone | None = None, metrics_summary: Mapping[str, Any] | None = None):
        super().__init__(config, head, backbone, weights_id, metrics_summary)
        self.weights_id: str = weights_id

    @classmethod
    def untrained(cls, backbone: BackboneConfig | None = None, normalize: bool = True) -> Embedder:
        """The baseline: pretrained (ImageNet) pooled features, no projection, L2-normalised by default."""
        config = RetrievalConfig(backbone=backbone or BackboneConfig(), dim=None, normalize=normalize)
        network = build_backbone(config.backbone)
        return cls(config, EmbeddingHead(network.num_features, None, None, normalize), network.weights_id, network)

    @property
    def dim(self) -> int:
        """Width of the embeddings."""
        return self.head.out_features

    @property
    def metric(self) -> str:
        """Catalogue index metric: ``ip`` (cosine) for normalised embeddings, else ``l2`` (squared L2, as trained)."""
        return "ip" if self.config.normalize else "l2"

    @property
    def model_id(self) -> str:
        """Backbone name, weights id and head fingerprint: what a catalogue index records and checks."""
        norm = "l2norm" if self.config.normalize else "raw"
        return f"{self.config.backbone.name}|{self.weights_id}|head-{state_fingerprint(self.head)}|{norm}"

    @property
    def output_names(self) -> list[str]:
        """``embeddings``."""
        return ["embeddings"]

    def activate(self, raw_outputs: Any) -> dict[str, torch.Tensor]:
        """The head's output is the embedding (normalised by the head when the config says so)."""
        return {"embeddings": raw_outputs.float()}

    def from_outputs(self, outputs: Mapping[str, np.ndarray], n_rows: int) -> np.ndarray:
        """Embeddings ``(n_rows, dim)``."""
        return np.asarray(outputs.get("embeddings", np.zeros((n_rows, self.dim), np.float32)), dtype=np.float32)

    def embed_features(self, features: np.ndarray) -> np.ndarray:
        """Embeddings ``(n, dim)`` of pooled backbone features ``(n, in_features)`` (:meth:`predict_features`)."""
        return self.predict_features(features)

    def embed(self, manifest: Manifest, show_progress: bool = False) -> np.ndarray:
        """Embeddings ``(len(manifest), dim)`` of a manifest's images (box crops when boxes exist; :meth:`predict`).

        Raises:
            DataError: Some images cannot be read (named).
        """
        return self.predict(manifest, show_progress=show_progress)

    def embed_paths(self, paths: Sequence[str | Path], runtime: str | None = None) -> np.ndarray:
        """Embeddings of query photos (see :meth:`embed_queries`).

        Raises:
            ImageError: A file is missing or not a decodable image.
        """
        return self.embed_queries(manifest_of_paths(paths, name="queries"), runtime)

    def embed_queries(self, queries: Manifest, runtime: str | None = None) -> np.ndarray:
        """Embeddings of query photos (cropped to their ``bbox_*`` boxes, if any), each first decoded so that a bad
        file is named with its problem.

        One-off queries bypass the feature cache: looking them up would load every cached vector, and storing them
        would fill the cache with photos never seen again.

        Raises:
            ImageError: A file is missing or not a decodable image.
        """
        for path in dict.fromkeys(queries.frame["path"]):
            decode_image(path)
        network: Any = self.backbone  # a Backbone's frozen Preprocess satisfies CompilableBackbone only at run time
        result = extract_features(queries, network, cache_dir=None, batch_size=self.config.backbone.batch_size,
                                  num_workers=0, show_progress=False, runtime=runtime or self.config.backbone.runtime)
        return self.embed_features(result.vectors)

    def documents(self) -> dict[str, Any]:
        """``embedder.json``: model id, weights id, widths and index metric (what a catalogue index checks)."""
        return {"embedder": {"model_id": self.model_id, "weights_id": self.weights_id,
                             "in_features": self.head.in_features, "dim": self.dim, "metric": self.metric}}

    @classmethod
    def from_saved(cls, path: Path, config: Any, state: Mapping[str, Any], documents: Mapping[str, Any],
                   backbone: Backbone | None, weights_id: str | None) -> Embedder:
        """The embedder of a saved directory (see :meth:`TaskModel.load`); its model id must match
        ``embedder.json``."""
        identity = documents["embedder"]
        if not isinstance(identity, dict) or not {"in_features", "weights_id", "model_id"} <= set(identity):
            raise ModelError(f"{path}/embedder.json must hold in_features, weights_id and model_id")
        head = EmbeddingHead(int(identity["in_features"]), config.dim, config.hidden, config.normalize)
        load_head(head, state, path, "config.json")
        embedder = cls(config, head, str(identity["weights_id"]), backbone, documents.get("metrics"))
        if embedder.model_id != identity["model_id"]:
            raise ModelError(f"{path}/model.pt does not produce model id {identity['model_id']!r} recorded in "
                             f"embedder.json (got {embedder.model_id!r}); the directory was modified")
        return embedder


# ---------------------------------------------------------------------------------------------------------- ranking
def rank_gallery(query_vectors: np.ndarray, gallery_vectors: np.ndarray, metric: str, depth: int,
                 exclude_self: bool = False) -> np.ndarray:
    """Gallery positions of each query's ``depth`` nearest items, best first, ``-1`` where the gallery runs out.

    Args:
        query_vectors: ``(m, d)`` query embeddings.
        gallery_vectors: ``(n, d)`` gallery embeddings.
        metric: ``ip`` or ``l2`` (see :class:`CatalogueIndex`).
        depth: Results per query.
        exclude_self: Query ``i`` is gallery item ``i`` and must not be returned (similar-item search).
    """
    ids = pd.DataFrame({"item_id": [str(i) for i in range(len(gallery_vectors))]})
    index = CatalogueIndex.build(gallery_vectors, ids, model_id="evaluation", metric=metric)
    hits = index.search(query_vectors, min(depth + int(exclude_self), len(index)))
    ranked = np.full((len(query_vectors), depth), -1, dtype=np.int64)
    for query, found in enumerate(hits):
        rows = [int(hit.item_id) for hit in found if not (exclude_self and int(hit.item_id) == query)][:depth]
        ranked[query, :len(rows)] = rows
    return ranked


def score_ranking(query_keys: Sequence[str] | np.ndarray, gallery_keys: Sequence[str] | np.ndarray,
                  ranked: np.ndarray, ks: Sequence[int], exclude_self: bool = False) -> dict[str, float]:
    """:func:`~fashionlens.metrics.retrieval_metrics` of a ranking, relevance = equal keys (empty keys: unknown).

    Queries with an empty key, or with no relevant gallery item (other than themselves when ``exclude_self``), are
    unanswerable and left out; ``queries`` reports how many were scored.
    """
    queries = np.array([k if k else None for k in query_keys], dtype=object)
    gallery = np.array([k if k else None for k in gallery_keys], dtype=object)
    results = np.asarray(np.where(ranked >= 0, gallery[np.maximum(ranked, 0)], None), dtype=object)
    counts = pd.Series(gallery).value_counts()
    n_relevant = np.array([int(counts.get(k, 0)) - int(exclude_self) if k is not None else 0 for k in queries])
    relevance = relevance_matrix(queries, results)
    scores = retrieval_metrics(relevance, np.maximum(n_relevant, 0), ks)
    scores["queries"] = float((n_relevant > 0).sum())
    return scores


@dataclass
class _Roles:
    """Which rows query which: street photos search shop photos when both occur, else items search each other."""

    queries: np.ndarray
    gallery: np.ndarray
    exclude_self: bool

    @classmethod
    def of(cls, domains: np.ndarray, rows: np.ndarray, gallery_rows: np.ndarray | None = None) -> _Roles:
        street, shop = rows[domains[rows] == "street"], rows[domains[rows] == "shop"]
        if len(street) and len(shop):
            gallery = gallery_rows[domains[gallery_rows] == "shop"] if gallery_rows is not None else shop
            return cls(street, gallery, exclude_self=False)
        return cls(rows, rows, exclude_self=True)

    def answerable(self, keys: np.ndarray) -> int:
        """Queries with at least one relevant gallery item (other than themselves)."""
        counts = pd.Series(keys[self.gallery]).value_counts()
        found = pd.Series(keys[self.queries]).map(counts).fillna(0).to_numpy() - int(self.exclude_self)
        return int(((found > 0) & (keys[self.queries] != "")).sum())


def _keys(manifest: Manifest, fields: Sequence[str]) -> np.ndarray:
    """Per-row relevance key: the fields' values joined (empty when any is missing)."""
    columns = [manifest.column(f).fillna("").astype(str).to_numpy() for f in fields]
    joined = ["|".join(values) if all(values) else "" for values in zip(*columns, strict=True)]
    return np.asarray(joined, dtype=object)


# ---------------------------------------------------------------------------------------------------------- training
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


def _as_is(item: Any) -> Any:
    return item


class TripletObjective:
    """PML's triplet margin loss on squared L2 distances, over given triplets or those an online miner picks."""

    def __init__(self, margin: float, miner: str | None = None, swap: bool = False):
        self.loss_function = losses.TripletMarginLoss(margin=margin, swap=swap, distance=_squared_l2())
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


def _validation(config: RetrievalConfig, embed_rows: Callable[[nn.Module], np.ndarray], roles: _Roles,
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
class _Setup:
    """What a training mode contributes: the model, its batch inputs, and how to embed the val rows."""

    model: nn.Module
    dataset: Dataset[Any]
    workers: int
    embed_val: Callable[[nn.Module], np.ndarray]
    weights_id: str


def _features_setup(manifest: Manifest, config: RetrievalConfig, features: np.ndarray | None, val_rows: np.ndarray,
                    device: torch.device, show_progress: bool) -> _Setup:
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
    return _Setup(head, _FeatureBatches(features), 0, embed_val, network.weights_id)


def _finetune_setup(manifest: Manifest, config: RetrievalConfig, val_rows: np.ndarray,
                    device: torch.device) -> _Setup:
    """``finetune`` mode: backbone (first stages frozen) and head on augmented images; val re-embedded each epoch."""
    seed_everything(config.train.seed)
    network = build_backbone(config.backbone, finetune=True)
    model = TaskNetwork(network, EmbeddingHead(network.num_features, config.dim, config.hidden, config.normalize))
    workers = default_workers() if config.backbone.num_workers is None else config.backbone.num_workers
    val_set = ManifestImageDataset(manifest.subset(np.isin(np.arange(len(manifest)), val_rows)),
                                   eval_transform(network.preprocess))
    val_loader = DataLoader(val_set, batch_size=config.backbone.batch_size, num_workers=workers,
                            collate_fn=collate_skipping)

    def embed_val(net: nn.Module) -> np.ndarray:
        return forward_batches(net, val_loader, len(val_set), device)[0][SINGLE_OUTPUT]

    return _Setup(model, _ImageBatches(manifest, train_transform(network.preprocess)), workers, embed_val,
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
    roles = _Roles.of(domain, rows["val"])
    keys = _keys(manifest, [config.identity])
    if not roles.answerable(keys):
        raise DataError(f"no val row of manifest '{manifest.name}' has a match (same '{config.identity}') among the "
                        f"val gallery, so validation cannot score; give the val split more items per identity")
    device = resolve_device(config.train.device)
    val_rows = np.union1d(roles.queries, roles.gallery)
    setup = (_features_setup(manifest, config, features, val_rows, device, show_progress) if config.mode == "features"
             else _finetune_setup(manifest, config, val_rows, device))
    loader = DataLoader(setup.dataset, sampler=sampler, batch_size=None, num_workers=setup.workers,
                        collate_fn=_as_is)
    trainer = Trainer(setup.model, config.train, TripletObjective(config.margin, config.miner, config.swap).loss,
                      _validation(config, setup.embed_val, roles, keys), run_dir=_run_dir(out_dir), console=console,
                      show_progress=show_progress)
    result = trainer.fit(loader)
    return _trained_embedder(trainer.model, config, setup, result, out_dir, console)


def _run_dir(out_dir: str | Path | None) -> Path | None:
    return Path(out_dir).with_name(Path(out_dir).name + ".run") if out_dir else None


def _trained_embedder(trained: nn.Module, config: RetrievalConfig, setup: _Setup, result: TrainResult,
                      out_dir: str | Path | None, console: Console) -> Embedder:
    """The :class:`Embedder` of a trained head (``features``) or network (``finetune``), saved when asked."""
    trained = trained.cpu().eval()
    best = next((h for h in result.history if h["epoch"] == result.best_epoch), {})
    summary = {**{k: v for k, v in best.items() if k.startswith("val_")}, "best_epoch": result.best_epoch,
               "epochs_run": len(result.history), "seconds": result.seconds}
    if isinstance(trained, TaskNetwork):
        backbone: Backbone = trained.backbone  # type: ignore[assignment]
        backbone.weights_id = state_fingerprint(backbone)
        embedder = Embedder(config, trained.head, backbone.weights_id, backbone, summary)  # type: ignore[arg-type]
    else:
        embedder = Embedder(config, trained, setup.weights_id, None, summary)  # type: ignore[arg-type]
    if out_dir:
        embedder.save(out_dir)
        console.print(f"saved embedder to {out_dir}")
    return embedder


# ------------------------------------------------------------------------------------------------------ cross-domain
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
        classes: Class names per head (:attr:`~fashionlens.tasks.shared_space.SharedLabels.classes`).
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
    :mod:`fashionlens.tasks.shared_space`) with ``config.shared``'s PML losses. Each epoch is scored on the street
    photos of ``val`` querying the whole catalogue (as the demo's index) and on the catalogue's ``val`` items
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
    setup = (_features_setup(combined, config, features, val_rows, device, show_progress)
             if config.mode == "features" else _finetune_setup(combined, config, val_rows, device))
    head = next(m for m in setup.model.modules() if isinstance(m, EmbeddingHead))
    objective = SharedSpaceObjective(config.shared, labels.classes, head.out_features, config.margin, config.miner)
    loader = DataLoader(setup.dataset, sampler=sampler, batch_size=None, num_workers=setup.workers,
                        collate_fn=_as_is)
    validation = _shared_validation(config, setup.embed_val, gallery, queries, relevance, similar,
                                    _keys(combined, [mapping.catalogue_category]),
                                    _keys(combined, [mapping.catalogue_category, mapping.catalogue_colour]))
    trainer = Trainer(_WithProxies(setup.model, objective.head_losses), config.train, objective.loss, validation,
                      run_dir=_run_dir(out_dir), console=console, show_progress=show_progress)
    result = trainer.fit(loader)
    trained: nn.Module = trainer.model.network  # type: ignore[assignment]
    return _trained_embedder(trained, config, setup, result, out_dir, console)


# ---------------------------------------------------------------------------------------------------------- catalogue
def catalogue_metadata(manifest: Manifest) -> pd.DataFrame:
    """One index row per image: a unique ``item_id`` key and the filterable fields.

    The key is the row's ``item_id`` (the file name stem when empty); an item with several images gets
    ``<item_id>#<n>`` keys, and ``product_id`` always holds the plain ``item_id``. Class heads and ``meta:`` fields
    become fields by their bare names (``articleType``, ``gender``...), as does ``path``.
    """
    frame = manifest.frame
    product = frame["item_id"].where(frame["item_id"] != "", frame["path"].map(lambda p: Path(p).stem))
    occurrence = product.groupby(product).cumcount()
    repeated = product.map(product.value_counts()) > 1
    key = product.where(~repeated, product + "#" + occurrence.astype(str))
    metadata = pd.DataFrame({"item_id": key, "product_id": product, "path": frame["path"]})
    for column in frame.columns:
        name = str(column)
        for prefix in (CLASS_PREFIX, META_PREFIX):
            bare = name.removeprefix(prefix)
            if name.startswith(prefix) and bare not in metadata.columns:
                metadata[bare] = frame[column].astype("string")
    return metadata


def build_catalogue_index(embedder: Embedder, manifest: Manifest, out_dir: str | Path | None = None,
                          kind: str = "flat", show_progress: bool = False,
                          models: Mapping[str, str | Path] | None = None, backend: str = "faiss",
                          storage: Mapping[str, str] | None = None, **params: int) -> CatalogueIndex:
    """Embed a catalogue and index it (saved atomically to ``out_dir`` when given).

    Args:
        embedder: The model whose vectors go in; its ``model_id`` is recorded so queries from another model fail.
        manifest: Catalogue images (shop photos) with their metadata (see :func:`catalogue_metadata`).
        out_dir: Index directory to write.
        kind: FAISS index kind (see :mod:`fashionlens.index.kinds`).
        show_progress: Draw a progress bar while extracting features.
        models: Model directories to record in the index by role: ``embedder`` (the saved ``embedder``, so that
            the index alone is enough to search it) and ``tagger`` (for attribute-aware search).
        backend: ``faiss`` (in-process, saved as files) or ``milvus`` (a Milvus collection; see
            :class:`~fashionlens.index.CatalogueIndex`).
        storage: For ``milvus``: ``uri`` (a Milvus Lite ``.db`` file or a server URL; default: a Milvus Lite
            database inside ``out_dir``) and ``collection``.
        **params: Index parameters for ``kind``.
    """
    vectors = embedder.embed(manifest, show_progress=show_progress)
    return index_catalogue(vectors, embedder, manifest, out_dir, kind, models, backend=backend, storage=storage,
                           **params)


def index_catalogue(vectors: np.ndarray, embedder: Embedder, manifest: Manifest, out_dir: str | Path | None = None,
                    kind: str = "flat", models: Mapping[str, str | Path] | None = None, backend: str = "faiss",
                    storage: Mapping[str, str] | None = None, **params: int) -> CatalogueIndex:
    """Index a catalogue's precomputed ``embedder`` vectors (rows of ``manifest``), saved to ``out_dir`` when given.

    The one place an index gets its metadata, model id and model record (see :func:`build_catalogue_index`),
    whether the vectors were just computed or read from a batch job's shards.
    """
    index = CatalogueIndex.build(vectors, catalogue_metadata(manifest), embedder.model_id, embedder.metric, kind,
                                 backend=backend, storage=dict(storage or {}), **params)
    for role, directory in (models or {}).items():
        index.record_model(role, directory)
    if out_dir is not None:
        index.save(out_dir)
    return index


def open_index(directory: str | Path, embedder: Embedder | None = None) -> CatalogueIndex:
    """Load a catalogue index, checking it was built by ``embedder`` when given.

    Raises:
        CatalogueIndexError: Missing or corrupt index, or one built by another embedding model / dimension.
    """
    if embedder is None:
        return CatalogueIndex.load(directory)
    return CatalogueIndex.load(directory, expected_model_id=embedder.model_id, expected_dim=embedder.dim)


def check_embedder(index: CatalogueIndex, embedder: Embedder) -> None:
    """Check ``index`` was built by ``embedder``.

    Raises:
        CatalogueIndexError: Another model built it; the message names the fix (the recorded embedder, or
            ``--model DIR``).
    """
    if index.model_id != embedder.model_id:
        raise CatalogueIndexError(f"catalogue index was built with embedding model {index.model_id!r}, not "
                                  f"{embedder.model_id!r}; {model_fix(index.models.get('embedder'))}")


def index_embedder(index: CatalogueIndex, model: str | Path | None = None,
                   fallback: Callable[[], Embedder] | None = None) -> Embedder:
    """The embedder to search ``index`` with, checked against it.

    Args:
        index: The catalogue index.
        model: An embedder directory (wins over the index's record).
        fallback: Makes the embedder to use when neither ``model`` nor a recorded one exists (e.g. the untrained
            baseline); ``None``: an error naming the fix.

    Raises:
        ModelError: The recorded or given embedder cannot be loaded.
        CatalogueIndexError: It did not build the index, or no embedder is known (the message names the fix).
    """
    recorded = index.models.get("embedder")
    if model is not None:
        embedder = Embedder.load(model)
    elif recorded is not None:
        try:
            embedder = Embedder.load(recorded)
        except ModelError as error:
            raise ModelError(f"the catalogue index records its embedder at {recorded}, which cannot be loaded "
                             f"({error}); pass the embedder that built it (--model DIR)") from error
    elif fallback is not None:
        embedder = fallback()
    else:
        raise CatalogueIndexError(f"the catalogue index (embedding model {index.model_id!r}) records no embedder; "
                                  f"{model_fix(None)}")
    check_embedder(index, embedder)
    return embedder


def add_to_index(index: CatalogueIndex, embedder: Embedder, manifest: Manifest) -> None:
    """Embed and add catalogue images (their keys must be new; see :func:`catalogue_metadata`).

    Raises:
        CatalogueIndexError: The index comes from another model, or a key is already in it.
    """
    check_embedder(index, embedder)
    index.add(embedder.embed(manifest), catalogue_metadata(manifest))


def _check_k(k: int, available: int, what: str) -> None:
    if k > available:
        raise CatalogueIndexError(f"k={k} is larger than the {available} {what} in the catalogue index; "
                                  f"ask for k <= {available}")


def search_images(index: CatalogueIndex, embedder: Embedder, paths: Sequence[str | Path], k: int = 10,
                  filters: Filters | None = None, crop: str | CropSpec | Sequence[QueryCrop] = "auto",
                  localiser: GarmentLocaliser | None = None, views: Sequence[str] = DEFAULT_VIEWS,
                  fusion: str = "mean") -> list[list[SearchHit]]:
    """Top-``k`` catalogue items for each query photo (a batch of images is one call).

    Args:
        index: The catalogue index.
        embedder: The model that built it.
        paths: Query photos.
        k: Results per photo.
        filters: Only items with these field values.
        crop: ``auto`` (search with the garment the ``localiser`` finds; the whole photo when it finds none),
            ``none``, ``x1,y1,x2,y2`` (pixels), or crops already planned with
            :func:`~fashionlens.tasks.localised.plan_crops` (one per photo; how callers learn the boxes used).
        localiser: Garment localiser for ``auto`` (default: the process's shared one).
        views: Parts of the crop searched with, their hits fused (see :mod:`fashionlens.tasks.localised`).
        fusion: ``mean`` or ``rrf``.

    Raises:
        ImageError: A query image cannot be decoded (named).
        ConfigError: A malformed or empty crop spec, invalid views or fusion.
        DataError: A given crop box outside a photo.
        CatalogueIndexError: ``k`` exceeds the catalogue, an unknown filter field, or a model mismatch.
    """
    _check_k(k, len(index), "items")
    check_embedder(index, embedder)
    crops = (list(crop) if not isinstance(crop, (str, CropSpec)) else plan_crops(paths, crop, localiser))
    return search_views(index, embedder.embed_queries, paths, crops, k, filters, views, fusion)


def similar_items(index: CatalogueIndex, item_id: str, k: int = 10,
                  filters: Filters | None = None) -> list[SearchHit]:
    """The ``k`` catalogue items most similar to item ``item_id`` (never itself); no model needed.

    Raises:
        CatalogueIndexError: Unknown ``item_id``, ``k`` exceeds the other items, or an unknown filter field.
    """
    hits = index.search_by_id(item_id, k, filters)  # first, so that an unknown id is reported as such
    _check_k(k, len(index) - 1, "other items")
    return hits


# ---------------------------------------------------------------------------------------------------------- evaluation
def _grid(manifest: Manifest, roles: _Roles, ranked: np.ndarray, keys: np.ndarray, path: str | Path, title: str,
          n_queries: int, seed: int) -> Path:
    chosen = np.sort(np.random.default_rng(seed).permutation(len(roles.queries))[:n_queries])
    paths = manifest.frame["path"].to_numpy()
    results = [[roles.gallery[p] for p in ranked[q] if p >= 0] for q in chosen]
    return save_results_grid(
        [paths[roles.queries[q]] for q in chosen], [[paths[r] for r in rows] for rows in results],
        [[bool(keys[r]) and keys[r] == keys[roles.queries[q]] for r in rows] for q, rows in zip(chosen, results,
                                                                                                 strict=True)],
        path, title=title)


def _is_simulated(manifest: Manifest, rows: np.ndarray) -> bool:
    return SIMULATED_FIELD in manifest.frame.columns and bool(
        (manifest.frame[SIMULATED_FIELD].iloc[rows].astype(str) == "true").any())


def evaluate_street_to_shop(embedder: Embedder, manifest: Manifest, split: str = "test",
                            ks: Sequence[int] = (1, 10, 20), gallery: str = "split",
                            grid_path: str | Path | None = None, grid_queries: int = 8,
                            show_progress: bool = False) -> dict[str, float]:
    """Street photos of ``split`` query shop photos; relevance = same ``item_id``.

    Args:
        embedder: The model to score.
        manifest: Shop and street rows sharing ``item_id``.
        split: Split whose street photos are the queries.
        ks: Cut-offs of ``recall@K`` (hit rate = top-K accuracy) and ``precision@K``.
        gallery: ``split``: the shop photos of the same split (held-back products only); ``all``: every shop photo
            in the manifest (the whole catalogue, a harder test).
        grid_path: Also write a PNG of ``grid_queries`` queries and their top-10, true matches outlined.
        grid_queries: Queries in the grid.
        show_progress: Draw a progress bar while extracting features.

    Returns:
        ``recall@K``, ``precision@K``, ``mAP`` and ``queries``; ``simulated`` is 1.0 when the queries are simulated
        street views (report those as simulated street-to-shop).
    """
    if gallery not in ("split", "all"):
        raise ConfigError(f"gallery must be 'split' or 'all', got '{gallery}'")
    subset_rows = np.flatnonzero(manifest.frame["split"].to_numpy() == split)
    domain = manifest.frame["domain"].to_numpy()
    gallery_rows = np.arange(len(manifest)) if gallery == "all" else subset_rows
    roles = _Roles.of(domain, subset_rows, gallery_rows)
    if roles.exclude_self:
        raise DataError(f"split '{split}' of manifest '{manifest.name}' needs both street and shop photos")
    used = np.union1d(roles.queries, roles.gallery)
    vectors = embedder.embed(manifest.subset(np.isin(np.arange(len(manifest)), used)), show_progress=show_progress)
    query_vectors, gallery_vectors = vectors[np.searchsorted(used, roles.queries)], vectors[np.searchsorted(
        used, roles.gallery)]
    ranked = rank_gallery(query_vectors, gallery_vectors, embedder.metric, max(*ks, 10))
    keys = _keys(manifest, ["item_id"])
    scores = score_ranking(keys[roles.queries], keys[roles.gallery], ranked, ks)
    simulated = _is_simulated(manifest, roles.queries)
    scores["simulated"] = float(simulated)
    if grid_path is not None:
        kind = "SIMULATED street→shop" if simulated else "street→shop"
        _grid(manifest, roles, ranked[:, :10], keys, grid_path, f"{kind} ({split} split, gallery: {gallery}); "
              f"green = the query's item", grid_queries, embedder.config.train.seed)
    return scores


def evaluate_similar_items(embedder: Embedder, manifest: Manifest, split: str = "test", k: int = 10,
                           fields: Sequence[str] = ("articleType",),
                           strict_fields: Sequence[str] | None = ("articleType", "baseColour"),
                           grid_path: str | Path | None = None, grid_queries: int = 8,
                           show_progress: bool = False) -> dict[str, float]:
    """Each catalogue item of ``split`` queries the others; relevance = same ``fields`` (e.g. articleType).

    Only the split's items form the gallery (the val/test products, never seen in training), and an item is never
    its own result. Items whose key is missing, or unique in the split, cannot be answered and are left out.

    Returns:
        ``precision@k`` (the headline), ``recall@k`` (hit rate), ``mAP``, ``queries``, and ``precision@k_strict``
        with relevance = same ``strict_fields`` (e.g. articleType and baseColour) when given (NaN when no item of
        the split has a strict match).
    """
    rows = np.flatnonzero(manifest.frame["split"].to_numpy() == split)
    if len(rows) < 2:
        raise DataError(f"split '{split}' of manifest '{manifest.name}' has {len(rows)} item(s); need at least 2")
    if k > len(rows) - 1:
        raise ConfigError(f"k={k} is larger than the {len(rows) - 1} other items of split '{split}'")
    vectors = embedder.embed(manifest.subset(np.isin(np.arange(len(manifest)), rows)), show_progress=show_progress)
    ranked = rank_gallery(vectors, vectors, embedder.metric, k, exclude_self=True)
    roles = _Roles(rows, rows, exclude_self=True)
    keys = _keys(manifest, fields)
    scores = score_ranking(keys[rows], keys[rows], ranked, [k], exclude_self=True)
    if strict_fields:
        strict = _keys(manifest, strict_fields)
        scores[f"precision@{k}_strict"] = (score_ranking(strict[rows], strict[rows], ranked, [k], exclude_self=True)
                                           [f"precision@{k}"] if roles.answerable(strict) else float("nan"))
    if grid_path is not None:
        _grid(manifest, roles, ranked[:, :10], keys, grid_path,
              f"similar items ({split} split); green = same {' + '.join(fields)}", grid_queries,
              embedder.config.train.seed)
    return scores
