"""The catalogue application layer: build, edit and search a :class:`~fashionlens.index.CatalogueIndex` with the
embedder (and attribute tagger) that go with it.

The CLI (``fashionlens index`` / ``search`` / ``similar``), the service and the batch engines come here, so that
checks (which embedder built an index, which filters it accepts, ``k`` against its size) are made one way; only this
package and :mod:`fashionlens.index` know which backend holds the vectors.
"""

from fashionlens.catalogue.build import add_to_index, build_catalogue_index, check_storage, index_catalogue, open_index
from fashionlens.catalogue.embedders import baseline_embedder, check_embedder, index_embedder, model_fix
from fashionlens.catalogue.filters import parse_filters
from fashionlens.catalogue.search import (
    SteeredResults,
    search_images,
    search_on_one_thread,
    search_photos,
    similar_items,
)
from fashionlens.tasks.retrieval.street_eval import catalogue_metadata

__all__ = [
    "SteeredResults", "add_to_index", "baseline_embedder", "build_catalogue_index", "catalogue_metadata",
    "check_embedder", "check_storage", "index_catalogue", "index_embedder", "model_fix", "open_index", "parse_filters",
    "search_images", "search_on_one_thread", "search_photos", "similar_items",
]
