"""The standard splits of the two shared datasets: seeded and stratified, the same in ``make demo``, ``make models``
(the shipped models' recorded test figures) and the benchmarks, so their figures are on the same test photos."""

from __future__ import annotations

from pathlib import Path

from fashionlens.data.readers import read_clothing_attributes, read_fashion_product_images
from fashionlens.data.records import Manifest
from fashionlens.data.splits import split_manifest
from fashionlens.errors import DataError

PRODUCTS = "fashion-product-images"
"""Folder of Fashion Product Images under the shared data folder."""
CLOTHING = "clothing-attributes"
"""Folder of Clothing Attributes under the shared data folder."""


def dataset_root(data: Path, name: str) -> Path:
    """The folder of dataset ``name`` under the shared data folder ``data``.

    Raises:
        DataError: The folder is missing.
    """
    root = data / name
    if not root.is_dir():
        raise DataError(f"dataset folder not found: {root} (pass --data pointing at the shared data)")
    return root


def products_split(data: Path, seed: int = 0) -> Manifest:
    """Fashion Product Images under ``data``, split with ``seed`` stratified on articleType.

    Raises:
        DataError: The dataset folder is missing.
    """
    return split_manifest(read_fashion_product_images(dataset_root(data, PRODUCTS)), seed=seed,
                          stratify="articleType")


def clothing_split(data: Path, seed: int = 0) -> Manifest:
    """Clothing Attributes under ``data``, split with ``seed`` stratified on category.

    Raises:
        DataError: The dataset folder is missing.
    """
    return split_manifest(read_clothing_attributes(dataset_root(data, CLOTHING)), seed=seed, stratify="category")
