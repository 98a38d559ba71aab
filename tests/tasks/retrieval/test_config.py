"""Retrieval configs: the shipped ones load, invalid ones are refused."""

from __future__ import annotations

import pytest

from fashionlens.config import load_config
from fashionlens.errors import ConfigError
from fashionlens.tasks.retrieval import (
    RetrievalConfig,
)


def test_example_config_loads() -> None:
    config = load_config(RetrievalConfig, "retrieval_triplet")
    assert config.identity == "item_id" and config.easy_fraction == 0.2 and config.negatives_per_pair == 4
    assert config.train.optimizer == "sgd" and config.train.momentum == 0.9 and config.train.scheduler == "step"
    assert config.negatives == "shop" and config.shared is None
    shared = load_config(RetrievalConfig, "retrieval_street2shop")
    assert shared.shared is not None and shared.shared.loss == "proxy_anchor" and shared.mode == "features"


@pytest.mark.parametrize("bad", [{"mode": "siamese"}, {"miner": "random"}, {"margin": 0.0}, {"dim": 0}])
def test_invalid_configs_are_rejected(bad: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        RetrievalConfig(**bad)  # type: ignore[arg-type]
