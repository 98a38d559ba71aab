"""What a service request asks the pipeline for (a :class:`Job`: its tasks and its input tensor per backbone), how a
batch's features are kept per backbone, and the errors of requests for what is not loaded or not in the catalogue."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from fashionlens.errors import CatalogueIndexError, DataError, FashionlensError
from fashionlens.index import Filters
from fashionlens.tasks.retrieval import ATTRIBUTE_MODES, QueryCrop

TASKS = ("tags", "hierarchy", "embedding", "attributes")
"""What a request can ask the pipeline for."""


def search_tasks(attributes: str) -> tuple[str, ...]:
    """The pipeline tasks of a photo search: the embedding, and the query's attributes unless ``off``.

    Raises:
        DataError: ``attributes`` is neither ``auto`` nor ``off``.
    """
    if attributes not in ATTRIBUTE_MODES:
        raise DataError(f"attributes must be one of {', '.join(ATTRIBUTE_MODES)}, got {attributes!r}")
    return ("embedding", "attributes") if attributes == "auto" else ("embedding",)


class ComponentMissingError(FashionlensError):
    """The request needs a model or index the service was started without."""


class UnknownItemError(CatalogueIndexError):
    """The requested catalogue item is not in the index."""


@dataclass(frozen=True)
class BackboneKey:
    """What makes two components' features interchangeable: backbone name, weights and input transform."""

    name: str
    weights_id: str
    transform: str


@dataclass
class Job:
    """One decoded upload, ready for a batch: its input tensor per backbone and what it asks for."""

    tasks: frozenset[str]
    inputs: dict[BackboneKey, torch.Tensor]
    k: int = 10
    filters: Filters | None = None
    size: tuple[int, int] = (0, 0)
    crop: QueryCrop | None = None
    views: list[torch.Tensor] = field(default_factory=list)
    """Embedding inputs: one per searched view of the photo (see :mod:`fashionlens.tasks.retrieval.localised`)."""


@dataclass
class BatchFeatures:
    """Pooled features of a batch's requests, per backbone (rows in request order of those that needed it)."""

    rows: dict[BackboneKey, list[int]] = field(default_factory=dict)
    values: dict[BackboneKey, np.ndarray] = field(default_factory=dict)

    def of(self, key: BackboneKey, requests: Sequence[int]) -> np.ndarray:
        position = {row: i for i, row in enumerate(self.rows[key])}
        return self.values[key][[position[r] for r in requests]]
