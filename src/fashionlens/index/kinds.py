"""The FAISS index kinds a catalogue can be built with, their parameters and their search-time knobs.

Each kind turns validated parameters into an empty FAISS index that accepts ``add_with_ids`` (so catalogue rows
keep stable int64 ids through adds and removes) and into the ``SearchParameters`` object that carries the
filter's ID selector and the recall/speed knob (``nprobe`` for IVF, ``efSearch`` for HNSW) into one search call.

Parameter names follow FAISS (``nlist``, ``nprobe``, ``m``, ``nbits``, ``k_factor``, ``M``, ``efConstruction``,
``efSearch``) so its documentation applies unchanged. Defaults are chosen for catalogues of about 10^6 items of
256-1280 dimensions on a few CPU cores (see ``benchmarks/bench_index.py`` for the measurements behind them):

* ``flat``: exact search; the reference. ~10 ms per query at 10^5 x 256, ~100 ms at 10^6 x 256, ~0.4 s at
  10^6 x 1280 (one thread).
* ``ivf``: ``nlist = 4 * sqrt(n)`` inverted lists (4000 at 10^6, ~250 vectors per list), ``nprobe = 32`` lists
  scanned per query. Stores full vectors, so memory is the same as ``flat``. The recommended approximate kind: on
  clustered synthetic data at 10^6 items it reaches recall@10 >= 0.98 from ``nprobe = 4`` (0.4 ms at 256 dims,
  2 ms at 1280); the default of 32 leaves headroom for real embeddings, whose neighbourhoods are less tidy.
* ``ivfpq``: as ``ivf`` but vectors are product-quantised to ``m = d / 8`` bytes (``nbits = 8``), which cuts index
  memory ~32x (0.18 GB instead of 4.8 GB at 10^6 x 1280); the ``k_factor = 10`` x k best candidates are re-ranked
  with the stored vectors (memory-mapped, so they can stay on disk). For catalogues whose full vectors do not fit
  in RAM. Recall is bounded by the shortlist: 0.79 at 10^6 x 1280 clustered data (0.996 at 10^5), so raise
  ``k_factor`` when recall matters more than the extra rows read per query.
* ``hnsw``: graph with ``M = 32`` links per node, ``efConstruction = 40``, ``efSearch = 128``. Cannot delete (the
  catalogue rebuilds it from the stored vectors) and builds ~3x slower than ``ivf``; on strongly clustered data
  greedy search can stay inside the wrong cluster, so recall@10 levelled off at 0.93 even with ``efSearch = 1024``
  in the benchmark. Prefer ``ivf`` unless measurements on the real embeddings say otherwise.

On uniformly random vectors no kind gets close to exact recall at useful speed (``ivf`` needs ``nprobe = 1024``, a
quarter of the catalogue, for recall@10 = 0.65 at 256 dims): there are no neighbourhoods to exploit.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import ClassVar

import faiss
import numpy as np

from fashionlens.errors import CatalogueIndexError

METRICS: dict[str, int] = {"ip": faiss.METRIC_INNER_PRODUCT, "l2": faiss.METRIC_L2}
"""Metric names: ``ip`` (inner product; cosine similarity on L2-normalised vectors) and ``l2`` (squared L2)."""

Params = dict[str, int]

# Training sample: FAISS warns below 39 points per centroid; 50 keeps k-means well-posed while bounding the cost
# of training 4000 centroids at 10^6 items (training is O(sample * nlist * d)).
TRAIN_POINTS_PER_LIST = 50
TRAIN_SEED = 0


class IndexKind:
    """One family of FAISS index: how to create, train and search it, and whether it can delete.

    Attributes:
        name: Registry key, stored in ``index.json``.
        removable: Whether FAISS can delete ids in place; if not, the catalogue rebuilds after a removal.
    """

    name: ClassVar[str]
    removable: ClassVar[bool] = True

    def default_params(self, n: int, dim: int) -> Params:
        """Parameters used when the caller gives none, for a catalogue of ``n`` vectors of ``dim`` dimensions."""
        return {}

    def resolve_params(self, n: int, dim: int, given: Mapping[str, object]) -> Params:
        """Merge ``given`` over the defaults, rejecting unknown names and non-positive or non-integer values."""
        params = self.default_params(n, dim)
        for name, value in given.items():
            if name not in params:
                known = ", ".join(params) or "none"
                raise CatalogueIndexError(f"unknown parameter {name!r} for index kind {self.name!r}; known: {known}")
            params[name] = positive_int(name, value)
        self.check_params(dim, params)
        return params

    def check_params(self, dim: int, params: Params) -> None:
        """Reject parameter combinations FAISS would abort on."""

    def train(self, index: faiss.Index, params: Params, vectors: np.ndarray) -> None:
        """Train ``index`` if it needs it, on a seeded random sample of ``vectors``.

        A sample, because k-means cost grows with the number of points while centroid quality saturates long
        before 10^6; seeded, so rebuilding from the same vectors gives the same index.
        """
        if index.is_trained:
            return
        self.check_trainable(params, len(vectors))
        size = min(len(vectors), self.train_size(params))
        sample = np.sort(np.random.default_rng(TRAIN_SEED).choice(len(vectors), size=size, replace=False))
        index.train(np.ascontiguousarray(vectors[sample]))

    def check_trainable(self, params: Params, n: int) -> None:
        """Refuse to build from ``n`` vectors when the kind needs more to train (one per IVF cell or PQ centroid).

        Checked for every backend, so a catalogue too small for its parameters fails the same way everywhere.
        """
        needed = self.min_train_size(params)
        if n < needed:
            raise CatalogueIndexError(
                f"a {self.name!r} index with {params} needs at least {needed} vectors to train, got {n}; "
                "use kind='flat' for small catalogues or lower nlist/nbits"
            )

    def train_size(self, params: Params) -> int:
        """How many vectors to train on, at most."""
        return 0

    def min_train_size(self, params: Params) -> int:
        """The fewest training vectors FAISS accepts (one per centroid)."""
        return 0

    def create(self, dim: int, metric: str, params: Params) -> faiss.Index:
        """An empty index that supports ``add_with_ids``."""
        raise NotImplementedError

    def shortlist(self, params: Params, k: int) -> int:
        """How many candidates to fetch from FAISS for ``k`` hits; more than ``k`` means "re-rank them exactly"."""
        return k

    def search_knobs(self, params: Params, nprobe: int | None, ef: int | None) -> Params:
        """The recall/speed knob of one search (call override, else the index default): ``{}``, ``{"nprobe": n}``
        or ``{"ef": n}``. Every backend takes its search settings from here.

        A knob the kind does not have is an error rather than silently ignored, so a caller tuning ``nprobe`` on an
        HNSW index learns that it has no effect.
        """
        self._reject_knob("nprobe", nprobe)
        self._reject_knob("ef", ef)
        return {}

    def search_parameters(self, params: Params, nprobe: int | None, ef: int | None) -> faiss.SearchParameters:
        """FAISS ``SearchParameters`` for one search with the knob of :meth:`search_knobs` set.

        The caller sets ``.sel`` to the filter's ID selector.
        """
        knobs = self.search_knobs(params, nprobe, ef)
        if "nprobe" in knobs:
            search_params = faiss.SearchParametersIVF()
            search_params.nprobe = knobs["nprobe"]
            return search_params
        if "ef" in knobs:
            search_params = faiss.SearchParametersHNSW()  # type: ignore[attr-defined]  # missing from faiss's stub
            search_params.efSearch = knobs["ef"]
            return search_params
        return faiss.SearchParameters()

    def _reject_knob(self, knob: str, value: int | None) -> None:
        if value is not None:
            raise CatalogueIndexError(f"search option {knob!r} does not apply to a {self.name!r} index")


class FlatKind(IndexKind):
    """Exhaustive search: exact results, cost linear in the catalogue size."""

    name = "flat"

    def create(self, dim: int, metric: str, params: Params) -> faiss.Index:
        return faiss.IndexIDMap2(faiss.IndexFlat(dim, METRICS[metric]))


class IVFKind(IndexKind):
    """Inverted file: k-means cells, search scans the ``nprobe`` cells nearest to the query."""

    name = "ivf"

    def default_params(self, n: int, dim: int) -> Params:
        nlist = max(1, min(round(4 * math.sqrt(n)), n // TRAIN_POINTS_PER_LIST))
        return {"nlist": nlist, "nprobe": min(32, nlist)}

    def train_size(self, params: Params) -> int:
        return TRAIN_POINTS_PER_LIST * params["nlist"]

    def min_train_size(self, params: Params) -> int:
        return params["nlist"]

    def create(self, dim: int, metric: str, params: Params) -> faiss.Index:
        return faiss.IndexIVFFlat(faiss.IndexFlat(dim, METRICS[metric]), dim, params["nlist"], METRICS[metric])

    def search_knobs(self, params: Params, nprobe: int | None, ef: int | None) -> Params:
        self._reject_knob("ef", ef)
        return {"nprobe": params["nprobe"] if nprobe is None else positive_int("nprobe", nprobe)}


class IVFPQKind(IVFKind):
    """Inverted file over product-quantised codes: ``m`` bytes per vector instead of ``4 * d``.

    Distances between compressed codes are too coarse to order close neighbours (on the clustered benchmark data
    at 10^6 x 1280, recall@10 stays at 0.26 however many cells are probed; re-ranking 10 x k raises it to 0.79),
    so the ``k_factor * k`` best candidates by code are re-ranked with the stored full vectors, as FAISS's
    ``IndexRefine`` does (``k_factor = 1`` turns this off).
    """

    name = "ivfpq"

    def default_params(self, n: int, dim: int) -> Params:
        m = next(m for m in range(max(1, dim // 8), 0, -1) if dim % m == 0)
        return {**super().default_params(n, dim), "m": m, "nbits": 8, "k_factor": 10}

    def shortlist(self, params: Params, k: int) -> int:
        return k * params["k_factor"]

    def check_params(self, dim: int, params: Params) -> None:
        if dim % params["m"]:
            raise CatalogueIndexError(f"ivfpq parameter m={params['m']} must divide the dimension {dim}")
        if params["nbits"] > 16:
            raise CatalogueIndexError(f"ivfpq parameter nbits={params['nbits']} is too large (at most 16)")

    def train_size(self, params: Params) -> int:
        return max(super().train_size(params), TRAIN_POINTS_PER_LIST * 2 ** params["nbits"])

    def min_train_size(self, params: Params) -> int:
        return max(params["nlist"], 2 ** params["nbits"])

    def create(self, dim: int, metric: str, params: Params) -> faiss.Index:
        quantizer = faiss.IndexFlat(dim, METRICS[metric])
        return faiss.IndexIVFPQ(quantizer, dim, params["nlist"], params["m"], params["nbits"], METRICS[metric])


class HNSWKind(IndexKind):
    """Hierarchical navigable small-world graph: greedy search over ``M``-regular links, ``efSearch`` candidates."""

    name = "hnsw"
    removable = False

    def default_params(self, n: int, dim: int) -> Params:
        return {"M": 32, "efConstruction": 40, "efSearch": 128}

    def create(self, dim: int, metric: str, params: Params) -> faiss.Index:
        graph = faiss.IndexHNSWFlat(dim, params["M"], METRICS[metric])
        graph.hnsw.efConstruction = params["efConstruction"]
        graph.hnsw.efSearch = params["efSearch"]
        return faiss.IndexIDMap2(graph)

    def search_knobs(self, params: Params, nprobe: int | None, ef: int | None) -> Params:
        self._reject_knob("nprobe", nprobe)
        return {"ef": params["efSearch"] if ef is None else positive_int("ef", ef)}


INDEX_KINDS: dict[str, IndexKind] = {kind.name: kind for kind in (FlatKind(), IVFKind(), IVFPQKind(), HNSWKind())}
"""Registry of index kinds by name."""


def get_kind(name: str) -> IndexKind:
    """Look up an index kind, naming the known ones when ``name`` is not one of them."""
    if name not in INDEX_KINDS:
        raise CatalogueIndexError(f"unknown index kind {name!r}; known: {', '.join(INDEX_KINDS)}")
    return INDEX_KINDS[name]


def check_metric(metric: str) -> str:
    """Return ``metric`` if it is a known metric name, else raise naming the known ones."""
    if metric not in METRICS:
        raise CatalogueIndexError(f"unknown metric {metric!r}; known: {', '.join(METRICS)}")
    return metric


def positive_int(name: str, value: object) -> int:
    """``value`` as an ``int`` >= 1, or a :class:`CatalogueIndexError` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise CatalogueIndexError(f"{name} must be a positive integer, got {value!r}")
    return int(value)
