"""Search with the garment, not the whole photo: crop plans, multi-crop querying and the fusion of its hits.

A query photo is searched through one or more *views*, each a box of it:

* ``box``: the garment box (``--crop``: found by a :class:`~fashionlens.models.localiser.GarmentLocaliser`, given,
  or the whole photo);
* ``whole``: the whole photo;
* ``upper`` / ``lower``: the top or bottom part of the garment box (a person's top or bottom garment).

With several views, their hits are fused: ``mean`` averages the views' L2-normalised embeddings into one query (for a
cosine index) and searches once; ``rrf`` searches each view and merges the rankings by reciprocal-rank fusion
(Cormack et al. 2009: an item scores ``sum over views of 1 / (60 + rank)``). :func:`localised_search` is the same
method as a :data:`~fashionlens.tasks.retrieval.street_eval.SearchFn` for the real street-to-shop evaluation.

The embedding step is a callable from a manifest (whose ``bbox_*`` columns hold each view's box) to vectors, e.g.
:meth:`~fashionlens.tasks.retrieval.Embedder.embed`, so this module does not depend on how embedders are made.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from fashionlens.data.crops import CropSpec, box_part, box_text, check_box, whole_image
from fashionlens.data.images import crop_box, decode_for_model
from fashionlens.data.records import BBOX_COLUMNS, BBox, Manifest
from fashionlens.errors import ConfigError
from fashionlens.index import CatalogueIndex, Filters, SearchHit
from fashionlens.models.localiser import GarmentLocaliser

VIEWS = ("box", "whole", "upper", "lower")
FUSIONS = ("mean", "rrf")
DEFAULT_VIEWS = ("box", "upper")
"""The views searched by default, chosen on the Clothing Attributes **val** split (see the real street-to-shop
section of ``docs/benchmarks.md``): the garment box fused with its upper part raised category P@10 from 0.178 (whole
photo) to 0.270 with untrained ImageNet features and from 0.248 to 0.318 with the demo's embedder. The upper part
alone scored about the same (0.289 / 0.329), but those photos show only tops and dresses: alone it could never find
a skirt or trousers, which the box keeps in view."""
RRF_CONSTANT = 60
RRF_DEPTH = 100
"""Hits per view that reciprocal-rank fusion merges (deeper than the usual ``k``, so an item ranked well by one view
and moderately by another can rise)."""

EmbedFn = Callable[[Manifest], np.ndarray]
"""Vectors of a manifest's images (cropped to their ``bbox_*`` boxes)."""


