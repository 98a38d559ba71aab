"""How a hierarchy classifier is built and trained: :class:`HierarchyConfig` and its ``taxonomy:`` section."""

from __future__ import annotations

from dataclasses import dataclass, field

from fashionlens.engine import TrainConfig
from fashionlens.errors import ConfigError
from fashionlens.models.backbones import BackboneConfig
from fashionlens.tasks.common.config import fold_legacy_freeze
from fashionlens.tasks.hierarchy.resolve import CONFLICT_POLICIES, RARE_POLICIES, ConflictPolicy, RarePolicy

VARIANTS = ("flat", "hmcn", "hmcn_mtl")
MODES = ("features", "finetune")
DECODINGS = ("consistent", "greedy")
DEFAULT_LEVELS = ("masterCategory", "subCategory", "articleType")
"""The levels of a taxonomy read from the manifest when ``taxonomy.levels`` is unset: Fashion Product Images'
label columns (the data the shipped hierarchy configs train on)."""


def _default_hierarchy_train() -> TrainConfig:
    return TrainConfig(epochs=60, lr=1e-3, weight_decay=1e-4, optimizer="adamw", batch_size=128, monitor="val_top1",
                       mode="max", plateau_patience=3, early_stop_patience=10)


@dataclass
class TaxonomyConfig:
    """Where the taxonomy comes from and how its label problems are resolved (see
    :mod:`~fashionlens.tasks.hierarchy.taxonomy`).

    Attributes:
        levels: Manifest class heads, top level first. ``None``: the YAML's levels when ``file`` is set, else
            Fashion Product Images' masterCategory > subCategory > articleType.
        file: A user-written YAML tree (``levels`` + ``tree``); only its leaf level must be a manifest column.
        conflicts: A child under two parents: ``majority``, ``split`` or ``error``.
        min_count: Classes with fewer training rows than this are handled by ``rare`` (0 keeps all).
        rare: ``other`` (merge into an "Other (<parent>)" class, rows stay scored) or ``drop`` (rows left out of
            training and scoring, and counted).
    """

    levels: list[str] | None = None
    file: str | None = None
    conflicts: ConflictPolicy = "majority"
    min_count: int = 5
    rare: RarePolicy = "other"

    def __post_init__(self) -> None:
        if self.conflicts not in CONFLICT_POLICIES:
            raise ConfigError(f"unknown taxonomy conflicts policy '{self.conflicts}'; use one of {CONFLICT_POLICIES}")
        if self.rare not in RARE_POLICIES:
            raise ConfigError(f"unknown taxonomy rare policy '{self.rare}'; use one of {RARE_POLICIES}")
        if self.min_count < 0:
            raise ConfigError(f"taxonomy min_count must be >= 0, got {self.min_count}")


@dataclass
class HierarchyConfig:
    """How a hierarchy classifier is built and trained (YAML-loadable; shipped configs in ``fashionlens/configs``).

    ``backbone.freeze`` says what stays frozen in ``finetune`` mode; ``features`` mode trains on frozen features.
    """

    migrate_legacy = staticmethod(fold_legacy_freeze)

    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    taxonomy: TaxonomyConfig = field(default_factory=TaxonomyConfig)
    variant: str = "hmcn_mtl"
    hidden: int = 512
    dropout: float = 0.5
    beta: float = 0.7
    decoding: str = "consistent"
    mode: str = "features"
    init_head: str | None = None
    train: TrainConfig = field(default_factory=_default_hierarchy_train)

    def __post_init__(self) -> None:
        if self.init_head is not None and self.mode != "finetune":
            raise ConfigError("init_head only applies to mode 'finetune' (it seeds the head that is fine-tuned)")
        if self.variant not in VARIANTS:
            raise ConfigError(f"unknown hierarchy variant '{self.variant}'; use one of {VARIANTS}")
        if self.mode not in MODES:
            raise ConfigError(f"unknown hierarchy mode '{self.mode}'; use one of {MODES}")
        if self.decoding not in DECODINGS:
            raise ConfigError(f"unknown decoding '{self.decoding}'; use one of {DECODINGS}")
        if not 0.0 <= self.beta <= 1.0:
            raise ConfigError(f"beta must lie in [0, 1], got {self.beta}")

    @property
    def loss_weighting(self) -> str:
        """How HMCN-F's local and global losses are combined: ``uncertainty`` for ``hmcn_mtl``, else ``sum``."""
        return "uncertainty" if self.variant == "hmcn_mtl" else "sum"
