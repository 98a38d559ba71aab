"""The catalogue application layer: build, edit and search a :class:`~fashionlens.index.CatalogueIndex` with the
embedder (and attribute tagger) that go with it.

The CLI (``fashionlens index`` / ``search`` / ``similar``), the service and the batch engines come here, so that
checks (which embedder built an index, which filters it accepts, ``k`` against its size) are made one way; only this
package and :mod:`fashionlens.index` know which backend holds the vectors.
"""

from fashionlens.catalogue.build import add_to_index, build_catalogue_index, index_catalogue, open_index
from fashionlens.catalogue.embedders import check_embedder, index_embedder
from fashionlens.catalogue.search import SteeredResults, search_images, search_photos, similar_items
from fashionlens.tasks.retrieval.street_eval import catalogue_metadata

__all__ = [
    "SteeredResults", "add_to_index", "build_catalogue_index", "catalogue_metadata", "check_embedder",
    "index_catalogue", "index_embedder", "open_index", "search_images", "search_photos", "similar_items",
]
