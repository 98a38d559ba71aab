"""The ``milvus`` catalogue backend: the vectors in a Milvus collection, embedded (Milvus Lite) or on a server.

Where the collection lives is the ``uri`` (``storage`` in ``index.json``):

* none given: a Milvus Lite database (Milvus's API over an embedded, in-process engine) saved inside the index
  directory as ``milvus.db`` and copied along with it, so the directory stays self-contained like a ``faiss`` one;
* a path ending in ``.db``: a Milvus Lite database there, shared by every index that names it;
* ``http(s)://host:19530`` (or ``tcp://``, ``grpc://``, ``unix:``): a Milvus server or cluster, shared by every
  replica. The token, if the server wants one, comes from ``$FASHIONLENS_MILVUS_TOKEN`` and is never written down.

The collection holds ``item_id`` (primary key), ``vector``, one nullable VARCHAR field per metadata column known
at build time (``f0``, ``f1``...: column names need not be Milvus identifiers) and ``meta``, a JSON object with the
columns that :meth:`~CatalogueIndex.add` introduces later (Milvus Lite cannot add fields to a collection; filtering
a JSON key is ~10x slower there than a VARCHAR field). Collection properties record the model id, metric and
dimension, so an ``index.json`` pointing at a collection of another embedder is refused on load, and the column ->
field mapping. The index directory keeps ``items.parquet`` as for ``faiss``: hits take their metadata from it and
:meth:`CatalogueIndex.add`/``remove`` keep it in step; ``save`` after them (the collection itself changes at once,
and a load refuses a collection whose size disagrees with ``index.json``).

Filters become Milvus boolean expressions (:mod:`~fashionlens.index._milvus_expr`) in which every value, field name
and item id is an escaped string literal, so no client-given text can add expression syntax (ids never go through
pymilvus' own ``ids=`` arguments, which do not escape). Searches, inserts and deletes use the ``Strong``
consistency level: a search sees every write acknowledged before it, which is what Milvus Lite offers anyway and
what a catalogue update followed by a search expects. As for ``faiss``, a filter keeping at most
:data:`~fashionlens.index.catalogue.EXACT_SUBSET_MAX` items is scored exactly from those items' vectors.

Index kinds map onto Milvus index types: ``flat`` -> ``FLAT``, ``ivf`` -> ``IVF_FLAT`` (``nlist``; ``nprobe`` at
search, at most ``nlist``), ``hnsw`` -> ``HNSW`` (``M``, ``efConstruction``; ``ef`` at search, at least the number
of hits fetched, as Milvus requires), ``ivfpq`` -> ``IVF_PQ`` (``nlist``, ``m``, ``nbits``; the ``k_factor * k``
shortlist is re-ranked here with the full vectors Milvus returns, as the ``faiss`` backend does) on a server only:
Milvus Lite 3.2 has no IVF_PQ, and the build says so. Not mapped: FAISS's seeded IVF training sample (Milvus trains
each sealed segment's index itself) and HNSW rebuilds on removal (Milvus deletes in place).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
import uuid
import weakref
from pathlib import Path
from typing import Any, Self

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fashionlens.errors import CatalogueIndexError
from fashionlens.index._items import SearchHit
from fashionlens.index._milvus_client import SERVER_SCHEMES, checked_uri, connect, milvus_errors, redacted
from fashionlens.index._milvus_expr import META, expression, id_filter
from fashionlens.index.catalogue import CatalogueIndex, Storage
from fashionlens.index.filters import shown
from fashionlens.index.kinds import Params
from fashionlens.index.store import ITEM_ID, MANIFEST_FILE, MILVUS_LITE_DB, IndexManifest, inconsistent

VECTOR = "vector"
IDENTITY = "fashionlens.identity"
"""Collection property recording the model id, metric and dimension of the vectors (JSON)."""
FIELDS = "fashionlens.fields"
"""Collection property recording which VARCHAR field holds which metadata column (JSON)."""
MAX_TEXT = 65_535
"""Longest text (bytes) a Milvus VARCHAR holds: item ids and metadata values."""
CONSISTENCY = "Strong"
MAX_TOPK = 16_384
"""Milvus returns at most this many hits per query (its ``topk`` limit)."""
BATCH_BYTES = 16 * 2**20
"""Inserts are streamed in batches of about this many bytes of vectors, well under gRPC's 64 MB message limit."""
QUERY_BATCH = 1024
"""Queries per search call, or item ids per vector look-up (Milvus takes at most 16384; smaller batches keep each
reply small)."""

