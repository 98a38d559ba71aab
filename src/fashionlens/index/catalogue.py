"""The catalogue index: product embeddings searchable by similarity and filterable by metadata.

A :class:`CatalogueIndex` keeps together what must never drift apart: the vectors as indexed, the item metadata
(``item_id`` plus filterable fields such as category, gender, colour, image path) and the identity of the
embedding model that produced them. Saving writes all of it to one directory atomically (see
:mod:`fashionlens.index.store`), and loading checks the model and dimension, so a query embedded by a different
model is rejected instead of silently returning unrelated products.

Where the vectors live is the backend, a subclass chosen by name when building and read from ``index.json`` when
loading, so nothing outside this package needs to know which one runs:

* ``faiss`` (:class:`~fashionlens.index.faiss_backend.FaissCatalogueIndex`, the default): an in-process FAISS
  index saved as files in the directory.
* ``milvus`` (:class:`~fashionlens.index.milvus_backend.MilvusCatalogueIndex`): a Milvus collection, in an
  embedded Milvus Lite database (by default inside the directory) or on a Milvus server shared by many replicas.

This base class does the work common to both: validating vectors, metadata, model id, kind, parameters, ``k`` and
filter fields, keeping the item table (hits' metadata, ``info``, look-up of an item's row) and the save/load
protocol. With the default ``ip`` metric vectors are L2-normalised on the way in and scores are cosine similarities;
with ``l2`` scores are squared Euclidean distances (lower is closer).
"""

from __future__ import annotations

import os
from collections.abc import Collection
from pathlib import Path
from typing import Any, ClassVar, Self, overload

import faiss
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from fashionlens import __version__
from fashionlens.errors import CatalogueIndexError
from fashionlens.index._build import prepare_build, prepare_items, prepare_vectors
from fashionlens.index._items import ItemTable, SearchHit
from fashionlens.index.filters import Filters
from fashionlens.index.kinds import (
    METRICS,
    IndexKind,
    Params,
    get_kind,
    positive_int,
)
from fashionlens.index.store import (
    ITEM_ID,
    MANIFEST_FILE,
    IndexManifest,
    read_items,
    recorded_path,
    write_index_dir,
)

EXACT_SUBSET_MAX = 2048
"""Filtered searches whose filter keeps at most this many items score those items' stored vectors directly.

Larger filtered subsets are searched in the backend's index with the filter applied inside the search. Small ones
are not, for two reasons: an approximate index only scans part of the catalogue (``nprobe`` IVF cells, ``ef``
graph candidates), so a very selective filter may leave too few matching items inside the scanned part and return
fewer than ``k`` hits (Milvus Lite's IVF does exactly that); and even an exact flat index still walks all 10^6 ids
through FAISS's selector (~25 ms), where scoring 2048 stored vectors is exact and takes well under a millisecond.
Vector databases call this a "flat search cut-off". Both backends know the subset from the item table.
"""

Storage = dict[str, str]
"""Backend-specific location of the vectors, recorded in ``index.json`` (e.g. Milvus ``uri`` and ``collection``)."""


