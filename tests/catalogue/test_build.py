"""Opening catalogue indexes: another model's index is refused; a failed edit changes nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from fashionlens.catalogue import check_storage, open_index
from fashionlens.data.records import Manifest
from fashionlens.errors import CatalogueIndexError, ConfigError
from fashionlens.tasks.retrieval import Embedder

from .conftest import synthetic_embedder


def test_index_from_another_model_or_dimension_is_refused(saved_index: tuple[Path, Embedder, Manifest]) -> None:
    directory, embedder, _ = saved_index
    assert len(open_index(directory, embedder)) == 6
    with pytest.raises(CatalogueIndexError, match="built with embedding model"):
        open_index(directory, synthetic_embedder(seed=5))
    with pytest.raises(CatalogueIndexError, match="built with embedding model"):
        open_index(directory, synthetic_embedder(dim=4))
    # the one check names the caller's option in its fix (the service's is --embedder)
    with pytest.raises(CatalogueIndexError, match=r"\(--embedder DIR\)"):
        open_index(directory, synthetic_embedder(seed=5), option="--embedder")


def test_removing_an_unknown_id_changes_nothing(saved_index: tuple[Path, Embedder, Manifest]) -> None:
    directory = saved_index[0]
    index = open_index(directory)
    with pytest.raises(CatalogueIndexError, match="'nope'"):
        index.remove(["b", "nope"])
    assert len(index) == 6 and len(open_index(directory)) == 6


def test_unknown_backends_and_misplaced_storage_are_refused_before_any_embedding() -> None:
    check_storage("faiss")
    check_storage("milvus", {"uri": "catalogue.db"})
    with pytest.raises(ConfigError, match=r"--backend 'annoy' with no storage is invalid: use one of faiss, milvus"):
        check_storage("annoy")
    with pytest.raises(ConfigError, match="--uri and --collection are for milvus"):
        check_storage("faiss", {"uri": "catalogue.db"})
