"""Searching a catalogue index: by photo (cropped to the garment, steered by a tagger's attributes) and by item.

A service searches on one OpenMP thread per calling thread (:func:`search_on_one_thread`): it gets its parallelism
from concurrent requests, and FAISS's default of one thread per core per search makes one-query searches slower on a
busy machine (see :class:`~fashionlens.index.CatalogueIndex`).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss

from fashionlens.catalogue.embedders import check_embedder
from fashionlens.data.crops import CropSpec
from fashionlens.data.domains import DomainMapping
from fashionlens.errors import CatalogueIndexError, ConfigError
from fashionlens.index import CatalogueIndex, Filters, SearchHit
from fashionlens.models.localiser import GarmentLocaliser
from fashionlens.tasks.common import manifest_of_paths
from fashionlens.tasks.retrieval.attribute_search import (
    ATTRIBUTE_MODES,
    DEFAULT_WEIGHTS,
    AttributeWeights,
    steering_for_index,
)
from fashionlens.tasks.retrieval.localised import DEFAULT_VIEWS, QueryCrop, plan_crops, search_views
from fashionlens.tasks.retrieval.model import Embedder
from fashionlens.tasks.tagging import TagPredictor


def _check_k(k: int, available: int, what: str) -> None:
    if k > available:
        raise CatalogueIndexError(f"k={k} is larger than the {available} {what} in the catalogue index; "
                                  f"ask for k <= {available}")


def search_images(index: CatalogueIndex, embedder: Embedder, paths: Sequence[str | Path], k: int = 10,
                  filters: Filters | None = None, crop: str | CropSpec | Sequence[QueryCrop] = "auto",
                  localiser: GarmentLocaliser | None = None, views: Sequence[str] = DEFAULT_VIEWS,
                  fusion: str = "mean") -> list[list[SearchHit]]:
    """Top-``k`` catalogue items for each query photo (a batch of images is one call).

    Args:
        index: The catalogue index.
        embedder: The model that built it.
        paths: Query photos.
        k: Results per photo.
        filters: Only items with these field values.
        crop: ``auto`` (search with the garment the ``localiser`` finds; the whole photo when it finds none),
            ``none``, ``x1,y1,x2,y2`` (pixels), or crops already planned with
            :func:`~fashionlens.tasks.retrieval.localised.plan_crops` (one per photo; how callers learn the boxes used).
        localiser: Garment localiser for ``auto`` (default: the process's shared one).
        views: Parts of the crop searched with, their hits fused (see :mod:`fashionlens.tasks.retrieval.localised`).
        fusion: ``mean`` or ``rrf``.

    Raises:
        ImageError: A query image cannot be decoded (named).
        ConfigError: A malformed or empty crop spec, invalid views or fusion.
        DataError: A given crop box outside a photo.
        CatalogueIndexError: ``k`` exceeds the catalogue, an unknown filter field, or a model mismatch.
    """
    _check_k(k, len(index), "items")
    check_embedder(index, embedder)
    crops = (list(crop) if not isinstance(crop, (str, CropSpec)) else plan_crops(paths, crop, localiser))
    return search_views(index, embedder.embed_queries, paths, crops, k, filters, views, fusion)


def similar_items(index: CatalogueIndex, item_id: str, k: int = 10,
                  filters: Filters | None = None) -> list[SearchHit]:
    """The ``k`` catalogue items most similar to item ``item_id`` (never itself); no model needed.

    Raises:
        CatalogueIndexError: Unknown ``item_id``, ``k`` exceeds the other items, or an unknown filter field.
    """
    hits = index.search_by_id(item_id, k, filters)  # first, so that an unknown id is reported as such
    _check_k(k, len(index) - 1, "other items")
    return hits


@dataclass
class SteeredResults:
    """Hits of photo queries and what steered them.

    Attributes:
        hits: Per query, the hits best first.
        attributes: Per query, the :meth:`QueryAttributes.describe` summary (``None`` when not steered).
        note: Why attribute steering was off although ``auto`` was asked (``None`` otherwise).
    """

    hits: list[list[SearchHit]]
    attributes: list[dict[str, Any]] | None = None
    note: str | None = None


def search_photos(index: CatalogueIndex, embedder: Embedder, paths: Sequence[str | Path], k: int = 10,
                  filters: Filters | None = None, tagger: TagPredictor | None = None, attributes: str = "auto",
                  mapping: DomainMapping | None = None, weights: AttributeWeights = DEFAULT_WEIGHTS,
                  runtime: str | None = None,
                  crop: str | CropSpec | Sequence[QueryCrop] = "auto") -> SteeredResults:
    """Top-``k`` catalogue items for each photo, steered by the tagger's attributes when ``attributes='auto'``.

    Args:
        index: The catalogue index.
        embedder: The model that built it.
        paths: Query photos.
        k: Results per photo.
        filters: Field filters applied inside the index search.
        tagger: Attribute tagger (``None``: unsteered, with a note).
        attributes: ``auto`` or ``off`` (plain :func:`~fashionlens.catalogue.search_images`).
        mapping: Street → catalogue labels (``None``: the shipped mapping).
        weights: Re-ranking knobs.
        runtime: Where the tagger's backbone runs (``None``: its config's).
        crop: What of each photo the embedder searches with (see
            :func:`~fashionlens.catalogue.search_images`); the tagger always sees the whole photo.

    Raises:
        ConfigError: Unknown ``attributes`` mode, or a tagger without the mapped categories.
        DataError: The mapping names a value the index lacks.
        ImageError: A photo cannot be decoded (named).
        CatalogueIndexError: As :func:`~fashionlens.catalogue.search_images`.
    """
    if attributes not in ATTRIBUTE_MODES:
        raise ConfigError(f"unknown attributes mode '{attributes}'; use one of {ATTRIBUTE_MODES}")
    if attributes == "off":
        return SteeredResults(search_images(index, embedder, paths, k, filters, crop))
    steering, note = steering_for_index(index, tagger, mapping, weights)
    if steering is None:
        return SteeredResults(search_images(index, embedder, paths, k, filters, crop), note=note)
    assert tagger is not None
    hits = search_images(index, embedder, paths, max(k, min(weights.shortlist, len(index))), filters, crop)
    predictions = tagger.predict(manifest_of_paths(paths), show_progress=False, runtime=runtime)
    seen = steering.attributes(predictions)
    described = [a.describe(steering.mapping, steering.weights) for a in seen]
    return SteeredResults(steering.steer(hits, seen, k), described)


_THREADS = threading.local()


def search_on_one_thread() -> None:
    """Make index searches use one OpenMP thread in the calling thread (FAISS's setting is per thread, so each
    searching thread calls this; it sets it the first time)."""
    if not getattr(_THREADS, "set", False):
        faiss.omp_set_num_threads(1)
        _THREADS.set = True
