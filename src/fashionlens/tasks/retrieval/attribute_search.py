"""Attribute-aware visual search: a tagger's view of the query photo steers which catalogue hits come first.

Street photos and shop photos look different, so the nearest catalogue vectors of a street photo are often another
kind of garment. An attribute tagger trained on street photos (Clothing Attributes: a softmax ``category`` head and
colour tags) says what the photo shows; the shipped :class:`~fashionlens.data.domains.DomainMapping` turns that
into catalogue terms. Each query's base shortlist (the nearest ``shortlist`` items) is then re-ranked by

    score = -ln(rank) + w_category * P(kind matches) + w_colour * P(colour matches)

where ``rank`` is the item's place in the base list (1 = nearest), ``P(kind matches)`` is the tagger's probability
of the street categories that map to the item's ``articleType``, and ``P(colour matches)`` is the probability that
at least one colour tag mapping to the item's ``baseColour`` is on (tags taken as independent). The log-rank makes
the weights readable and independent of the embedder's score scale: an item whose kind surely matches counts as
``e^w_category`` times nearer. The base list may come from any search (the rank is all that is used), so the same
re-ranker wraps a plain index search, a cropped-query search or a trained embedder (:func:`attribute_search`).

The default knobs were chosen on the Clothing Attributes **val** split (a grid over shortlist 1000-3000, category
weight 10-80 and colour weight 4-20, scored by category P@10 + category+colour P@10 of the untrained and the demo
embedder; a tagger trained on the train split). Val prefers trusting the tagger: the best points (category 25-80,
colour 12-20) lie within 0.02 of each other, and with them the hits are in effect ordered by how likely their kind and
colour match, the base rank ordering items that match equally well. Larger shortlists score a little higher still but
cost more per query on large catalogues, so the default stops at 3000.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from fashionlens.data.domains import DomainMapping, load_domain_mapping
from fashionlens.data.records import Manifest
from fashionlens.errors import ConfigError, DataError
from fashionlens.index import CatalogueIndex, SearchHit
from fashionlens.tasks.labels import LabelSpace
from fashionlens.tasks.retrieval.street_eval import SearchFn
from fashionlens.tasks.tagging import Predictions, TagPredictor

ATTRIBUTE_MODES = ("auto", "off")
"""``auto``: steer when a tagger and the index's mapped fields are available (else plain search, with a note)."""


@dataclass(frozen=True)
class AttributeWeights:
    """The re-ranking knobs (see the module docstring).

    Attributes:
        category: Weight of P(kind matches), in log-rank units (0: kind is ignored).
        colour: Weight of P(colour matches), in log-rank units (0: colour is ignored).
        shortlist: Base hits per query that are re-ranked (the rest never enter the results).
    """

    category: float = 80.0
    colour: float = 12.0
    shortlist: int = 3000

    def __post_init__(self) -> None:
        if not (self.category >= 0 and self.colour >= 0):
            raise ConfigError(f"attribute weights must be >= 0, got category={self.category}, colour={self.colour}")
        if self.shortlist < 1:
            raise ConfigError(f"attribute shortlist must be >= 1, got {self.shortlist}")


DEFAULT_WEIGHTS = AttributeWeights()


@dataclass(frozen=True)
class QueryAttributes:
    """What the tagger saw in one query photo, in catalogue terms.

    Attributes:
        category: The most probable street category and its probability.
        colours: Street colour tags the tagger decides are on, with their probabilities.
        kinds: Catalogue category value → P(the photo shows that kind).
        shades: Catalogue colour value → P(the photo has that colour).
    """

    category: tuple[str, float]
    colours: list[tuple[str, float]]
    kinds: dict[str, float]
    shades: dict[str, float]

    def describe(self, mapping: DomainMapping, weights: AttributeWeights) -> dict[str, Any]:
        """JSON-ready summary of what steered the search (what the CLI, service and web page show)."""
        name, probability = self.category
        return {
            "category": {"label": name, "probability": round(probability, 4),
                         "catalogue": sorted(mapping.catalogue_categories(name)), "weight": weights.category},
            "colours": [{"label": tag, "probability": round(p, 4),
                         "catalogue": sorted(mapping.catalogue_colours([tag])), "weight": weights.colour}
                        for tag, p in self.colours],
        }


