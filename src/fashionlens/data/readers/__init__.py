"""Dataset readers: each turns an official dataset layout into a :class:`~fashionlens.data.records.Manifest`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fashionlens.data.readers.clothing_attributes import read_clothing_attributes
from fashionlens.data.readers.deepfashion import (
    read_deepfashion,
    read_deepfashion_consumer2shop,
    read_deepfashion_inshop,
)
from fashionlens.data.readers.deepfashion2 import read_deepfashion2
from fashionlens.data.readers.fashion_product import read_fashion_product_images
from fashionlens.data.readers.generic import read_generic
from fashionlens.data.readers.imaterialist import read_imaterialist, read_imaterialist_merged
from fashionlens.data.readers.jd_style import read_jd_style
from fashionlens.data.records import Manifest

Reader = Callable[[str | Path], Manifest]

#: Registry of dataset layouts by name (used by ``fashionlens data build``).
READERS: dict[str, Reader] = {
    "fashion-product-images": read_fashion_product_images,
    "clothing-attributes": read_clothing_attributes,
    "generic": read_generic,
    "deepfashion": read_deepfashion,
    "deepfashion-inshop": read_deepfashion_inshop,
    "deepfashion-consumer2shop": read_deepfashion_consumer2shop,
    "deepfashion2": read_deepfashion2,
    "imaterialist": read_imaterialist_merged,
    "jd-style": read_jd_style,
}

__all__ = [
    "READERS", "read_clothing_attributes", "read_deepfashion", "read_deepfashion2", "read_deepfashion_consumer2shop",
    "read_deepfashion_inshop", "read_fashion_product_images", "read_generic", "read_imaterialist", "read_jd_style",
]
