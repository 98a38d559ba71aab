"""On-disk layout of a catalogue index directory, written atomically and read back with checks.

A catalogue index directory holds, for every backend:

* ``index.json``: the :class:`IndexManifest` -- which embedding model produced the vectors, their dimension,
  the metric, index kind and parameters, item count, the fashionlens version that wrote it, the backend
  (``faiss`` or ``milvus``) with where its vectors live, and optionally where the models to search it with live
  (so the index alone is enough to search it). It is read first, so a model or dimension mismatch is reported
  before the (possibly multi-GB) index is loaded or a server contacted.
* ``items.parquet``: one row per item: ``item_id`` and the filterable metadata fields, as text. Kept in memory as
  an Arrow table: fetching the metadata of a query's hits takes ~0.05 ms there, versus ~1 ms through pandas.

The ``faiss`` backend adds:

* ``index.faiss``: the FAISS index; its int64 ids are the values in ``ids.npy``.
* ``ids.npy``: int64 FAISS id of each row, strictly ascending (ids survive removals, so they are not row numbers).
* ``vectors.npy``: the float32 ``(count, dim)`` vectors as indexed (L2-normalised for ``ip``). Quantised and graph
  indexes cannot give vectors back exactly, and search by id, exact search of small filtered subsets and HNSW
  rebuilds need them; it is memory-mapped on load, so it costs page cache rather than process memory.

The ``milvus`` backend keeps its vectors in a Milvus collection (``storage`` in ``index.json``: ``uri`` and
``collection``); with Milvus Lite and no ``uri`` given, the database is the folder ``milvus.db`` in the directory.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NoReturn, TypeVar

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from fashionlens.errors import CatalogueIndexError
from fashionlens.index.kinds import INDEX_KINDS, METRICS
from fashionlens.io import atomic_dir, write_json

MANIFEST_FILE = "index.json"
INDEX_FILE = "index.faiss"
IDS_FILE = "ids.npy"
ITEMS_FILE = "items.parquet"
VECTORS_FILE = "vectors.npy"
MILVUS_LITE_DB = "milvus.db"
ITEM_ID = "item_id"
FORMAT = 1

T = TypeVar("T")


@dataclass(frozen=True)
class IndexManifest:
    """What ``index.json`` records about a saved catalogue index.

    Attributes:
        model_id: Identity of the embedding model (backbone, weights, checkpoint hash): vectors from another
            model live in a different space, so searching them against this index would return nonsense.
        dim: Vector dimension.
        metric: ``"ip"`` or ``"l2"``.
        kind: Index kind (a key of :data:`~fashionlens.index.kinds.INDEX_KINDS`).
        params: Resolved index parameters.
        count: Number of items.
        fashionlens_version: Version of fashionlens that wrote the index.
        format: Layout version of the directory.
        backend: Which :class:`~fashionlens.index.CatalogueIndex` implementation holds the vectors (``faiss`` when
            absent, as in directories written before there was a choice).
        storage: Where that backend keeps them (``milvus``: ``uri`` and ``collection``); never credentials.
        models: Where the models to search it with live, by role (``embedder``, ``tagger``): relative to the index
            directory when beside it (a folder moved with its models keeps working), else absolute. Optional:
            indexes written before it existed have none, and older versions ignore it.
    """

    model_id: str
    dim: int
    metric: str
    kind: str
    params: dict[str, int]
    count: int
    fashionlens_version: str
    format: int = FORMAT
    models: dict[str, str] = field(default_factory=dict)
    backend: str = "faiss"
    storage: dict[str, str] = field(default_factory=dict)

    @classmethod
    def read(cls, path: Path) -> IndexManifest:
        """Parse and validate ``path``; any problem is a :class:`CatalogueIndexError` naming the file."""
        raw = read_file(path, lambda p: json.loads(p.read_text(encoding="utf-8")))
        if not isinstance(raw, dict):
            raise CatalogueIndexError(f"corrupt catalogue index file {path}: expected a JSON object")
        expected: dict[str, type] = {
            "model_id": str,
            "dim": int,
            "metric": str,
            "kind": str,
            "params": dict,
            "count": int,
            "fashionlens_version": str,
            "format": int,
        }
        for key, kind in expected.items():
            if not isinstance(raw.get(key), kind):
                raise CatalogueIndexError(f"corrupt catalogue index file {path}: missing or invalid {key!r}")
        if raw["format"] != FORMAT:
            raise CatalogueIndexError(f"catalogue index file {path} has format {raw['format']}, expected {FORMAT}")
        if raw["metric"] not in METRICS or raw["kind"] not in INDEX_KINDS:
            raise CatalogueIndexError(
                f"corrupt catalogue index file {path}: unknown metric {raw['metric']!r} or kind {raw['kind']!r}"
            )
        models = raw.get("models", {})
        if not isinstance(models, dict) or not all(isinstance(v, str) and v for v in models.values()):
            raise CatalogueIndexError(f"corrupt catalogue index file {path}: 'models' must map roles to paths")
        backend, storage = raw.get("backend", "faiss"), raw.get("storage", {})
        if not isinstance(backend, str) or not isinstance(storage, dict) or not all(
            isinstance(value, str) for value in storage.values()
        ):
            raise CatalogueIndexError(f"corrupt catalogue index file {path}: invalid 'backend' or 'storage'")
        return cls(**{key: raw[key] for key in expected}, models=models, backend=backend, storage=storage)


def write_index_dir(
    directory: str | os.PathLike[str],
    manifest: IndexManifest,
    items: pa.Table,
    write_backend: Callable[[Path], None],
) -> None:
    """Write an index directory atomically: on any failure the previous directory is left untouched.

    Args:
        directory: The index directory.
        manifest: Written last, as ``index.json``.
        items: The item table, written as ``items.parquet``.
        write_backend: Writes the backend's own files into the (temporary) directory it is given.

    Raises:
        CatalogueIndexError: Writing failed (disk full, permissions...).
    """
    try:
        with atomic_dir(directory) as tmp:
            pq.write_table(items, tmp / ITEMS_FILE)
            write_backend(tmp)
            write_json(tmp / MANIFEST_FILE, asdict(manifest))
    except (OSError, RuntimeError) as error:
        raise CatalogueIndexError(f"could not save catalogue index to {directory}: {error}") from error


def read_items(directory: Path, manifest: IndexManifest) -> pa.Table:
    """The item table of an index directory, checked against ``manifest`` (count, unique ``item_id``).

    Raises:
        CatalogueIndexError: ``items.parquet`` is missing, unreadable or inconsistent.
    """
    items = read_file(directory / ITEMS_FILE, lambda p: as_item_table(pq.read_table(p)))
    unique = ITEM_ID in items.column_names and pc.count_distinct(items.column(ITEM_ID)).as_py() == items.num_rows
    if items.num_rows != manifest.count or not unique:
        inconsistent(directory / ITEMS_FILE, f"has {items.num_rows} rows or no unique {ITEM_ID!r} column", manifest)
    return items


def write_faiss_files(directory: Path, index: faiss.Index, ids: np.ndarray, vectors: np.ndarray) -> None:
    """Write the ``faiss`` backend's files (index, ids, vectors) into ``directory``."""
    np.save(directory / IDS_FILE, ids)
    np.save(directory / VECTORS_FILE, vectors)
    faiss.write_index(index, str(directory / INDEX_FILE))


