"""Which embedder searches an index: the given, the recorded or the fallback one, always checked."""

from __future__ import annotations

from pathlib import Path

import pytest

from fashionlens.catalogue import index_embedder, open_index
from fashionlens.data.records import Manifest
from fashionlens.errors import CatalogueIndexError, ModelError
from fashionlens.tasks.retrieval import Embedder

from .conftest import synthetic_embedder


def test_the_embedder_of_an_index_is_the_given_the_recorded_or_the_fallback_one(
        saved_index: tuple[Path, Embedder, Manifest], tmp_path: Path) -> None:
    directory, embedder, _ = saved_index
    index = open_index(directory)
    assert index_embedder(index, fallback=lambda: embedder) is embedder  # an index without a record
    with pytest.raises(CatalogueIndexError, match=r"records no embedder; pass the embedder .*--model DIR"):
        index_embedder(index)
    embedder.save(tmp_path / "embedder")
    index.record_model("embedder", tmp_path / "embedder")
    assert index_embedder(index).model_id == embedder.model_id
    synthetic_embedder(seed=9).save(tmp_path / "other")
    with pytest.raises(CatalogueIndexError, match=r"search it with the embedder it records, .*/embedder"):
        index_embedder(index, tmp_path / "other")  # --model wins over the record, and is checked
    index.record_model("embedder", tmp_path / "moved-away")
    with pytest.raises(ModelError, match=r"records its embedder at .*moved-away.*--model DIR"):
        index_embedder(index)
