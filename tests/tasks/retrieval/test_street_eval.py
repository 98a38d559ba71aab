"""Real street-to-shop scoring: relevance through the domain mapping, P@K / hit-rate@K / mAP@K at two levels."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fashionlens.data.domains import DomainMapping
from fashionlens.data.records import Manifest
from fashionlens.errors import DataError
from fashionlens.tasks.retrieval import StreetRelevance, catalogue_metadata, evaluate_street_search, street_queries

MAPPING = DomainMapping.from_dict({
    "street": {"category": "category"}, "catalogue": {"category": "articleType", "colour": "baseColour"},
    "categories": {"Shirt": ["Shirts"], "Dress": ["Dresses", "Tunics"]},
    "colours": {"black": ["Black"], "red": ["Red", "Maroon"]}})
CATALOGUE = pd.DataFrame({"item_id": ["s1", "s2", "d1", "t1", "j1"],
                          "articleType": ["Shirts", "Shirts", "Dresses", "Tunics", "Jeans"],
                          "baseColour": ["Black", "Red", "Maroon", "Black", "Black"]})


def street() -> Manifest:
    return Manifest(pd.DataFrame({
        "path": ["q1.jpg", "q2.jpg", "q3.jpg", "q4.jpg"], "class:category": ["Shirt", "Dress", None, "Dress"],
        "tag:black": [1.0, 0.0, 1.0, np.nan], "tag:red": [0.0, 1.0, 0.0, np.nan],
        "split": ["test", "test", "test", "val"]}), name="street")


def test_queries_are_the_split_photos_with_a_mapped_category() -> None:
    queries = street_queries(street(), MAPPING, "test")
    assert queries.frame["path"].tolist() == ["q1.jpg", "q2.jpg"]
    assert len(street_queries(street(), MAPPING, None)) == 3
    with pytest.raises(DataError, match="split 'train'"):
        street_queries(street(), MAPPING, "train")


def test_scores_by_hand() -> None:
    queries = street_queries(street(), MAPPING, None)  # q1 Shirt/black, q2 Dress/red, q4 Dress/no colour
    relevance = StreetRelevance.build(queries, CATALOGUE, MAPPING)
    assert relevance.category.sum(axis=1).tolist() == [2, 2, 2]
    assert relevance.colour.sum(axis=1).tolist() == [1, 1, 0]
    assert relevance.has_colour.tolist() == [True, True, False]
    ranked = [["j1", "s2", "s1"], ["d1", "t1", "s1"], ["j1"]]
    scores = relevance.score(ranked, k=2)
    # category: q1 [no, yes] P=.5; q2 [yes, yes] P=1; q4 [no, pad] P=0
    assert scores["category P@2"] == pytest.approx((0.5 + 1 + 0) / 3)
    assert scores["category hit@2"] == pytest.approx(2 / 3)
    # AP@2: q1 (1/2)/2, q2 (1+1)/2, q4 0
    assert scores["category mAP@2"] == pytest.approx((0.25 + 1 + 0) / 3)
    # colour level, q1 and q2 only: q1 wants a black shirt (s1, not in top 2), q2 a red/maroon dress (d1 first)
    assert scores["category+colour P@2"] == pytest.approx((0 + 0.5) / 2)
    assert scores["category+colour hit@2"] == pytest.approx(0.5)
    assert scores["queries"] == 3 and scores["colour queries"] == 2


def test_perfect_search_scores_one_and_foreign_ids_fail() -> None:
    def perfect(queries: Manifest) -> list[list[str]]:
        return [["s1", "s2"] if category == "Shirt" else ["d1", "t1"]
                for category in queries.frame["class:category"]]

    scores = evaluate_street_search(perfect, street(), CATALOGUE, MAPPING, split="test", k=2)
    assert scores["category P@2"] == 1.0 and scores["category mAP@2"] == 1.0
    with pytest.raises(DataError, match="'zz', which is not in the evaluated catalogue"):
        evaluate_street_search(lambda q: [["zz"]] * len(q), street(), CATALOGUE, MAPPING, split="test", k=2)


def test_catalogue_lacking_a_mapped_value_is_refused() -> None:
    with pytest.raises(DataError, match="'Tunics'"):
        StreetRelevance.build(street_queries(street(), MAPPING, None), CATALOGUE[CATALOGUE.item_id != "t1"], MAPPING)


def test_catalogue_keys_are_unique_and_fields_are_bare_names() -> None:
    manifest = Manifest(pd.DataFrame({"path": ["/a/x1.jpg", "/a/x2.jpg", "/a/y.jpg", "/a/loose.jpg"],
                                      "item_id": ["x", "x", "y", ""], "class:articleType": ["Tops", "Tops", "Bags", ""],
                                      "meta:year": ["2011", "2012", "2013", ""]}))
    metadata = catalogue_metadata(manifest)
    assert metadata["item_id"].tolist() == ["x#0", "x#1", "y", "loose"]
    assert metadata["product_id"].tolist() == ["x", "x", "y", "loose"]
    assert metadata["articleType"].tolist()[:3] == ["Tops", "Tops", "Bags"] and "year" in metadata
