"""One label space for street photos and catalogue photos: the classes and batches of cross-domain training.

Street photos (Clothing Attributes: 7 garment categories, 11 colour tags) and catalogue photos (Fashion Product
Images: articleType, baseColour) are labelled in different vocabularies; a
:class:`~fashionlens.data.domains.DomainMapping` says which catalogue values a street label accepts. Training
classes are built from it per *head*, each an integer code per row (``-1``: the row takes no part in that head):

* ``category`` (both domains): the connected components of the mapping's street category ↔ articleType graph,
  so that a street "Shirt" and a catalogue "Shirts" share a class, and street "Outerwear" and "Suit", which both
  map to Jackets, share one with Jackets and Waistcoat. Catalogue articleTypes no street category maps to (shoes,
  watches...) stay classes of their own, so street photos are also pushed away from them.
* ``colour`` (both domains): the same for colour tags ↔ baseColours (black and gray share Charcoal, so they are one
  class); unmapped baseColours (Pink, Orange...) are classes of their own. A street photo takes part when its
  positive colour tags fall in exactly one class.
* ``fine`` (catalogue only): the joined values of fine catalogue fields, e.g. articleType + baseColour, which keeps
  the catalogue's own similar-item search sharp (same type and colour first).

:class:`SharedSpaceSampler` mixes both domains in every batch at a fixed share, since the street photos are far
fewer (about 1.1k training photos against 6.9k catalogue items).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Sampler

from fashionlens.data.domains import DomainMapping
from fashionlens.data.records import Manifest
from fashionlens.errors import ConfigError, DataError
from fashionlens.tasks.retrieval.triplets import TripletBatch

HEADS = ("category", "colour", "fine")
"""The shared label heads, in the column order of :attr:`SharedLabels.codes`."""


@dataclass(frozen=True)
class SharedLabels:
    """Class codes of catalogue rows followed by street rows, one column per head of :data:`HEADS`.

    Attributes:
        codes: ``(n_catalogue + n_street, len(HEADS))`` int64 codes, ``-1`` where a row has no class in a head.
        classes: Class names per head (code ``i`` of a head is ``classes[head][i]``).
    """

    codes: np.ndarray
    classes: Mapping[str, list[str]]

    def head(self, name: str) -> np.ndarray:
        """The ``(n,)`` codes of one head."""
        return self.codes[:, HEADS.index(name)]


def _components(table: Mapping[str, frozenset[str]]) -> tuple[dict[str, str], dict[str, str]]:
    """Connected components of a street label → catalogue values table, named by their street labels.

    Returns:
        ``(street label → class name, catalogue value → class name)``.
    """
    parent = {label: label for label in table}

    def root(label: str) -> str:
        while parent[label] != label:
            label = parent[label]
        return label

    owner: dict[str, str] = {}
    for label in sorted(table):
        for value in sorted(table[label]):
            if value in owner:
                parent[root(label)] = root(owner[value])
            else:
                owner[value] = label
    members: dict[str, list[str]] = {}
    for label in sorted(table):
        members.setdefault(root(label), []).append(label)
    names = {r: "/".join(labels) for r, labels in members.items()}
    street = {label: names[root(label)] for label in table}
    return street, {value: street[label] for value, label in owner.items()}


def _codes(names: Sequence[str | None]) -> tuple[np.ndarray, list[str]]:
    classes = sorted({name for name in names if name})
    position = {name: code for code, name in enumerate(classes)}
    return np.array([position[name] if name else -1 for name in names], dtype=np.int64), classes


def _text(manifest: Manifest, field: str) -> list[str]:
    return [str(v) for v in manifest.column(field).astype("string").fillna("").tolist()]


def shared_labels(catalogue: Manifest, street: Manifest, mapping: DomainMapping,
                  fine_fields: Sequence[str] = ("articleType", "baseColour")) -> SharedLabels:
    """The shared classes of every catalogue row, then every street row (see the module docstring).

    Args:
        catalogue: Catalogue photos with the mapping's category and colour fields (and ``fine_fields``).
        street: Street photos with the mapping's street category head and colour tags.
        mapping: Street labels → catalogue values.
        fine_fields: Catalogue fields whose joined values are the ``fine`` classes; empty: no fine head.

    Raises:
        DataError: A field is missing from a manifest, or the mapping names values the catalogue lacks.
    """
    kinds, colours = _text(catalogue, mapping.catalogue_category), _text(catalogue, mapping.catalogue_colour)
    mapping.check_catalogue({mapping.catalogue_category: kinds, mapping.catalogue_colour: colours})
    street_kind, catalogue_kind = _components(mapping.categories)
    street_colour, catalogue_colour = _components(mapping.colours)
    street_categories, street_tags = mapping.street_labels(street)
    category = ([catalogue_kind.get(kind, kind) for kind in kinds]
                + [street_kind[c] if c is not None else "" for c in street_categories])
    colour_sets = [{street_colour[tag] for tag in tags} for tags in street_tags]
    colour = ([catalogue_colour.get(value, value) for value in colours]
              + [next(iter(found)) if len(found) == 1 else "" for found in colour_sets])
    fine_columns = [_text(catalogue, field) for field in fine_fields]
    fine = ["|".join(values) if values and all(values) else "" for values in zip(*fine_columns, strict=True)]
    fine = (fine or [""] * len(catalogue)) + [""] * len(street)
    heads = {"category": _codes(category), "colour": _codes(colour), "fine": _codes(fine)}
    return SharedLabels(np.stack([heads[name][0] for name in HEADS], axis=1),
                        {name: heads[name][1] for name in HEADS})


class SharedSpaceSampler(Sampler[TripletBatch]):
    """Batches mixing catalogue and street rows at a fixed share, with their shared class codes.

    An epoch is one shuffled pass over the catalogue rows; each batch adds ``round(street_share * batch_size)``
    street rows, drawn so that every street row occurs about equally often in an epoch (they are fewer, so they
    repeat).

    Args:
        rows: Manifest rows to train on.
        labels: ``(len(rows), len(HEADS))`` class codes of ``rows`` (see :func:`shared_labels`).
        street: ``(len(rows),)`` whether each row is a street photo.
        batch_size: Rows per batch.
        street_share: Share of each batch that is street photos (0..1).
        seed: Seed of the per-epoch shuffles.

    Raises:
        ConfigError: ``street_share`` outside 0..1 or a batch too small to hold both domains.
        DataError: No catalogue row, or no street row while ``street_share`` > 0.
    """

    def __init__(self, rows: np.ndarray, labels: np.ndarray, street: np.ndarray, batch_size: int,
                 street_share: float = 0.25, seed: int = 0):
        if not 0.0 <= street_share < 1.0:
            raise ConfigError(f"street_share must lie in 0..1 (exclusive of 1), got {street_share}")
        self.n_street = round(street_share * batch_size)
        if batch_size - self.n_street < 1 or (street_share > 0 and self.n_street < 1):
            raise ConfigError(f"batch_size {batch_size} is too small for a street share of {street_share}")
        self.rows, self.labels = np.asarray(rows), torch.as_tensor(labels)
        self.street_rows, self.catalogue_rows = np.flatnonzero(street), np.flatnonzero(~np.asarray(street))
        if len(self.catalogue_rows) == 0:
            raise DataError("cross-domain training needs catalogue rows with a shared class")
        if self.n_street and len(self.street_rows) == 0:
            raise DataError("cross-domain training needs street rows with a shared class (or street_share: 0)")
        self.per_batch, self.seed, self.epoch = batch_size - self.n_street, seed, 0

    def __len__(self) -> int:
        return math.ceil(len(self.catalogue_rows) / self.per_batch)

    def __iter__(self) -> Iterator[TripletBatch]:
        rng = np.random.default_rng([self.seed, self.epoch])
        self.epoch += 1
        catalogue = rng.permutation(self.catalogue_rows)
        street = (rng.permutation(np.resize(self.street_rows, self.n_street * len(self)))
                  if self.n_street else np.zeros(0, dtype=np.int64))
        for batch in range(len(self)):
            chosen = np.concatenate([catalogue[batch * self.per_batch:(batch + 1) * self.per_batch],
                                     street[batch * self.n_street:(batch + 1) * self.n_street]])
            yield TripletBatch(rows=torch.as_tensor(self.rows[chosen]), labels=self.labels[chosen], triplets=None)
