"""Hierarchy configs (``tasks/hierarchy/config.py``)."""

from __future__ import annotations

from fashionlens.data.readers.fashion_product import HIERARCHY
from fashionlens.tasks.hierarchy.config import DEFAULT_LEVELS


def test_default_levels_are_the_fashion_product_label_columns() -> None:
    # the task keeps its own default (a task does not read a dataset reader's constants); the two must not drift
    assert DEFAULT_LEVELS == HIERARCHY
