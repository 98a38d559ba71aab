"""The shared street/catalogue label space: classes joined through the domain mapping, and mixed batches."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fashionlens.data.domains import DomainMapping
from fashionlens.data.records import Manifest
from fashionlens.errors import ConfigError, DataError
from fashionlens.tasks.retrieval.shared_labels import HEADS, SharedSpaceSampler, shared_labels

MAPPING = DomainMapping.from_dict({
    "street": {"category": "category"}, "catalogue": {"category": "articleType", "colour": "baseColour"},
    "categories": {"Shirt": ["Shirts"], "Outerwear": ["Jackets"], "Suit": ["Jackets", "Waistcoat"]},
    "colours": {"black": ["Black", "Charcoal"], "gray": ["Grey", "Charcoal"], "red": ["Red"]},
})


def _catalogue() -> Manifest:
    return Manifest(pd.DataFrame({
        "path": [f"/c/{i}.jpg" for i in range(6)], "domain": "shop",
        "class:articleType": ["Shirts", "Jackets", "Waistcoat", "Watches", "Shirts", None],
        "class:baseColour": ["Black", "Grey", "Red", "Pink", "Charcoal", "Red"],
    }), name="catalogue")


def _street() -> Manifest:
    return Manifest(pd.DataFrame({
        "path": [f"/s/{i}.jpg" for i in range(4)], "domain": "street",
        "class:category": ["Shirt", "Suit", "Outerwear", None],
        "tag:black": [1.0, 1.0, 0.0, 0.0], "tag:gray": [0.0, 1.0, 0.0, 0.0], "tag:red": [0.0, 1.0, 1.0, 0.0],
    }), name="street")


def test_street_labels_share_classes_with_the_catalogue_values_they_map_to() -> None:
    labels = shared_labels(_catalogue(), _street(), MAPPING, ["articleType", "baseColour"])
    category, colour, fine = (labels.head(name) for name in HEADS)
    # catalogue rows 0..5, then street rows 6..9
    assert category[6] == category[0] == category[4]  # street Shirt ~ catalogue Shirts
    assert category[7] == category[8] == category[1] == category[2]  # Suit and Outerwear share Jackets: one class
    assert category[0] != category[1]
    assert category[3] not in category[[0, 1, 6, 7]] and category[3] >= 0  # unmapped Watches: a class of its own
    assert category[5] == category[9] == -1  # no articleType / no mapped street category
    assert labels.classes["category"][category[1]] == "Outerwear/Suit"
    assert colour[0] == colour[1] == colour[4] == colour[6]  # black and gray share Charcoal: one class
    assert colour[7] == -1  # black, gray and red: more than one colour class
    assert colour[8] == colour[2] == colour[5] != colour[0]  # red
    assert colour[3] >= 0 and colour[3] not in colour[[0, 2]]  # unmapped Pink: a class of its own
    assert (fine[6:] == -1).all() and fine[5] == -1  # catalogue-only, and only with every fine field
    assert fine[0] != fine[4] and labels.classes["fine"][fine[0]] == "Shirts|Black"


def test_a_mapping_naming_values_the_catalogue_lacks_is_refused() -> None:
    catalogue = _catalogue()
    catalogue.frame["class:articleType"] = catalogue.frame["class:articleType"].replace("Waistcoat", "Vests")
    with pytest.raises(DataError, match="Waistcoat"):
        shared_labels(catalogue, _street(), MAPPING)


def test_batches_mix_the_domains_at_the_share_and_cover_the_catalogue_once() -> None:
    rows = np.arange(100) + 1000
    street = np.arange(100) >= 90
    labels = np.stack([np.arange(100), np.arange(100) % 3, -np.ones(100, dtype=np.int64)], axis=1)
    sampler = SharedSpaceSampler(rows, labels, street, batch_size=8, street_share=0.25, seed=2)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 15  # 90 catalogue rows, 6 per batch
    seen = np.concatenate([b.rows.numpy() for b in batches]) - 1000
    assert sorted(seen[~street[seen]].tolist()) == list(range(90))
    assert all(int(street[b.rows.numpy() - 1000].sum()) == 2 for b in batches)
    counts = np.bincount(seen[street[seen]] - 90, minlength=10)
    assert counts.max() - counts.min() <= 1  # the street rows repeat evenly
    assert all(np.array_equal(b.labels.numpy(), labels[b.rows.numpy() - 1000]) for b in batches)
    assert not np.array_equal(next(iter(sampler)).rows.numpy(), batches[0].rows.numpy())  # a new epoch reshuffles


def test_bad_sampler_settings_are_named() -> None:
    labels = np.zeros((10, 3), dtype=np.int64)
    with pytest.raises(ConfigError, match="street_share"):
        SharedSpaceSampler(np.arange(10), labels, np.zeros(10, dtype=bool), 8, street_share=1.0)
    with pytest.raises(DataError, match="street rows"):
        SharedSpaceSampler(np.arange(10), labels, np.zeros(10, dtype=bool), 8, street_share=0.25)
