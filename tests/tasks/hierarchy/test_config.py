"""Hierarchy configs (``tasks/hierarchy/config.py``): the shipped example, bad values, the default levels."""

from __future__ import annotations

import pytest

from fashionlens.config import SHIPPED_CONFIGS, from_dict, load_config
from fashionlens.data.readers.fashion_product import HIERARCHY
from fashionlens.errors import ConfigError
from fashionlens.tasks.hierarchy.config import DEFAULT_LEVELS, HierarchyConfig


def test_default_levels_are_the_fashion_product_label_columns() -> None:
    # the task keeps its own default (a task does not read a dataset reader's constants); the two must not drift
    assert DEFAULT_LEVELS == HIERARCHY


def test_example_config_loads_and_bad_values_are_rejected() -> None:
    config = load_config(HierarchyConfig, SHIPPED_CONFIGS / "hierarchy_fashion_products.yaml")
    assert config.variant == "hmcn_mtl" and config.loss_weighting == "uncertainty"
    assert HierarchyConfig(variant="hmcn").loss_weighting == "sum"
    with pytest.raises(ConfigError, match="unknown hierarchy variant 'hmcnx'"):
        from_dict(HierarchyConfig, {"variant": "hmcnx"})
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['minimum'\] in config.taxonomy"):
        from_dict(HierarchyConfig, {"taxonomy": {"minimum": 3}})
    with pytest.raises(ConfigError, match="rare policy 'merge'"):
        from_dict(HierarchyConfig, {"taxonomy": {"rare": "merge"}})