class AttributeSteering:
    """Re-ranks search hits with a tagger's predictions for the query, mapped to catalogue values.

    Args:
        labels: The tagger's label space: it must have the mapping's street category head (``category``) with at
            least one mapped class; colour tags are used when it has them.
        mapping: Street labels → catalogue values.
        weights: The knobs.
        thresholds: The tagger's decision thresholds (which colour tags count as "on" in :class:`QueryAttributes`;
            ``None``: 0.5). They only name the colours shown; ranking uses the probabilities.
        source: The tagger's name in errors.

    Raises:
        ConfigError: The tagger has no mapped street category.
    """

    def __init__(self, labels: LabelSpace, mapping: DomainMapping, weights: AttributeWeights = DEFAULT_WEIGHTS,
                 thresholds: np.ndarray | None = None, source: str = "the tagger"):
        head = mapping.street_category
        classes = labels.heads.get(head, [])
        mapped = [name for name in classes if name in mapping.categories]
        if not mapped:
            raise ConfigError(f"{source} has no '{head}' head with the street categories domain mapping "
                              f"{mapping.source} maps ({', '.join(sorted(mapping.categories))}); its heads: "
                              f"{sorted(labels.heads) or 'none'}; use a tagger trained on street photos with those "
                              f"labels (e.g. Clothing Attributes)")
        self.mapping, self.weights, self.head = mapping, weights, head
        self._classes = classes
        self._kinds = sorted({kind for name in mapped for kind in mapping.catalogue_categories(name)})
        # (classes, kinds) 0/1: which street classes count as each catalogue kind
        self._class_kind = np.array([[kind in mapping.catalogue_categories(name) for kind in self._kinds]
                                     for name in classes], dtype=np.float64).reshape(len(classes), len(self._kinds))
        tags = [tag for tag in mapping.colours if tag in labels.tags]
        self._colour_columns = [labels.tags.index(tag) for tag in tags]
        self._colour_tags = tags
        self._shades = sorted(mapping.catalogue_colours(tags))
        self._tag_shade = np.array([[shade in mapping.catalogue_colours([tag]) for shade in self._shades]
                                    for tag in tags], dtype=np.float64).reshape(len(tags), len(self._shades))
        chosen = np.full(len(labels.tags), 0.5) if thresholds is None else np.asarray(thresholds, dtype=np.float64)
        self._colour_thresholds = chosen[self._colour_columns] if tags else np.zeros(0)

    @classmethod
    def of(cls, tagger: TagPredictor, mapping: DomainMapping | None = None,
           weights: AttributeWeights = DEFAULT_WEIGHTS, source: str = "the tagger") -> AttributeSteering:
        """The steering of a tagger (or ensemble) with its decision thresholds (``mapping``: the shipped one)."""
        return cls(tagger.labels, mapping or load_domain_mapping(), weights, tagger.thresholds, source)

    @property
    def uses_colour(self) -> bool:
        """Whether colour takes part (the tagger has mapped colour tags and the colour weight is not 0)."""
        return bool(self._colour_tags) and self.weights.colour > 0

    def check_catalogue(self, values: Mapping[str, Iterable[Any]]) -> None:
        """Check the catalogue has the mapped fields and every mapped value (see
        :meth:`DomainMapping.check_catalogue`).

        Raises:
            DataError: A field is missing, or the mapping names a value the catalogue lacks.
        """
        self.mapping.check_catalogue(values)

    def attributes(self, predictions: Predictions) -> list[QueryAttributes]:
        """Each query's :class:`QueryAttributes` from the tagger's probabilities."""
        probs = np.asarray(predictions.heads[self.head], dtype=np.float64)
        kinds = probs @ self._class_kind
        if self._colour_tags:
            on = np.asarray(predictions.tags, dtype=np.float64)[:, self._colour_columns]
            # P(at least one tag mapping to the shade is on) = 1 - prod(1 - p), computed in log space
            shades = 1.0 - np.exp(np.log1p(-np.clip(on, 0.0, 1.0 - 1e-9)) @ self._tag_shade)
        else:
            on, shades = np.zeros((len(probs), 0)), np.zeros((len(probs), 0))
        out = []
        for row in range(len(probs)):
            top = int(np.argmax(probs[row]))
            colours = sorted(((tag, float(p)) for tag, p, t in zip(self._colour_tags, on[row], self._colour_thresholds,
                                                                   strict=True) if p >= t), key=lambda c: -c[1])
            out.append(QueryAttributes((self._classes[top], float(probs[row, top])), colours,
                                       dict(zip(self._kinds, kinds[row].tolist(), strict=True)),
                                       dict(zip(self._shades, shades[row].tolist(), strict=True))))
        return out

    def order(self, candidates: Sequence[tuple[str | None, str | None]], attributes: QueryAttributes) -> list[int]:
        """Positions of one query's base list ``[(kind, colour), ...]`` (nearest first), in re-ranked order."""
        colour_weight = self.weights.colour if self.uses_colour else 0.0
        scores = [-math.log(rank) + self.weights.category * attributes.kinds.get(kind or "", 0.0)
                  + colour_weight * attributes.shades.get(colour or "", 0.0)
                  for rank, (kind, colour) in enumerate(candidates, start=1)]
        return sorted(range(len(candidates)), key=lambda i: -scores[i])  # stable: ties keep the base order

    def steer(self, hits: Sequence[Sequence[SearchHit]], seen: Sequence[QueryAttributes],
              k: int) -> list[list[SearchHit]]:
        """Re-rank each query's hits (metadata with the mapped fields) by what :meth:`attributes` saw in its photo,
        keep the top ``k``, renumber ranks."""
        fields = (self.mapping.catalogue_category, self.mapping.catalogue_colour)
        out = []
        for query_hits, attributes in zip(hits, seen, strict=True):
            shortlist = list(query_hits)[:self.weights.shortlist]
            order = self.order([(h.metadata.get(fields[0]), h.metadata.get(fields[1])) for h in shortlist],
                               attributes)
            out.append([replace(shortlist[i], rank=rank) for rank, i in enumerate(order[:k], start=1)])
        return out