_INDEX_TYPES: dict[str, tuple[str, tuple[str, ...]]] = {
    "flat": ("FLAT", ()),
    "ivf": ("IVF_FLAT", ("nlist",)),
    "ivfpq": ("IVF_PQ", ("nlist", "m", "nbits")),
    "hnsw": ("HNSW", ("M", "efConstruction")),
}
"""Index kind -> Milvus index type and the kind's parameters that Milvus takes under the same name."""
LITE_MISSING = frozenset({"ivfpq"})
"""Kinds whose Milvus index type Milvus Lite 3.2 lacks (its IVF_PQ is "reserved for a future phase")."""
LITE_KINDS = tuple(kind for kind in _INDEX_TYPES if kind not in LITE_MISSING)
_METRIC_TYPES = {"ip": "IP", "l2": "L2"}
_COLLECTION_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,254}")


class MilvusCatalogueIndex(CatalogueIndex):
    """Item table here, vectors in a Milvus collection (see the module docstring for ``uri`` and the mapping).

    Build with ``CatalogueIndex.build(..., backend="milvus", storage={"uri": ..., "collection": ...})``; both keys
    are optional (an embedded database in the index directory; a fresh ``fashionlens_<random>`` collection name).
    A build never reuses an existing collection, and a failed build drops what it created.
    """

    backend = "milvus"

    def __init__(
        self, manifest: IndexManifest, items: pa.Table, client: Any, uri: str, collection: str, local: bool
    ) -> None:
        super().__init__(manifest, items)
        self._client = client
        self._uri = uri
        self._collection = collection
        self._local = local  # a Lite database that belongs to (and is saved with) the index directory
        self._fields: dict[str, str] = {}  # metadata column -> its VARCHAR field (other columns live in META)
        self._scratch: Path | None = None  # where a built, not yet saved, local database lives

    @classmethod
    def _create(cls, vectors: np.ndarray, items: pa.Table, manifest: IndexManifest, storage: Storage) -> Self:
        unknown = sorted(set(storage) - {"uri", "collection"})
        if unknown:
            raise CatalogueIndexError(f"unknown milvus storage option(s) {', '.join(unknown)}; known: uri, collection")
        collection = storage.get("collection") or f"fashionlens_{uuid.uuid4().hex[:16]}"
        if not _COLLECTION_NAME.fullmatch(collection):
            raise CatalogueIndexError(
                f"milvus collection name {shown(collection)} must be a letter or _ then letters, digits or _"
            )
        scratch = None
        if manifest.kind in LITE_MISSING and not storage.get("uri", "").startswith(SERVER_SCHEMES):
            raise CatalogueIndexError(
                f"Milvus Lite has no {_INDEX_TYPES[manifest.kind][0]} index; use kind {', '.join(LITE_KINDS)} "
                "with Milvus Lite, or a Milvus server (uri http://host:19530)"
            )
        if storage.get("uri"):
            uri, local = checked_uri(storage["uri"]), False
        else:
            scratch = Path(tempfile.mkdtemp(prefix="fashionlens-milvus-"))
            uri, local = str(scratch / MILVUS_LITE_DB), True
        try:
            client = connect(uri)
            index = cls(manifest, items, client, uri, collection, local)
            if scratch is not None:  # removed by save(), or with the index if it is never saved
                index._scratch = scratch
                weakref.finalize(index, shutil.rmtree, scratch, ignore_errors=True)
            with milvus_errors("build", uri):
                if client.has_collection(collection):
                    raise CatalogueIndexError(
                        f"milvus collection {collection!r} already exists at {redacted(uri)}; a build never "
                        "overwrites one: choose another collection name or drop it"
                    )
            try:
                index._create_collection()
                index._upload(vectors, items)
            except BaseException:
                with contextlib.suppress(Exception):
                    client.drop_collection(collection)
                raise
        except BaseException:
            if scratch is not None:
                shutil.rmtree(scratch, ignore_errors=True)
            raise
        return index

    @classmethod
    def _open(cls, root: Path, manifest: IndexManifest, items: pa.Table) -> Self:
        uri, collection = manifest.storage.get("uri"), manifest.storage.get("collection")
        if not uri or not collection:
            raise CatalogueIndexError(f"corrupt catalogue index file {root / MANIFEST_FILE}: no milvus uri/collection")
        local = not uri.startswith(SERVER_SCHEMES) and not Path(uri).is_absolute()
        if local:
            path = root.resolve() / uri
            if not path.exists():
                raise CatalogueIndexError(f"missing catalogue index file {path}")
            uri = str(path)
        index = cls(manifest, items, connect(uri), uri, collection, local)
        index._check_collection(root, manifest)
        return index

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """As :meth:`CatalogueIndex.save`; an embedded database is copied into the directory, and this index then
        uses that copy (any scratch database of a build is deleted)."""
        if not self._local:
            return super().save(directory)
        try:
            saved = super().save(directory)  # _write closes the client to copy a consistent database
        except BaseException:
            self._reconnect(self._uri)
            raise
        self._reconnect(str(saved.resolve() / MILVUS_LITE_DB))
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None
        return saved

    def _reconnect(self, uri: str) -> None:
        """Use the database at ``uri`` (a reopened database starts with its collections released)."""
        self._client, self._uri = connect(uri), uri
        with milvus_errors("load", uri):
            self._client.load_collection(self._collection)

    def _storage(self, directory: Path) -> Storage:
        return {"uri": MILVUS_LITE_DB if self._local else self._uri, "collection": self._collection}

    def _write(self, tmp: Path) -> None:
        if self._local:
            self._client.close()
            shutil.copytree(self._uri, tmp / MILVUS_LITE_DB)

    def _insert(self, vectors: np.ndarray, items: pa.Table) -> None:
        try:
            self._upload(vectors, items)
        except BaseException:
            with contextlib.suppress(Exception):  # all or nothing: take back the batches that went in
                self._client.delete(self._collection, filter=id_filter(items.column(ITEM_ID).to_pylist()))
            raise

    def _delete(self, rows: np.ndarray, keep: np.ndarray) -> None:
        ids = self._items.column(ITEM_ID).take(pa.array(rows)).to_pylist()
        with milvus_errors("delete", self._uri):
            self._client.delete(self._collection, filter=id_filter(ids), consistency_level=CONSISTENCY)

    def _vectors(self, rows: np.ndarray) -> np.ndarray:
        ids = self._items.column(ITEM_ID).take(pa.array(rows, type=pa.int64())).to_pylist()
        found: dict[str, Any] = {}
        for start in range(0, len(ids), QUERY_BATCH):
            with milvus_errors("get", self._uri):
                for entity in self._client.query(
                    self._collection,
                    filter=id_filter(ids[start : start + QUERY_BATCH]),
                    output_fields=[VECTOR],
                    consistency_level=CONSISTENCY,
                ):
                    found[entity[ITEM_ID]] = entity[VECTOR]
        missing = next((item_id for item_id in ids if item_id not in found), None)
        if missing is not None:
            raise CatalogueIndexError(
                f"item_id {missing!r} is in the item table but not in milvus collection {self._collection!r}; "
                "the collection was changed by another writer: reload or rebuild the index"
            )
        return np.asarray([found[item_id] for item_id in ids], dtype=np.float32).reshape(len(ids), self._dim)

    def _search(
        self,
        queries: np.ndarray,
        k: int,
        filters: dict[str, list[str]],
        allowed: np.ndarray | None,
        excluded: np.ndarray,
        knobs: Params,
    ) -> list[list[SearchHit]]:
        # The filter runs inside the Milvus search, as a boolean expression (the allowed rows are not sent).
        if k > MAX_TOPK:
            raise CatalogueIndexError(f"k={k} is more than the {MAX_TOPK} hits Milvus returns per query")
        fetch = min(self._kind.shortlist(self._params, k), len(self), MAX_TOPK)
        params: dict[str, int] = {}
        if "nprobe" in knobs:
            params["nprobe"] = min(knobs["nprobe"], self._params["nlist"])  # Milvus refuses more cells than exist
        if "ef" in knobs:
            params["ef"] = max(knobs["ef"], fetch)  # Milvus refuses ef < limit; FAISS raises it silently
        excluded_ids = self._items.column(ITEM_ID).take(pa.array(excluded, type=pa.int64())).to_pylist()
        rerank = fetch > k
        scores = np.zeros((len(queries), k), dtype=np.float32)
        rows = np.full((len(queries), k), -1, dtype=np.int64)
        for start in range(0, len(queries), QUERY_BATCH):
            batch = queries[start : start + QUERY_BATCH]
            with milvus_errors("search", self._uri):
                results = self._client.search(
                    self._collection,
                    data=batch,
                    limit=fetch,
                    filter=expression(filters, excluded_ids, self._fields),
                    output_fields=[VECTOR] if rerank else [],
                    search_params={"metric_type": _METRIC_TYPES[self._metric], "params": params},
                    consistency_level=CONSISTENCY,
                )
            for i, (query, found) in enumerate(zip(batch, results, strict=True), start=start):
                ranked = self._ranked(query, list(found), k, rerank)
                scores[i, : len(ranked)] = [score for score, _ in ranked]
                rows[i, : len(ranked)] = [row for _, row in ranked]
        return self._hits(scores, rows)

    def _ranked(self, query: np.ndarray, found: list[Any], k: int, rerank: bool) -> list[tuple[float, int]]:
        """(score, row) of one query's best ``k`` hits; a shortlist is re-scored exactly with the returned vectors.

        Hits whose item is not in this index's item table (written by another writer since it was loaded) are
        dropped rather than returned without metadata.
        """
        known = [(hit, self._row_of[hit[ITEM_ID]]) for hit in found if hit[ITEM_ID] in self._row_of]
        if not rerank:
            return [(float(hit["distance"]), row) for hit, row in known]
        if not known:
            return []
        vectors = np.asarray([hit["entity"][VECTOR] for hit, _ in known], dtype=np.float32)
        exact = vectors @ query if self._metric == "ip" else ((vectors - query) ** 2).sum(axis=1)
        order = np.argsort(-exact if self._metric == "ip" else exact, kind="stable")[:k]
        return [(float(exact[j]), known[j][1]) for j in order]

    def _create_collection(self) -> None:
        from pymilvus import DataType

        client = self._client
        self._fields = {column: f"f{i}" for i, column in enumerate(self._items.column_names[1:])}
        with milvus_errors("create collection", self._uri):
            schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
            schema.add_field(ITEM_ID, DataType.VARCHAR, is_primary=True, max_length=MAX_TEXT)
            schema.add_field(VECTOR, DataType.FLOAT_VECTOR, dim=self._dim)
            for field in self._fields.values():
                schema.add_field(field, DataType.VARCHAR, max_length=MAX_TEXT, nullable=True)
            schema.add_field(META, DataType.JSON)
            index_type, names = _INDEX_TYPES[self._kind.name]
            build_params: dict[str, Any] = {name: self._params[name] for name in names}
            index_params = client.prepare_index_params()
            # pymilvus 3 sends each build parameter as its own key, which a Milvus server reads, but Milvus Lite 3.2
            # only reads the older single "params" key and would silently build with its defaults (nlist=128...);
            # sending both serves both (a server accepts the "params" key too).
            index_params.add_index(
                VECTOR,
                index_type=index_type,
                metric_type=_METRIC_TYPES[self._metric],
                params={**build_params, "params": dict(build_params)} if build_params else {},
            )
            client.create_collection(
                self._collection,
                schema=schema,
                index_params=index_params,
                consistency_level=CONSISTENCY,
                properties={IDENTITY: json.dumps(self._identity()), FIELDS: json.dumps(self._fields)},
            )

    def _upload(self, vectors: np.ndarray, items: pa.Table) -> None:
        """Insert ``vectors`` and ``items`` in batches (streamed: one batch of rows in memory at a time), then flush."""
        for column in items.column_names:
            lengths = pc.max(pc.binary_length(items.column(column))).as_py()
            if lengths is not None and lengths > MAX_TEXT:
                raise CatalogueIndexError(
                    f"metadata column {shown(column)} has a value longer than the {MAX_TEXT} bytes Milvus holds"
                )
        ids = items.column(ITEM_ID).to_pylist()
        named = items.select([column for column in items.column_names if column in self._fields])
        named = named.rename_columns([self._fields[column] for column in named.column_names])
        extra = items.select([c for c in items.column_names if c != ITEM_ID and c not in self._fields])
        batch = max(1, BATCH_BYTES // (4 * self._dim))
        for start in range(0, len(ids), batch):
            stop = min(start + batch, len(ids))
            rows = [
                {ITEM_ID: item_id, VECTOR: vector, **fields, META: others}
                for item_id, vector, fields, others in zip(
                    ids[start:stop],
                    vectors[start:stop],
                    named.slice(start, stop - start).to_pylist(),
                    extra.slice(start, stop - start).to_pylist(),
                    strict=True,
                )
            ]
            with milvus_errors("insert", self._uri):
                self._client.insert(self._collection, rows)
        # Seal the new rows into segments, which starts building their vector index (in the background: until it
        # is built, Milvus searches those segments by brute force, exactly but slower).
        with milvus_errors("flush", self._uri):
            self._client.flush(self._collection)

    def _identity(self) -> dict[str, Any]:
        return {"fashionlens": 1, "model_id": self._model_id, "metric": self._metric, "dim": self._dim}

    def _check_collection(self, root: Path, manifest: IndexManifest) -> None:
        """Refuse a missing collection, one made by another embedder or metric, or one whose size disagrees."""
        where = f"milvus collection {self._collection!r} at {redacted(self._uri)}"
        with milvus_errors("load", self._uri):
            if not self._client.has_collection(self._collection):
                raise CatalogueIndexError(f"{where} not found; rebuild the index {root}")
            properties = self._client.describe_collection(self._collection).get("properties") or {}
            try:
                identity, fields = json.loads(properties.get(IDENTITY, "")), json.loads(properties.get(FIELDS, ""))
            except ValueError:
                identity = fields = None
            if not isinstance(identity, dict) or identity.get("fashionlens") != 1 or not isinstance(fields, dict):
                raise CatalogueIndexError(f"{where} was not built by fashionlens; point {root} at its own collection")
            if identity != self._identity():
                raise CatalogueIndexError(
                    f"{where} was built with embedding model {identity.get('model_id')!r} ({identity.get('metric')}, "
                    f"{identity.get('dim')}-d), but {root / MANIFEST_FILE} says {self._model_id!r} "
                    f"({self._metric}, {self._dim}-d); rebuild the index"
                )
            self._fields = fields
            self._client.load_collection(self._collection)
            count = self._client.query(
                self._collection, filter="", output_fields=["count(*)"], consistency_level=CONSISTENCY
            )[0]["count(*)"]
        if count != manifest.count:
            inconsistent(Path(f"{where}"), f"holds {count} vectors", manifest)
