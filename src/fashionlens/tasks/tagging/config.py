"""How a tagger is built and trained: :class:`TaggingConfig` and its ``thresholds:`` section."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fashionlens.engine import TrainConfig
from fashionlens.errors import ConfigError
from fashionlens.losses import DEFAULT_MAX_WEIGHT
from fashionlens.models.backbones import BackboneConfig
from fashionlens.tasks.common.config import fold_legacy_freeze
from fashionlens.tasks.tagging.thresholds import AVERAGES

MODES = ("features", "finetune", "per_label")
LOSSES = ("bce", "weighted_bce")
THRESHOLD_METHODS = ("auto", "oof", "val", "plateau", "fixed")
EPOCH_SELECTIONS = ("best", "per_label")
DECISION_BETA = 1.0
"""β of the threshold set :meth:`Tagger.decide` uses by default: F1, a balance a person reading the tags expects."""


@dataclass
class ThresholdConfig:
    """How per-label decision thresholds are chosen (the ``thresholds:`` section of a tagging config).

    Attributes:
        method: ``oof`` -- fit ``folds`` heads on folds of train+val and pick each threshold on the pooled
            out-of-fold predictions, then refit the shipped head on all of train+val (frozen-feature ``features``
            mode only); ``val`` -- the exact F-beta optimum on the validation split; ``plateau`` -- the centre of the
            validation F-beta plateau within one standard error; ``fixed`` -- 0.5 for every label; ``auto`` --
            ``oof`` in ``features`` mode, ``plateau`` otherwise.
        folds: Folds of the ``oof`` method.
        average: ``macro`` maximises each label's own F-beta; ``micro`` the F-beta pooled over labels
            (iMaterialist's leaderboard metric).
        shrink: Pull each threshold this fraction of the way towards 0.5 (0 = not at all).
    """

    method: str = "auto"
    folds: int = 5
    average: str = "macro"
    shrink: float = 0.0

    def __post_init__(self) -> None:
        if self.method not in THRESHOLD_METHODS:
            raise ConfigError(f"unknown thresholds.method '{self.method}'; use one of {THRESHOLD_METHODS}")
        if self.folds < 2:
            raise ConfigError(f"thresholds.folds must be >= 2, got {self.folds}")
        if self.average not in AVERAGES:
            raise ConfigError(f"unknown thresholds.average '{self.average}'; use one of {AVERAGES}")
        if not 0.0 <= self.shrink <= 1.0:
            raise ConfigError(f"thresholds.shrink must lie in [0, 1], got {self.shrink}")

    def resolved(self, mode: str) -> str:
        """The method actually used in training ``mode`` (``auto`` resolved)."""
        if self.method == "auto":
            return "oof" if mode == "features" else "plateau"
        return self.method


def _default_tagging_train() -> TrainConfig:
    return TrainConfig(epochs=40, lr=1e-3, monitor="val_map", mode="max", early_stop_patience=6, batch_size=128)


@dataclass
class TaggingConfig:
    """How a tagger is built and trained (YAML-loadable; shipped configs in ``fashionlens/configs``).

    ``backbone.freeze`` says what stays frozen in ``finetune`` mode; the other modes train on frozen features.
    """

    migrate_legacy = staticmethod(fold_legacy_freeze)

    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    tags: list[str] | None = None
    heads: list[str] | None = None
    expand_heads: list[str] = field(default_factory=list)
    min_class_count: int = 2
    loss: str = "weighted_bce"
    positive_weight: float = 1.0
    max_weight: float | None = DEFAULT_MAX_WEIGHT
    label_importance: dict[str, float] = field(default_factory=dict)
    hidden: int = 1024
    dropout: float = 0.5
    mode: str = "features"
    beta: float = 2.0
    thresholds: ThresholdConfig = field(default_factory=ThresholdConfig)
    positive_names: dict[str, str] = field(default_factory=dict)
    select_epoch: str = "best"
    train: TrainConfig = field(default_factory=_default_tagging_train)
    per_label_train: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"unknown tagging mode '{self.mode}'; use one of {MODES}")
        if self.loss not in LOSSES:
            raise ConfigError(f"unknown tagging loss '{self.loss}'; use one of {LOSSES}")
        if self.beta <= 0:
            raise ConfigError(f"beta must be > 0, got {self.beta}")
        if not self.positive_weight > 0:
            raise ConfigError(f"positive_weight must be > 0, got {self.positive_weight}")
        if self.max_weight is not None and not self.max_weight > 0:
            raise ConfigError(f"max_weight must be > 0 (or null for no cap), got {self.max_weight}")
        bad = {k: v for k, v in self.label_importance.items() if not (isinstance(v, int | float) and v >= 0)}
        if bad:
            raise ConfigError(f"label_importance values must be non-negative numbers, got {bad}")
        if self.select_epoch not in EPOCH_SELECTIONS:
            raise ConfigError(f"unknown select_epoch '{self.select_epoch}'; use one of {EPOCH_SELECTIONS}")
        if self.select_epoch == "per_label" and (self.mode == "per_label"
                                                 or self.thresholds.resolved(self.mode) == "oof"):
            raise ConfigError("select_epoch 'per_label' keeps head snapshots of one joint run: it needs mode "
                              "'features' or 'finetune' and a thresholds.method chosen on val (val, plateau or fixed), "
                              "not oof")
        if self.thresholds.resolved(self.mode) == "oof" and self.mode != "features":
            raise ConfigError(f"thresholds.method 'oof' refits the head on {self.thresholds.folds} folds and is "
                              f"offered for mode 'features' only; use val, plateau or fixed in mode '{self.mode}'")
