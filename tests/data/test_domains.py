"""The street↔shop domain mapping: the shipped YAML, structural checks and catalogue checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fashionlens.data.domains import DEFAULT_MAPPING, DomainMapping, load_domain_mapping
from fashionlens.data.readers.clothing_attributes import MULTICLASS_HEADS
from fashionlens.data.records import Manifest
from fashionlens.errors import ConfigError, DataError

SMALL = {"street": {"category": "category"}, "catalogue": {"category": "articleType", "colour": "baseColour"},
         "categories": {"Shirt": ["Shirts"], "Dress": ["Dresses", "Tunics"]},
         "colours": {"black": ["Black", "Charcoal"], "gray": ["Grey", "Charcoal"]}}


def test_shipped_mapping_covers_every_street_category() -> None:
    mapping = load_domain_mapping()
    assert mapping.source == str(DEFAULT_MAPPING)
    assert set(mapping.categories) == set(MULTICLASS_HEADS["category"])
    assert mapping.catalogue_categories("Shirt") == {"Shirts"}
    assert mapping.catalogue_colours(["black", "gray"]) >= {"Black", "Grey", "Charcoal"}
    assert mapping.catalogue_colours([]) == frozenset()


def test_shipped_mapping_names_only_values_of_the_shared_catalogue(shared_data: Path) -> None:
    styles = pd.read_csv(shared_data / "fashion-product-images" / "styles.csv")
    load_domain_mapping().check_catalogue({"articleType": styles["articleType"], "baseColour": styles["baseColour"]})


def test_unknown_catalogue_names_are_named() -> None:
    mapping = DomainMapping.from_dict(SMALL, "small.yaml")
    with pytest.raises(DataError, match=r"small.yaml names articleType value\(s\) the catalogue lacks: 'Tunics'"):
        mapping.check_catalogue({"articleType": ["Shirts", "Dresses"], "baseColour": ["Black", "Grey", "Charcoal"]})
    with pytest.raises(DataError, match="'Charcoal'"):
        mapping.check_catalogue({"articleType": ["Shirts", "Dresses", "Tunics"], "baseColour": ["Black", "Grey"]})
    with pytest.raises(DataError, match="no 'baseColour' field"):
        mapping.check_catalogue({"articleType": ["Shirts", "Dresses", "Tunics"]})


@pytest.mark.parametrize(("change", "message"), [
    ({"street": None}, "lacks street.category"),
    ({"categories": {"Shirt": "Shirts"}}, "categories.Shirt must be a non-empty list"),
    ({"colours": {}}, "'colours' must map"),
    ({"categories": {"Shirt": [""]}}, "non-empty list"),
])
def test_malformed_mapping_is_a_config_error(change: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        DomainMapping.from_dict({**SMALL, **change}, "bad.yaml")


def test_unreadable_or_invalid_yaml_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read domain mapping"):
        load_domain_mapping(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("categories: [unclosed", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_domain_mapping(broken)


def test_street_labels_read_category_and_positive_colours() -> None:
    frame = pd.DataFrame({"path": ["a.jpg", "b.jpg", "c.jpg"], "class:category": ["Shirt", None, "Suit"],
                          "tag:black": [1.0, 0.0, np.nan], "tag:gray": [1.0, np.nan, 0.0]})
    categories, colours = DomainMapping.from_dict(SMALL).street_labels(Manifest(frame, name="street"))
    assert categories == ["Shirt", None, None]  # Suit is not in this mapping
    assert colours == [frozenset({"black", "gray"}), frozenset(), frozenset()]
    with pytest.raises(DataError, match="no 'category' class head"):
        DomainMapping.from_dict(SMALL).street_labels(Manifest(frame.drop(columns="class:category"), name="x"))
