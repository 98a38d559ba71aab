"""The one filter parser of the CLI and the service: the syntax, then the fields of the index to be searched."""

from __future__ import annotations

from pathlib import Path

import pytest

from fashionlens.catalogue import open_index, parse_filters
from fashionlens.data.records import Manifest
from fashionlens.errors import CatalogueIndexError
from fashionlens.tasks.retrieval import Embedder


def test_filters_are_checked_against_the_index_before_any_search(saved_index: tuple[Path, Embedder, Manifest]) -> None:
    index = open_index(saved_index[0])
    assert parse_filters(["articleType=Tops,Bags", "item_id=a"], index) == {"articleType": ["Tops", "Bags"],
                                                                            "item_id": ["a"]}
    assert parse_filters([], index) is None and parse_filters(None) is None
    with pytest.raises(CatalogueIndexError, match=r"unknown filter field 'colour' cannot be filtered on; known fields: "
                                                  r"item_id, product_id, articleType$"):
        parse_filters(["colour=red"], index)
    with pytest.raises(CatalogueIndexError, match="internal field 'path'"):
        parse_filters(["path=/c/0.jpg"], index)
    assert parse_filters(["colour=red"]) == {"colour": ["red"]}  # no index: the syntax only
    with pytest.raises(CatalogueIndexError, match="must look like field=value"):
        parse_filters(["colour"], index)