def read_faiss_files(directory: Path, manifest: IndexManifest) -> tuple[faiss.Index, np.ndarray, np.ndarray]:
    """The ``faiss`` backend's index, ids and vectors, checked against ``manifest`` and each other.

    Raises:
        CatalogueIndexError: A file is missing, unreadable, or inconsistent; the message names it.
    """
    count, dim = manifest.count, manifest.dim
    index = read_file(directory / INDEX_FILE, lambda p: faiss.read_index(str(p)))
    if (index.ntotal, index.d, index.metric_type) != (count, dim, METRICS[manifest.metric]):
        inconsistent(directory / INDEX_FILE, f"holds {index.ntotal} vectors of dimension {index.d}", manifest)
    ids = read_file(directory / IDS_FILE, np.load)
    if ids.shape != (count,) or ids.dtype != np.int64 or np.any(np.diff(ids) <= 0):
        inconsistent(directory / IDS_FILE, f"holds {ids.shape} {ids.dtype} ids, not {count} ascending int64", manifest)
    vectors = read_file(directory / VECTORS_FILE, lambda p: np.load(p, mmap_mode="r"))
    if vectors.shape != (count, dim) or vectors.dtype != np.float32:
        inconsistent(directory / VECTORS_FILE, f"holds {vectors.shape} {vectors.dtype} vectors", manifest)
    return index, ids, vectors


def as_item_table(table: pa.Table) -> pa.Table:
    """``table`` with every column as Arrow text, so filters, hits and appended batches all see one type."""
    return table.cast(pa.schema([(name, pa.large_string()) for name in table.column_names])).combine_chunks()


def read_file(path: Path, reader: Callable[[Path], T]) -> T:
    """``reader(path)``; a missing or unreadable file is a :class:`CatalogueIndexError` naming it."""
    if not path.exists():
        raise CatalogueIndexError(f"missing catalogue index file {path}")
    try:
        return reader(path)
    except (OSError, ValueError, RuntimeError, pa.ArrowException) as error:
        raise CatalogueIndexError(f"corrupt catalogue index file {path}: {error}") from error


def inconsistent(path: Path, found: str, manifest: IndexManifest) -> NoReturn:
    """Raise the error for a file (or collection) that disagrees with ``index.json``."""
    raise CatalogueIndexError(
        f"catalogue index file {path} {found}, but {MANIFEST_FILE} says {manifest.count} {manifest.metric} vectors "
        f"of dimension {manifest.dim}; rebuild the index"
    )


def recorded_path(model: Path, index_dir: Path) -> str:
    """How ``index.json`` records a model directory: relative when it sits beside the index (the two move
    together, as ``models/index`` and ``models/embedder`` do), absolute otherwise (the index may move alone)."""
    relative = os.path.relpath(model, index_dir)
    return relative if Path(relative).parts.count("..") <= 1 else str(model)
