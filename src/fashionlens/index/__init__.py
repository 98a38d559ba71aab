"""Catalogue index: similarity search over product embeddings with metadata filters, saved atomically."""

from fashionlens.index.catalogue import CatalogueIndex, SearchHit
from fashionlens.index.filters import Filters
from fashionlens.index.kinds import INDEX_KINDS, METRICS

__all__ = ["INDEX_KINDS", "METRICS", "CatalogueIndex", "Filters", "SearchHit"]