@dataclass(frozen=True)
class QueryCrop:
    """Which box of a query photo was searched, and why.

    Attributes:
        box: The box ``(x0, y0, x1, y1)`` in pixels of the upright original image.
        size: ``(width, height)`` of that image.
        mode: The crop spec's mode: ``auto`` (localised), ``none`` (whole photo) or ``box`` (given).
        fallback: Why the whole photo was used although ``auto`` asked for the garment (no garment found), else
            ``None``.
    """

    box: BBox
    size: tuple[int, int]
    mode: str
    fallback: str | None = None

    def views(self, names: Sequence[str]) -> list[BBox]:
        """The boxes of the named views (see the module docstring).

        Only a localised box (``auto``, found) has parts: a given box, the whole photo and a fallback are searched
        as they are, so every view is that box (the same number of views keeps a batch of queries rectangular).
        """
        if self.mode != "auto" or self.fallback is not None:
            return [self.box] * len(names)
        whole = whole_image(self.size)
        chosen = {"box": self.box, "whole": whole, "upper": box_part(self.box, "upper"),
                  "lower": box_part(self.box, "lower")}
        return [chosen[name] for name in names]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: ``box`` (four numbers), ``box_text``, ``mode``, ``fallback`` (bool) and ``reason``."""
        return {"box": [round(v, 1) for v in self.box], "box_text": box_text(self.box), "mode": self.mode,
                "fallback": self.fallback is not None, "reason": self.fallback}


def check_views(views: Sequence[str], fusion: str) -> tuple[str, ...]:
    """Validated view names and fusion.

    Raises:
        ConfigError: No view, an unknown or repeated view, or an unknown fusion.
    """
    unknown = [v for v in views if v not in VIEWS]
    if not views or unknown or len(set(views)) != len(views):
        raise ConfigError(f"query views {list(views)} are invalid: use distinct names among {', '.join(VIEWS)}")
    if fusion not in FUSIONS:
        raise ConfigError(f"unknown fusion {fusion!r}; use one of {', '.join(FUSIONS)}")
    return tuple(views)


@functools.cache
def default_localiser() -> GarmentLocaliser:
    """The localiser ``auto`` crops use when none is given, built once per process (its classifier loads in about a
    second)."""
    return GarmentLocaliser()


def plan_crops(paths: Sequence[str | Path], crop: str | CropSpec = "auto",
               localiser: GarmentLocaliser | None = None) -> list[QueryCrop]:
    """The box to search each photo with, in pixels of the original image.

    Args:
        paths: Query photos.
        crop: ``auto``, ``none`` or ``x1,y1,x2,y2`` (see :class:`~fashionlens.data.crops.CropSpec`); a given box
            applies to every photo and must lie inside each.
        localiser: Finds the garment for ``auto`` (default: :func:`default_localiser`).

    Raises:
        ConfigError: A malformed or empty crop spec.
        DataError: A given box outside a photo.
        ImageError: A photo cannot be decoded (named).
    """
    spec = CropSpec.parse(crop)
    decoded = [decode_for_model(path) for path in paths]
    return plan_image_crops([d.image for d in decoded], [d.full_size for d in decoded], [str(p) for p in paths],
                            spec, localiser)


def plan_image_crops(images: Sequence[Image.Image], sizes: Sequence[tuple[int, int]], sources: Sequence[str],
                     crop: str | CropSpec = "auto", localiser: GarmentLocaliser | None = None) -> list[QueryCrop]:
    """:func:`plan_crops` for decoded photos: ``images`` (possibly shrunk) of originals of ``sizes`` (width,
    height), named ``sources`` in errors."""
    spec = CropSpec.parse(crop)
    if spec.mode == "none":
        return [QueryCrop(whole_image(size), size, "none") for size in sizes]
    if spec.box is not None:
        return [QueryCrop(check_box(spec.box, size, source), size, "box")
                for source, size in zip(sources, sizes, strict=True)]
    found = (localiser or default_localiser()).localise(images, sizes)
    return [QueryCrop(place.box, place.size, "auto", place.fallback) for place in found]


def view_images(image: Image.Image, crop: QueryCrop, views: Sequence[str]) -> list[Image.Image]:
    """The views of a decoded photo (``image`` may be a shrunk copy of the original ``crop.size``)."""
    scale_x, scale_y = image.width / crop.size[0], image.height / crop.size[1]
    return [crop_box(image, (x0 * scale_x, y0 * scale_y, x1 * scale_x, y1 * scale_y))
            for x0, y0, x1, y1 in crop.views(views)]


def views_manifest(paths: Sequence[str | Path], crops: Sequence[QueryCrop], views: Sequence[str]) -> Manifest:
    """One row per (photo, view), photo-major, with the view's box in the ``bbox_*`` columns."""
    rows = [(str(path), *box) for path, crop in zip(paths, crops, strict=True) for box in crop.views(views)]
    return Manifest(pd.DataFrame(rows, columns=["path", *BBOX_COLUMNS]), name="query-views")


