"""Filter parsing and field checks: the one place the CLI and the service turn ``field=value`` text into filters.

Property-based (Hypothesis): any text either parses or raises the project's one-line error, never anything else.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fashionlens.catalogue import parse_filters as catalogue_parse_filters
from fashionlens.errors import CatalogueIndexError
from fashionlens.index import CatalogueIndex
from fashionlens.index.filters import INTERNAL_FIELDS, check_fields, parse_filters, shown

COLUMNS = ["item_id", "gender", "articleType", "path"]
TEXT = st.text(alphabet=st.characters(codec="utf-8"), max_size=40) | st.sampled_from(
    ["", "=", ",", "gender", "gender=", "=Men", "gender=Men", "gender= , ", "path=/etc/passwd", "item_id=a,b",
     "a=b=c", "gender=Men,,Women", " gender = Men ", "\x00=\x00", "gender=\n", "é=ü"])


@pytest.fixture(scope="module")
def catalogue() -> CatalogueIndex:
    metadata = pd.DataFrame({"item_id": ["a", "b", "c"], "gender": ["Men", "Women", "Men"],
                             "articleType": ["Tshirts", "Tops", "Jeans"], "path": ["/srv/a.jpg"] * 3})
    return CatalogueIndex.build(np.eye(3, 4, dtype=np.float32), metadata, model_id="m")


def assert_one_line(error: CatalogueIndexError) -> None:
    message = str(error)
    assert message and "\n" not in message and len(message) < 400


@given(st.lists(TEXT, max_size=4))
@settings(max_examples=300, deadline=None)
def test_any_text_parses_or_raises_one_line_catalogue_error(expressions: list[str]) -> None:
    for parse in (parse_filters, catalogue_parse_filters):
        try:
            filters = parse(expressions)
        except CatalogueIndexError as error:
            assert_one_line(error)
            continue
        for name, values in (filters or {}).items():
            assert name == name.strip() and name and "=" not in name
            assert values and all(v == v.strip() and v and "," not in v for v in values)


@given(st.lists(TEXT, max_size=3))
@settings(max_examples=200, deadline=None)
def test_catalogue_and_index_refuse_the_same_filters_with_one_line_errors(catalogue: CatalogueIndex,
                                                                        expressions: list[str]) -> None:
    query = np.eye(1, 4, dtype=np.float32)
    try:
        filters = catalogue_parse_filters(expressions, catalogue)  # the CLI's and the service's path
    except CatalogueIndexError as error:
        assert_one_line(error)
        with pytest.raises(CatalogueIndexError):  # parsed alone, the index checks the fields as it searches
            catalogue.search(query, k=3, filters=parse_filters(expressions))
        return
    assert not set(filters or {}) & INTERNAL_FIELDS
    for hit in catalogue.search(query, k=3, filters=filters)[0]:  # accepted by the index too
        assert all(hit.metadata.get(name, hit.item_id) in values for name, values in (filters or {}).items())


@given(st.dictionaries(st.text(min_size=1, max_size=30).filter(lambda t: t.strip() == t and "=" not in t),
                       st.lists(st.text(min_size=1, max_size=10).filter(lambda t: t.strip() == t and "," not in t),
                                min_size=1, max_size=3), max_size=3))
def test_formatted_filters_parse_back(filters: dict[str, list[str]]) -> None:
    assert parse_filters([f"{name}={','.join(values)}" for name, values in filters.items()]) == filters


def test_repeated_fields_add_values_and_spaces_go() -> None:
    assert parse_filters([" gender = Men ", "gender=Women,,", "articleType=Tops"]) == {
        "gender": ["Men", "Women"], "articleType": ["Tops"]}
    assert parse_filters(None) == {} and parse_filters([]) == {}


@pytest.mark.parametrize("expression", ["gender", "gender=", "=Men", "gender= , ", ""])
def test_malformed_expressions_are_named(expression: str) -> None:
    with pytest.raises(CatalogueIndexError, match="must look like field=value"):
        parse_filters([expression])


def test_internal_and_unknown_fields_are_refused_by_name(catalogue: CatalogueIndex) -> None:
    with pytest.raises(CatalogueIndexError, match=r"internal field 'path' cannot be filtered on; known fields: "
                                                  r"item_id, gender, articleType$"):
        check_fields({"path": ["/etc/passwd"]}, COLUMNS)
    with pytest.raises(CatalogueIndexError, match="unknown filter field 'colour'"):
        check_fields({"colour": "Red"}, COLUMNS)
    check_fields({"gender": "Men", "item_id": ["a"]}, COLUMNS)
    for filters in ({"path": "/srv/a.jpg"}, {"path": "/etc/passwd"}):  # the index itself refuses, whatever exists
        with pytest.raises(CatalogueIndexError, match="internal field 'path'"):
            catalogue.search(np.eye(1, 4, dtype=np.float32), k=1, filters=filters)


def test_hostile_names_are_cut_short_in_messages() -> None:
    with pytest.raises(CatalogueIndexError) as raised:
        check_fields({"x" * 100_000: "y"}, COLUMNS)
    assert_one_line(raised.value)
    assert "(100000 characters)" in str(raised.value)
    assert shown("abc") == "'abc'" and shown("\x00\n") == "'\\x00\\n'"