# ---------------------------------------------------------------------------------------------------------- evaluation
def attribute_search(base: SearchFn, predict: Callable[[Manifest], Predictions], steering: AttributeSteering,
                     catalogue: pd.DataFrame, k: int = 10) -> SearchFn:
    """A search method that re-ranks another one's lists (for :func:`~fashionlens.tasks.retrieval.street_eval.
    evaluate_street_search`).

    Args:
        base: Any search method; build it with at least ``steering.weights.shortlist`` results per query (e.g.
            ``index_search(index, embedder.embed, k=steering.weights.shortlist)``).
        predict: The tagger's predictions for the query photos (e.g. ``tagger.predict``).
        steering: Mapping and weights.
        catalogue: ``item_id`` and the mapping's category and colour fields of every item ``base`` can return.
        k: Results per query.

    Raises:
        DataError: The catalogue lacks a mapped field or value.
    """
    mapping = steering.mapping
    fields = [mapping.catalogue_category, mapping.catalogue_colour]
    missing = [name for name in ["item_id", *fields] if name not in catalogue.columns]
    if missing:
        raise DataError(f"the catalogue table has no {', '.join(map(repr, missing))} column(s)")
    steering.check_catalogue({name: catalogue[name].dropna().unique() for name in fields})
    values = catalogue[fields].astype("string").astype(object).where(catalogue[fields].notna(), None)
    described = dict(zip(catalogue["item_id"].astype(str), zip(*(values[f] for f in fields), strict=True),
                         strict=True))

    def search(queries: Manifest) -> list[list[str]]:
        ranked = base(queries)
        attributes = steering.attributes(predict(queries))
        out = []
        for items, query in zip(ranked, attributes, strict=True):
            shortlist = list(items)[:steering.weights.shortlist]
            order = steering.order([described.get(item, (None, None)) for item in shortlist], query)
            out.append([shortlist[i] for i in order[:k]])
        return out

    return search


def steering_for_index(index: CatalogueIndex, tagger: TagPredictor | None, mapping: DomainMapping | None = None,
                       weights: AttributeWeights = DEFAULT_WEIGHTS,
                       source: str = "the tagger") -> tuple[AttributeSteering | None, str | None]:
    """The steering of ``tagger`` over ``index``, or ``None`` and a note saying why search runs unsteered.

    No tagger, or an index without the mapped fields, turns steering off (with the note); a tagger without the
    mapped categories, or a mapping naming values the index lacks, is an error.

    Raises:
        ConfigError: The tagger has no mapped street category.
        DataError: The mapping names a catalogue value the index lacks.
    """
    if tagger is None:
        return None, "attribute steering off: no tagger (pass --tagger DIR, or build the index with --tagger)"
    steering = AttributeSteering.of(tagger, mapping, weights, source)
    fields = (steering.mapping.catalogue_category, steering.mapping.catalogue_colour)
    absent = [name for name in fields if name not in index.fields]
    if absent:
        return None, (f"attribute steering off: the catalogue index has no {' or '.join(map(repr, absent))} field "
                      f"(domain mapping {steering.mapping.source} maps to them)")
    steering.check_catalogue({name: index.values(name) for name in fields})
    return steering, None