def fuse_embeddings(vectors: np.ndarray, normalize: bool) -> np.ndarray:
    """One query vector per photo from its views' vectors ``(n, views, d)``: their mean, of L2-normalised views
    (re-normalised) when the index searches by cosine (``normalize``), else of the raw vectors."""
    if normalize:
        vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12)
    fused = vectors.mean(axis=1)
    if normalize:
        fused = fused / np.maximum(np.linalg.norm(fused, axis=-1, keepdims=True), 1e-12)
    return fused.astype(np.float32)


def fuse_rankings(rankings: Sequence[Sequence[SearchHit]], k: int,
                  constant: int = RRF_CONSTANT) -> list[SearchHit]:
    """Reciprocal-rank fusion of one photo's per-view hit lists: the ``k`` best items by ``sum 1 / (constant +
    rank)``, ties broken by the best single rank; each hit's ``score`` is its fused score."""
    scores: dict[str, float] = {}
    best: dict[str, SearchHit] = {}
    for hits in rankings:
        for hit in hits:
            scores[hit.item_id] = scores.get(hit.item_id, 0.0) + 1.0 / (constant + hit.rank)
            if hit.item_id not in best or hit.rank < best[hit.item_id].rank:
                best[hit.item_id] = hit
    order = sorted(scores, key=lambda item: (-scores[item], best[item].rank))[:k]
    return [SearchHit(item, round(scores[item], 6), rank, best[item].metadata) for rank, item in enumerate(order, 1)]


def search_views(index: CatalogueIndex, embed: EmbedFn, paths: Sequence[str | Path], crops: Sequence[QueryCrop],
                 k: int = 10, filters: Filters | None = None, views: Sequence[str] = DEFAULT_VIEWS,
                 fusion: str = "mean") -> list[list[SearchHit]]:
    """Top-``k`` catalogue items of each photo, searched through its ``views`` and fused by ``fusion``.

    Raises:
        ConfigError: Invalid views or fusion.
        CatalogueIndexError: An unknown filter field.
    """
    views = check_views(views, fusion)
    vectors = embed(views_manifest(paths, crops, views))
    vectors = vectors.reshape(len(paths), len(views), -1)
    if len(views) == 1:
        return index.search(vectors[:, 0], k, filters)
    if fusion == "mean":
        return index.search(fuse_embeddings(vectors, index.metric == "ip"), k, filters)
    depth = min(len(index), max(k, RRF_DEPTH))
    per_view = [index.search(vectors[:, view], depth, filters) for view in range(len(views))]
    return [fuse_rankings([hits[row] for hits in per_view], k) for row in range(len(paths))]


def localised_search(index: CatalogueIndex, embed: EmbedFn, localiser: GarmentLocaliser | None = None,
                     crop: str | CropSpec = "auto", views: Sequence[str] = DEFAULT_VIEWS, fusion: str = "mean",
                     k: int = 10, planned: Mapping[str, QueryCrop] | None = None,
                     ) -> Callable[[Manifest], list[list[str]]]:
    """The search method for :func:`~fashionlens.tasks.retrieval.street_eval.evaluate_street_search`: each query
    photo is cropped as ``crop`` says (the localiser's garment box for ``auto``), searched through ``views`` and fused.

    ``planned`` gives crops already planned by path (:func:`plan_crops`), e.g. reused across repeated runs over the
    same photos; ``crop`` and ``localiser`` then go unused.

    Example::

        search = localised_search(index, embedder.embed, views=("box", "upper"), fusion="rrf")
        evaluate_street_search(search, street, catalogue_metadata(products), load_domain_mapping(), "val")
    """
    check_views(views, fusion)
    spec = CropSpec.parse(crop)
    if spec.mode == "auto" and localiser is None and planned is None:
        localiser = default_localiser()

    def search(queries: Manifest) -> list[list[str]]:
        paths = queries.frame["path"].tolist()
        crops = [planned[p] for p in paths] if planned is not None else plan_crops(paths, spec, localiser)
        hits = search_views(index, embed, paths, crops, k, None, views, fusion)
        return [[hit.item_id for hit in row] for row in hits]

    return search