class CatalogueIndex(ItemTable):
    """Vectors + item metadata + embedding-model identity. Create with :meth:`build` or :meth:`load`.

    Subclasses (one per backend, registered by their ``backend`` name) implement ``_create``, ``_open``,
    ``_write``, ``_insert``, ``_delete``, ``_search`` and ``_vectors``; everything a caller uses is defined here.
    Searches may run concurrently; :meth:`add` and :meth:`remove` must not run alongside anything else.
    """

    backend: ClassVar[str]
    _backends: ClassVar[dict[str, type[CatalogueIndex]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "backend" in cls.__dict__:
            CatalogueIndex._backends[cls.backend] = cls

    def __init__(self, manifest: IndexManifest, items: pa.Table) -> None:
        self._model_id = manifest.model_id
        self._metric = manifest.metric
        self._kind: IndexKind = get_kind(manifest.kind)
        self._params: Params = dict(manifest.params)
        self._dim = manifest.dim
        self._models: dict[str, Path] = {}
        self._set_items(items)

    # Two signatures for type checkers: callers forwarding ``**params`` (a ``dict[str, int]``) must not be told that
    # an int might land in ``backend`` or ``storage``, while callers naming those get them checked.
    @overload
    @classmethod
    def build(
        cls, vectors: np.ndarray, metadata: pd.DataFrame, model_id: str, metric: str = ..., kind: str = ...,
        **params: int,
    ) -> CatalogueIndex: ...

    @overload
    @classmethod
    def build(
        cls, vectors: np.ndarray, metadata: pd.DataFrame, model_id: str, metric: str = ..., kind: str = ..., *,
        backend: str = ..., storage: Storage | None = ..., **params: int,
    ) -> CatalogueIndex: ...

    @classmethod
    def build(
        cls,
        vectors: np.ndarray,
        metadata: pd.DataFrame,
        model_id: str,
        metric: str = "ip",
        kind: str = "flat",
        **options: Any,
    ) -> CatalogueIndex:
        """Index ``vectors`` (row i describes ``metadata`` row i).

        Args:
            vectors: ``(n, d)`` embeddings, L2-normalised here for ``ip``. A C-contiguous float32 array that needs
                no normalisation is kept without a copy by ``faiss`` (at 10^6 x 1280 a copy is 5 GB), so do not
                modify it later.
            metadata: ``n`` rows with a unique, non-empty ``item_id`` column; every other column is a filterable
                field. Values are stored as text.
            model_id: Identity of the embedding model (e.g. backbone, weights id and checkpoint hash), checked by
                :meth:`load` so that queries and catalogue always come from the same model.
            metric: ``"ip"`` (cosine similarity) or ``"l2"``.
            kind: A key of :data:`~fashionlens.index.kinds.INDEX_KINDS`: ``flat``, ``ivf``, ``ivfpq`` or ``hnsw``.
            backend: ``"faiss"`` (in-process, saved as files) or ``"milvus"`` (a Milvus collection).
            storage: Where the backend keeps the vectors: for ``milvus``, ``{"uri": ..., "collection": ...}``, both
                optional (see :class:`~fashionlens.index.milvus_backend.MilvusCatalogueIndex`); ``faiss`` takes none.
            **params: Index parameters overriding the kind's defaults (``nlist``, ``nprobe``, ``m``, ``nbits``,
                ``k_factor``, ``M``, ``efConstruction``, ``efSearch``; see :mod:`fashionlens.index.kinds`). IVF
                kinds train on a seeded random sample of the vectors.

        Raises:
            CatalogueIndexError: Bad vectors, metadata, model id, metric, kind, backend, storage or parameters, or
                the backend could not store them (nothing is left behind then).
        """
        backend, storage = options.pop("backend", "faiss"), options.pop("storage", None) or {}
        params: dict[str, Any] = options
        if not isinstance(model_id, str) or not model_id.strip():
            raise CatalogueIndexError(f"model_id must be a non-empty string, got {model_id!r}")
        if not isinstance(storage, dict) or not all(isinstance(v, str) for v in storage.values()):
            raise CatalogueIndexError(f"storage must be a dict of strings, got {storage!r}")
        implementation = _backend(backend)
        prepared, items, manifest = prepare_build(vectors, metadata, model_id, metric, kind, backend, params)
        return implementation._create(prepared, items, manifest, dict(storage))

    @classmethod
    def load(
        cls, directory: str | os.PathLike[str], expected_model_id: str | None = None, expected_dim: int | None = None
    ) -> CatalogueIndex:
        """Load an index saved with :meth:`save`, whichever backend holds it.

        Args:
            directory: The index directory.
            expected_model_id: When given, the model id the index must have been built with (the model that will
                embed the queries).
            expected_dim: When given, the vector dimension the index must have.

        Raises:
            CatalogueIndexError: Missing directory or file, corrupt or inconsistent file (named), a model or
                dimension mismatch, or (``milvus``) an unreachable server or a missing or foreign collection.
                Mismatches are detected from ``index.json`` before loading anything large.
        """
        root = Path(directory)
        if not root.is_dir():
            raise CatalogueIndexError(f"catalogue index directory not found: {root}")
        manifest = IndexManifest.read(root / MANIFEST_FILE)
        models = {role: Path(os.path.normpath(root / path)) for role, path in manifest.models.items()}
        if expected_model_id is not None and manifest.model_id != expected_model_id:
            raise CatalogueIndexError(
                f"catalogue index {root} was built with embedding model {manifest.model_id!r}, not "
                f"{expected_model_id!r}; {model_fix(models.get('embedder'))}"
            )
        if expected_dim is not None and manifest.dim != expected_dim:
            raise CatalogueIndexError(
                f"catalogue index {root} holds {manifest.dim}-dimensional vectors, but {expected_dim} were expected"
            )
        if manifest.backend not in CatalogueIndex._backends:
            raise CatalogueIndexError(
                f"corrupt catalogue index file {root / MANIFEST_FILE}: unknown backend {manifest.backend!r}"
            )
        index = _backend(manifest.backend)._open(root, manifest, read_items(root, manifest))
        index._models = models
        return index

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write the index to ``directory`` atomically (a failed save leaves the previous contents intact).

        Returns:
            The directory.

        Raises:
            CatalogueIndexError: Writing failed.
        """
        write_index_dir(directory, self._manifest(Path(directory)), self._items, self._write)
        return Path(directory)

    @property
    def model_id(self) -> str:
        """Identity of the embedding model the vectors come from."""
        return self._model_id

    @property
    def models(self) -> dict[str, Path]:
        """Directories of the models to search with, by role (``embedder``, ``tagger``); empty when none recorded."""
        return dict(self._models)

    def record_model(self, role: str, directory: str | os.PathLike[str] | None) -> None:
        """Record where the ``role`` model lives (``None``: forget it); :meth:`save` writes it into ``index.json``."""
        if directory is None:
            self._models.pop(role, None)
        else:
            self._models[role] = Path(directory).absolute()

    @property
    def dim(self) -> int:
        """Vector dimension."""
        return self._dim

    @property
    def metric(self) -> str:
        """``"ip"`` or ``"l2"``."""
        return self._metric

    @property
    def kind(self) -> str:
        """Index kind name."""
        return self._kind.name

    @property
    def params(self) -> Params:
        """Resolved index parameters (a copy)."""
        return dict(self._params)

    def info(self) -> dict[str, Any]:
        """Summary for logs and the service: count, dim, metric, kind, params, backend, model id, fields with
        distinct counts. Never where the backend stores the vectors (a server address is not for clients)."""
        fields = {
            name: int(pc.count_distinct(self._items.column(name)).as_py())
            for name in self._items.column_names
            if name != ITEM_ID
        }
        return {
            "count": len(self),
            "dim": self._dim,
            "metric": self._metric,
            "kind": self._kind.name,
            "params": self.params,
            "backend": self.backend,
            "model_id": self._model_id,
            "fields": fields,
            "models": {role: str(path) for role, path in self._models.items()},
        }

    def add(self, vectors: np.ndarray, metadata: pd.DataFrame) -> None:
        """Add items (same contract as :meth:`build`); IVF kinds keep their trained cells.

        Raises:
            CatalogueIndexError: Bad vectors or metadata, or an ``item_id`` already in the index (nothing is added).
        """
        prepared = prepare_vectors(np.asarray(vectors), self._dim, self._metric, "added vectors")
        items = prepare_items(metadata, len(prepared))
        clash = next((item_id for item_id in items[ITEM_ID].to_pylist() if item_id in self._row_of), None)
        if clash is not None:
            raise CatalogueIndexError(f"item_id {clash!r} is already in the catalogue index")
        self._insert(prepared, items)
        self._set_items(pa.concat_tables([self._items, items], promote_options="default").combine_chunks())

    def remove(self, item_ids: Collection[str]) -> None:
        """Remove items.

        Raises:
            CatalogueIndexError: An id is not in the index (nothing is removed then).
        """
        rows = np.unique(self._rows_of(item_ids, strict=True))
        if not len(rows):
            return
        keep = np.ones(len(self), dtype=bool)
        keep[rows] = False
        self._delete(rows, keep)
        self._set_items(self._items.filter(pa.array(keep)))

    def search(
        self,
        queries: np.ndarray,
        k: int = 10,
        filters: Filters | None = None,
        exclude: Collection[str] | None = None,
        nprobe: int | None = None,
        ef: int | None = None,
    ) -> list[list[SearchHit]]:
        """The ``k`` nearest catalogue items to each query, best first.

        Args:
            queries: ``(m, d)`` query embeddings from the index's model (normalised here for ``ip``).
            k: Hits per query. Fewer are returned when fewer items pass the filters.
            filters: Field -> accepted value(s), applied inside the search (see :mod:`fashionlens.index.filters`).
                An unknown field is an error; a value nothing has gives no hits. Values are compared as text.
            exclude: Item ids never to return (ids not in the index are ignored).
            nprobe: IVF cells to scan (overrides the index default; more is slower and more accurate).
            ef: HNSW candidate list size (overrides ``efSearch``; more is slower and more accurate).

        Raises:
            CatalogueIndexError: ``k`` < 1, wrong query shape, unknown filter field, or a knob the kind lacks.
        """
        k = positive_int("k", k)
        prepared = prepare_vectors(np.asarray(queries), self._dim, self._metric, "queries")
        knobs = self._kind.search_knobs(self._params, nprobe, ef)
        accepted = {
            field: [str(value) for value in ([values] if isinstance(values, str) else values)]
            for field, values in (filters or {}).items()
        }
        allowed = self._filter.mask(accepted)  # checks the fields
        excluded = np.unique(self._rows_of(exclude or (), strict=False))
        if allowed is not None:
            allowed[excluded] = False
            rows = np.flatnonzero(allowed)
            if not len(prepared) or not len(rows):
                return [[] for _ in range(len(prepared))]
            if len(rows) <= EXACT_SUBSET_MAX:
                return self._hits(*self._exact(prepared, rows, min(k, len(rows))))
            return self._search(prepared, min(k, len(rows)), accepted, rows, excluded, knobs)
        if not len(prepared) or len(excluded) == len(self):
            return [[] for _ in range(len(prepared))]
        return self._search(prepared, min(k, len(self) - len(excluded)), accepted, None, excluded, knobs)

    def search_by_id(
        self,
        item_id: str,
        k: int = 10,
        filters: Filters | None = None,
        nprobe: int | None = None,
        ef: int | None = None,
    ) -> list[SearchHit]:
        """Items most similar to catalogue item ``item_id``, never including the item itself.

        Raises:
            CatalogueIndexError: ``item_id`` is not in the index, or as :meth:`search`.
        """
        row = int(self._rows_of([item_id], strict=True)[0])
        return self.search(self._vectors(np.array([row])), k, filters, exclude=[item_id], nprobe=nprobe, ef=ef)[0]

    # -------------------------------------------------------------------------------------------- backend hooks
    @classmethod
    def _create(cls, vectors: np.ndarray, items: pa.Table, manifest: IndexManifest, storage: Storage) -> Self:
        """A new index of validated ``vectors`` (normalised for ``ip``) and ``items``; leaves nothing on failure."""
        raise NotImplementedError

    @classmethod
    def _open(cls, root: Path, manifest: IndexManifest, items: pa.Table) -> Self:
        """The index saved in ``root`` (whose ``index.json`` and item table are already read and checked)."""
        raise NotImplementedError

    def _storage(self, directory: Path) -> Storage:
        """What ``index.json`` records about where the vectors live, for a save to ``directory``."""
        return {}

    def _write(self, tmp: Path) -> None:
        """Write the backend's files into ``tmp``, the temporary directory that becomes the saved index."""
        raise NotImplementedError

    def _insert(self, vectors: np.ndarray, items: pa.Table) -> None:
        """Store validated new ``vectors`` and ``items`` (ids known to be new); all or nothing."""
        raise NotImplementedError

    def _delete(self, rows: np.ndarray, keep: np.ndarray) -> None:
        """Drop the items at ``rows`` (``keep`` is the mask of the others); all or nothing."""
        raise NotImplementedError

    def _search(
        self,
        queries: np.ndarray,
        k: int,
        filters: dict[str, list[str]],
        allowed: np.ndarray | None,
        excluded: np.ndarray,
        knobs: Params,
    ) -> list[list[SearchHit]]:
        """Top-``k`` hits per query (``k`` at most the candidates) among items passing ``filters`` (checked fields,
        values as text) -- the rows ``allowed``, exclusions already removed, or ``None`` when nothing is filtered
        -- and not at rows ``excluded``, searched with ``knobs`` (see
        :meth:`~fashionlens.index.kinds.IndexKind.search_knobs`)."""
        raise NotImplementedError

    def _vectors(self, rows: np.ndarray) -> np.ndarray:
        """The stored vectors (as indexed) of the items at ``rows``, in that order."""
        raise NotImplementedError

    # ------------------------------------------------------------------------------------------- shared helpers
    def _manifest(self, directory: Path) -> IndexManifest:
        models = {role: recorded_path(path, directory.absolute()) for role, path in self._models.items()}
        return IndexManifest(
            self._model_id, self._dim, self._metric, self._kind.name, self.params, len(self), __version__,
            models=models, backend=self.backend, storage=self._storage(directory),
        )

    def _exact(self, queries: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` (``k <= len(rows)``) scores and rows of ``queries`` among the stored vectors of ``rows``."""
        scores, local = faiss.knn(queries, self._vectors(rows), k, metric=METRICS[self._metric])
        return scores, rows[local]



def _backend(name: str) -> type[CatalogueIndex]:
    """The index class registered for backend ``name``, naming the known ones when it is not one of them."""
    if not isinstance(name, str) or name not in CatalogueIndex._backends:
        known = ", ".join(CatalogueIndex._backends)
        raise CatalogueIndexError(f"unknown catalogue index backend {name!r}; known: {known}")
    return CatalogueIndex._backends[name]


def model_fix(recorded: Path | None, option: str = "--model") -> str:
    """How to fix an embedding-model mismatch: the index's recorded embedder when it has one, else ``option``
    (the command line's ``--model``; the service's ``--embedder``)."""
    if recorded is not None:
        return f"search it with the embedder it records, {recorded} (omit {option}, or pass {option} {recorded})"
    return f"pass the embedder directory that built it ({option} DIR), or rebuild the index with the current model"
