"""Catalogue index: similarity search over product embeddings with metadata filters, saved atomically.

Importing the package registers both backends (``faiss``, ``milvus``); the Milvus client library is only imported
when a Milvus index is built or loaded.
"""

from fashionlens.index._items import SearchHit
from fashionlens.index.catalogue import CatalogueIndex
from fashionlens.index.faiss_backend import FaissCatalogueIndex
from fashionlens.index.filters import Filters
from fashionlens.index.kinds import INDEX_KINDS, METRICS
from fashionlens.index.milvus_backend import MilvusCatalogueIndex

BACKENDS = ("faiss", "milvus")
"""Names accepted by ``CatalogueIndex.build(backend=...)`` and recorded in ``index.json``."""

__all__ = [
    "BACKENDS",
    "INDEX_KINDS",
    "METRICS",
    "CatalogueIndex",
    "FaissCatalogueIndex",
    "Filters",
    "MilvusCatalogueIndex",
    "SearchHit",
]
