"""Real street-to-shop evaluation: real street photos query the shop catalogue, no simulation.

Queries are the street photos of one split of a street manifest (Clothing Attributes) that carry a mapped category
label; the gallery is a whole catalogue (the 8,080 Fashion Product Images items of ``make demo``'s index). No photo
shows a catalogue item, so relevance is judged through a :class:`~fashionlens.data.domains.DomainMapping` at two
levels:

* **category**: the hit's ``articleType`` is one the photo's category maps to (Shirt → Shirts, Dress → Dresses,
  Tunics, ...);
* **category + colour**: that, and the hit's ``baseColour`` is one of those the photo's positive colour tags map to
  (only photos with at least one labelled colour take part at this level).

Scores per level are P@K (mean fraction of the top K that is relevant), hit-rate@K (a query counts when any of its
top K is relevant) and mAP@K (:func:`fashionlens.metrics.retrieval_metrics` at depth K). Any search method can be
scored: it is a callable from the query manifest to ranked catalogue item ids (:data:`SearchFn`), so crops,
attribute re-ranking or a trained embedder are compared on the same queries.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fashionlens.data.domains import DomainMapping
from fashionlens.data.records import CLASS_PREFIX, META_PREFIX, Manifest
from fashionlens.errors import DataError
from fashionlens.index import CatalogueIndex
from fashionlens.metrics import retrieval_metrics

SearchFn = Callable[[Manifest], Sequence[Sequence[str]]]
"""A search method under evaluation: query photos → for each, catalogue item ids, best first."""

LEVELS = ("category", "category+colour")


def catalogue_metadata(manifest: Manifest) -> pd.DataFrame:
    """One index row per image: a unique ``item_id`` key and the filterable fields.

    The key is the row's ``item_id`` (the file name stem when empty); an item with several images gets
    ``<item_id>#<n>`` keys, and ``product_id`` always holds the plain ``item_id``. Class heads and ``meta:`` fields
    become fields by their bare names (``articleType``, ``gender``...), as does ``path``.
    """
    frame = manifest.frame
    product = frame["item_id"].where(frame["item_id"] != "", frame["path"].map(lambda p: Path(p).stem))
    occurrence = product.groupby(product).cumcount()
    repeated = product.map(product.value_counts()) > 1
    key = product.where(~repeated, product + "#" + occurrence.astype(str))
    metadata = pd.DataFrame({"item_id": key, "product_id": product, "path": frame["path"]})
    for column in frame.columns:
        name = str(column)
        for prefix in (CLASS_PREFIX, META_PREFIX):
            bare = name.removeprefix(prefix)
            if name.startswith(prefix) and bare not in metadata.columns:
                metadata[bare] = frame[column].astype("string")
    return metadata


def street_queries(street: Manifest, mapping: DomainMapping, split: str | None = "test") -> Manifest:
    """The street photos of ``split`` (every row when ``None``) whose category the mapping knows.

    Raises:
        DataError: No such photo (wrong split name, or a manifest without the mapped category labels).
    """
    categories, _ = mapping.street_labels(street)
    keep = np.array([category is not None for category in categories])
    if split is not None:
        keep &= street.frame["split"].to_numpy() == split
    if not keep.any():
        where = f"split '{split}' of " if split is not None else ""
        raise DataError(f"{where}street manifest '{street.name}' has no photo with a category that domain mapping "
                        f"{mapping.source} maps")
    return street.subset(keep)


@dataclass(frozen=True)
class StreetRelevance:
    """Which catalogue items are relevant to each street query, at both levels.

    Attributes:
        item_ids: ``(n_items,)`` catalogue keys.
        category: ``(n_queries, n_items)`` bool, same kind of garment.
        colour: ``(n_queries, n_items)`` bool, same kind and colour.
        has_colour: ``(n_queries,)`` whether the query has a mapped colour label (the category + colour level
            scores only those).
    """

    item_ids: np.ndarray
    category: np.ndarray
    colour: np.ndarray
    has_colour: np.ndarray

    @classmethod
    def build(cls, queries: Manifest, catalogue: pd.DataFrame, mapping: DomainMapping) -> StreetRelevance:
        """Relevance of every catalogue item (``item_id`` + the mapping's category and colour fields) to each query.

        Raises:
            DataError: A catalogue field is missing, or the mapping names values the catalogue lacks.
        """
        if "item_id" not in catalogue.columns:
            raise DataError("the catalogue table has no 'item_id' column")
        mapping.check_catalogue({field: catalogue[field].dropna().unique() for field in
                                 (mapping.catalogue_category, mapping.catalogue_colour) if field in catalogue.columns})
        kinds = catalogue[mapping.catalogue_category].astype("string").fillna("").to_numpy(dtype=object)
        colours = catalogue[mapping.catalogue_colour].astype("string").fillna("").to_numpy(dtype=object)
        categories, colour_tags = mapping.street_labels(queries)
        category = np.zeros((len(queries), len(catalogue)), dtype=bool)
        colour = np.zeros_like(category)
        has_colour = np.zeros(len(queries), dtype=bool)
        for row, (street_category, tags) in enumerate(zip(categories, colour_tags, strict=True)):
            if street_category is None:
                raise DataError(f"street query {queries.frame['path'].iloc[row]} has no mapped category "
                                f"(select queries with street_queries)")
            category[row] = np.isin(kinds, list(mapping.catalogue_categories(street_category)))
            wanted = mapping.catalogue_colours(tags)
            has_colour[row] = bool(wanted)
            colour[row] = category[row] & np.isin(colours, list(wanted))
        return cls(catalogue["item_id"].astype(str).to_numpy(dtype=object), category, colour, has_colour)

    def score(self, ranked: Sequence[Sequence[str]], k: int = 10) -> dict[str, float]:
        """P@K, hit-rate@K and mAP@K at both levels for ranked item-id lists (one per query, best first).

        Lists shorter than ``k`` (e.g. after filtering) count their missing places as not relevant; ids not in the
        catalogue are errors.

        Returns:
            ``category P@K``, ``category hit@K``, ``category mAP@K``, the same for ``category+colour``,
            ``queries`` and ``colour queries``.
        """
        if len(ranked) != len(self.category):
            raise DataError(f"got {len(ranked)} ranked lists for {len(self.category)} street queries")
        position = {item: column for column, item in enumerate(self.item_ids)}
        columns = np.full((len(ranked), k), -1, dtype=np.int64)
        for row, items in enumerate(ranked):
            for rank, item in enumerate(list(items)[:k]):
                if item not in position:
                    raise DataError(f"search returned item {item!r}, which is not in the evaluated catalogue")
                columns[row, rank] = position[item]
        scores: dict[str, float] = {"queries": float(len(ranked)), "colour queries": float(self.has_colour.sum())}
        for level, relevant, rows in (("category", self.category, np.ones(len(ranked), dtype=bool)),
                                      ("category+colour", self.colour, self.has_colour)):
            if not rows.any():
                continue
            found = np.take_along_axis(relevant[rows], np.maximum(columns[rows], 0), axis=1) & (columns[rows] >= 0)
            metrics = retrieval_metrics(found, relevant[rows].sum(axis=1), ks=(k,))
            scores[f"{level} P@{k}"] = metrics[f"precision@{k}"]
            scores[f"{level} hit@{k}"] = metrics[f"recall@{k}"]
            scores[f"{level} mAP@{k}"] = metrics["mAP"]
        return scores


def index_search(index: CatalogueIndex, embed: Callable[[Manifest], np.ndarray], k: int = 10) -> SearchFn:
    """The plain search method: embed the query photos (cropped to their manifest boxes, if any), nearest items."""

    def search(queries: Manifest) -> list[list[str]]:
        return [[hit.item_id for hit in hits] for hits in index.search(embed(queries), k)]

    return search


def evaluate_street_search(search: SearchFn, street: Manifest, catalogue: pd.DataFrame, mapping: DomainMapping,
                           split: str | None = "test", k: int = 10) -> dict[str, float]:
    """Score a search method on the real street photos of ``split`` against a whole catalogue.

    Args:
        search: The method (see :data:`SearchFn`), e.g. :func:`index_search` over the demo's catalogue index.
        street: Street photos with category and colour labels (Clothing Attributes), split assigned.
        catalogue: One row per catalogue item: ``item_id`` and the mapping's category and colour fields (e.g.
            :func:`fashionlens.tasks.retrieval.catalogue_metadata` of the indexed manifest).
        mapping: Street labels → catalogue values.
        split: Which street photos query; ``None``: all labelled ones.
        k: Cut-off.

    Returns:
        See :meth:`StreetRelevance.score`.
    """
    queries = street_queries(street, mapping, split)
    relevance = StreetRelevance.build(queries, catalogue, mapping)
    return relevance.score(search(queries), k)
