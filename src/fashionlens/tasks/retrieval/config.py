"""How an embedder is built and trained: :class:`RetrievalConfig`, :class:`SharedSpaceConfig`, and the
PML miners and proxy losses they select by name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from pytorch_metric_learning import distances, losses, miners

from fashionlens.engine import TrainConfig
from fashionlens.errors import ConfigError
from fashionlens.models.backbones import BackboneConfig
from fashionlens.tasks.common import fold_legacy_freeze
from fashionlens.tasks.retrieval.shared_labels import HEADS
from fashionlens.tasks.retrieval.triplets import (
    NEGATIVE_DOMAINS,
)

MODES = ("features", "finetune")


def squared_l2() -> distances.LpDistance:
    """The paper's distance: squared Euclidean, on the embeddings as the model outputs them."""
    return distances.LpDistance(normalize_embeddings=False, p=2, power=2)


MINERS: dict[str, Callable[[float], miners.BaseMiner]] = {
    "semihard": lambda margin: miners.TripletMarginMiner(margin, "semihard", distance=squared_l2()),
    "hard": lambda margin: miners.TripletMarginMiner(margin, "hard", distance=squared_l2()),
    "all": lambda margin: miners.TripletMarginMiner(margin, "all", distance=squared_l2()),
    "batch_hard": lambda margin: miners.BatchHardMiner(distance=squared_l2()),
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
    (:mod:`fashionlens.tasks.retrieval.shared_labels`; see :func:`train_cross_domain_embedder`).

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
        categories: Fields whose equality makes a negative hard, finest first (see
            :mod:`fashionlens.tasks.retrieval.triplets`).
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

