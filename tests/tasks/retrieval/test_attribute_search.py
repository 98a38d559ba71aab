"""Attribute-aware search on constructed cases: the tagger's category and colours re-rank hits as the mapping says."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fashionlens.data.domains import DomainMapping
from fashionlens.data.records import Manifest
from fashionlens.errors import ConfigError, DataError
from fashionlens.index import CatalogueIndex, SearchHit
from fashionlens.tasks.labels import LabelSpace
from fashionlens.tasks.retrieval import AttributeSteering, AttributeWeights, attribute_search, steering_for_index
from fashionlens.tasks.tagging import Predictions

MAPPING = DomainMapping.from_dict({
    "street": {"category": "category"}, "catalogue": {"category": "articleType", "colour": "baseColour"},
    "categories": {"Shirt": ["Shirts"], "Dress": ["Dresses", "Tunics"]},
    "colours": {"blue": ["Blue", "Navy Blue"], "red": ["Red"]},
}, "test-mapping")
LABELS = LabelSpace(tags=["blue", "collar", "red"], heads={"category": ["Dress", "Shirt"]})
# base order (nearest first): two shirts, then a red dress, a blue dress and a red tunic
CATALOGUE = pd.DataFrame({"item_id": ["s1", "s2", "d-red", "d-blue", "t-red"],
                          "articleType": ["Shirts", "Shirts", "Dresses", "Dresses", "Tunics"],
                          "baseColour": ["Blue", "Navy Blue", "Red", "Blue", "Red"]})
BASE = [[*CATALOGUE["item_id"]]]


def _dress_in_blue() -> Predictions:
    """A photo the tagger reads as a (surely) blue dress."""
    return Predictions(tags=np.array([[0.9, 0.2, 0.05]], dtype=np.float32),
                       heads={"category": np.array([[0.95, 0.05]], dtype=np.float32)})


def _search(weights: AttributeWeights, catalogue: pd.DataFrame = CATALOGUE) -> list[list[str]]:
    steering = AttributeSteering(LABELS, MAPPING, weights)
    search = attribute_search(lambda queries: BASE, lambda queries: _dress_in_blue(), steering, catalogue, k=3)
    return [list(items) for items in search(Manifest(pd.DataFrame({"path": ["q.jpg"]})))]


def test_the_predicted_kind_and_colour_come_first() -> None:
    assert _search(AttributeWeights(category=4.0, colour=0.0))[0] == ["d-red", "d-blue", "t-red"]  # kind only
    assert _search(AttributeWeights(category=4.0, colour=2.0))[0] == ["d-blue", "d-red", "t-red"]  # and colour
    assert _search(AttributeWeights(category=4.0, colour=2.0, shortlist=3))[0] == ["d-red", "s1", "s2"]


def test_zero_weights_keep_the_base_order() -> None:
    assert _search(AttributeWeights(category=0.0, colour=0.0))[0] == BASE[0][:3]


def test_attributes_are_in_catalogue_terms() -> None:
    [seen] = AttributeSteering(LABELS, MAPPING).attributes(_dress_in_blue())
    assert seen.category == ("Dress", pytest.approx(0.95))
    assert seen.kinds == pytest.approx({"Dresses": 0.95, "Tunics": 0.95, "Shirts": 0.05})
    assert seen.shades["Navy Blue"] == pytest.approx(0.9) and seen.shades["Red"] == pytest.approx(0.05)
    assert [tag for tag, _ in seen.colours] == ["blue"]  # red is below the (0.5) threshold
    described = seen.describe(MAPPING, AttributeWeights())
    assert described["category"]["catalogue"] == ["Dresses", "Tunics"]
    assert described["colours"][0]["catalogue"] == ["Blue", "Navy Blue"]


def test_steer_reranks_hits_and_renumbers_them() -> None:
    hits = [[SearchHit(item, 1.0 - 0.1 * rank, rank + 1, {"articleType": kind, "baseColour": colour})
             for rank, (item, kind, colour) in enumerate(CATALOGUE.itertuples(index=False))]]
    steering = AttributeSteering(LABELS, MAPPING, AttributeWeights(4.0, 2.0))
    steered = steering.steer(hits, steering.attributes(_dress_in_blue()), k=2)
    assert [(h.item_id, h.rank) for h in steered[0]] == [("d-blue", 1), ("d-red", 2)]
    assert steered[0][0].score == pytest.approx(0.7)  # the similarity itself is kept


def test_a_tagger_without_the_mapped_categories_is_refused() -> None:
    with pytest.raises(ConfigError, match="no 'category' head"):
        AttributeSteering(LabelSpace(tags=["blue"], heads={"sleeve": ["long", "short"]}), MAPPING)
    with pytest.raises(ConfigError, match="no 'category' head"):
        AttributeSteering(LabelSpace(tags=[], heads={"category": ["Coat"]}), MAPPING)


def test_colour_is_left_out_without_colour_tags() -> None:
    steering = AttributeSteering(LabelSpace(tags=[], heads={"category": ["Dress", "Shirt"]}), MAPPING)
    assert not steering.uses_colour
    [seen] = steering.attributes(Predictions(np.zeros((1, 0), np.float32), {"category": np.array([[0.2, 0.8]])}))
    assert seen.colours == [] and seen.shades == {}


def test_a_mapping_naming_values_the_catalogue_lacks_is_refused() -> None:
    with pytest.raises(DataError, match="Tunics"):
        _search(AttributeWeights(), CATALOGUE.iloc[:4])
    with pytest.raises(DataError, match="baseColour"):
        _search(AttributeWeights(), CATALOGUE.drop(columns=["baseColour"]))


def test_bad_weights_are_refused() -> None:
    with pytest.raises(ConfigError, match="weights"):
        AttributeWeights(category=-1.0)
    with pytest.raises(ConfigError, match="shortlist"):
        AttributeWeights(shortlist=0)


def _index(metadata: pd.DataFrame) -> CatalogueIndex:
    vectors = np.eye(len(metadata), 8, dtype=np.float32) + 0.01
    return CatalogueIndex.build(vectors, metadata, model_id="test")


class _Tagger:
    labels = LABELS
    thresholds = np.full(3, 0.5, dtype=np.float32)


def test_steering_for_an_index_turns_off_with_a_note_or_fails() -> None:
    full = _index(CATALOGUE)
    steering, note = steering_for_index(full, _Tagger(), MAPPING)  # type: ignore[arg-type]
    assert steering is not None and note is None
    steering, note = steering_for_index(full, None, MAPPING)
    assert steering is None and note is not None and "--tagger" in note
    steering, note = steering_for_index(_index(CATALOGUE.drop(columns=["baseColour"])), _Tagger(),  # type: ignore[arg-type]
                                        MAPPING)
    assert steering is None and note is not None and "'baseColour'" in note
    with pytest.raises(DataError, match="Tunics"):
        steering_for_index(_index(CATALOGUE.iloc[:4]), _Tagger(), MAPPING)  # type: ignore[arg-type]
