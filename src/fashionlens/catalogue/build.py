"""Building and editing a catalogue index with an :class:`~fashionlens.tasks.retrieval.Embedder`: embed the
catalogue's images (or take a batch job's vectors), record the models that search it, save it; add items later."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from fashionlens.catalogue.embedders import MODEL_OPTION, check_embedder
from fashionlens.data.records import Manifest
from fashionlens.errors import ConfigError
from fashionlens.index import BACKENDS, CatalogueIndex
from fashionlens.tasks.retrieval.model import Embedder
from fashionlens.tasks.retrieval.street_eval import catalogue_metadata


def build_catalogue_index(embedder: Embedder, manifest: Manifest, out_dir: str | Path | None = None,
                          kind: str = "flat", show_progress: bool = False,
                          models: Mapping[str, str | Path] | None = None, backend: str = "faiss",
                          storage: Mapping[str, str] | None = None, **params: int) -> CatalogueIndex:
    """Embed a catalogue and index it (saved atomically to ``out_dir`` when given).

    Args:
        embedder: The model whose vectors go in; its ``model_id`` is recorded so queries from another model fail.
        manifest: Catalogue images (shop photos) with their metadata (see :func:`catalogue_metadata`).
        out_dir: Index directory to write.
        kind: FAISS index kind (see :mod:`fashionlens.index.kinds`).
        show_progress: Draw a progress bar while extracting features.
        models: Model directories to record in the index by role: ``embedder`` (the saved ``embedder``, so that
            the index alone is enough to search it) and ``tagger`` (for attribute-aware search).
        backend: ``faiss`` (in-process, saved as files) or ``milvus`` (a Milvus collection; see
            :class:`~fashionlens.index.CatalogueIndex`).
        storage: For ``milvus``: ``uri`` (a Milvus Lite ``.db`` file or a server URL; default: a Milvus Lite
            database inside ``out_dir``) and ``collection``.
        **params: Index parameters for ``kind``.
    """
    vectors = embedder.embed(manifest, show_progress=show_progress)
    return index_catalogue(vectors, embedder, manifest, out_dir, kind, models, backend=backend, storage=storage,
                           **params)


def index_catalogue(vectors: np.ndarray, embedder: Embedder, manifest: Manifest, out_dir: str | Path | None = None,
                    kind: str = "flat", models: Mapping[str, str | Path] | None = None, backend: str = "faiss",
                    storage: Mapping[str, str] | None = None, **params: int) -> CatalogueIndex:
    """Index a catalogue's precomputed ``embedder`` vectors (rows of ``manifest``), saved to ``out_dir`` when given.

    The one place an index gets its metadata, model id and model record (see :func:`build_catalogue_index`),
    whether the vectors were just computed or read from a batch job's shards.
    """
    index = CatalogueIndex.build(vectors, catalogue_metadata(manifest), embedder.model_id, embedder.metric, kind,
                                 backend=backend, storage=dict(storage or {}), **params)
    for role, directory in (models or {}).items():
        index.record_model(role, directory)
    if out_dir is not None:
        index.save(out_dir)
    return index


def open_index(directory: str | Path, embedder: Embedder | None = None,
               option: str = MODEL_OPTION) -> CatalogueIndex:
    """Load a catalogue index, checking it was built by ``embedder`` when given (:func:`check_embedder`, whose fix
    names ``option``).

    Raises:
        CatalogueIndexError: Missing or corrupt index, or one built by another embedding model.
    """
    index = CatalogueIndex.load(directory)
    if embedder is not None:
        check_embedder(index, embedder, option)
    return index


def add_to_index(index: CatalogueIndex, embedder: Embedder, manifest: Manifest) -> None:
    """Embed and add catalogue images (their keys must be new; see :func:`catalogue_metadata`).

    Raises:
        CatalogueIndexError: The index comes from another model, or a key is already in it.
    """
    check_embedder(index, embedder)
    index.add(embedder.embed(manifest), catalogue_metadata(manifest))


def check_storage(backend: str, storage: Mapping[str, str] | None = None) -> None:
    """Refuse an unknown ``backend``, or ``storage`` settings (``uri``, ``collection``) for one that takes none, before
    any photo is embedded.

    Raises:
        ConfigError: Naming the backends and which take storage settings.
    """
    if backend not in BACKENDS or (storage and backend != "milvus"):
        raise ConfigError(f"--backend {backend!r} with {'--uri/--collection' if storage else 'no storage'} is "
                          f"invalid: use one of {', '.join(BACKENDS)}; --uri and --collection are for milvus")
