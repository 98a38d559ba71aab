"""Triplet generation: the paper's pairs, the hard/easy negative ratio, and that positives never become negatives."""

from __future__ import annotations

import numpy as np
import pytest

from fashionlens.errors import ConfigError, DataError
from fashionlens.tasks.retrieval.triplets import (
    ClassBalancedSampler,
    PaperTripletSampler,
    encode,
    pair_rows,
    sample_negatives,
)


def _catalogue(n_items: int = 60, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Identity (article type), fine category (sub-category) and coarse category codes of ``n_items`` products."""
    rng = np.random.default_rng(seed)
    article = rng.integers(0, 12, n_items)
    return article, article // 3, article // 6


def _street_to_shop(n_items: int = 40) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One shop and one street photo per item; items fall into 5 categories."""
    identity = np.repeat(np.arange(n_items), 2)
    domain = np.tile(np.array(["shop", "street"]), n_items)
    return identity, domain, identity % 5


def test_encode_gives_equal_codes_to_equal_values_and_one_code_to_missing() -> None:
    codes = encode(["b", "a", None, "b", ""])
    assert codes[0] == codes[3] != codes[1]
    assert codes[2] == codes[4]


def test_cross_domain_pairs_anchor_a_shop_photo_of_the_street_photos_item() -> None:
    identity, domain, _ = _street_to_shop()
    domain[-1] = "shop"  # the last item has two shop photos and no street photo: no pair
    anchors, positives = pair_rows(identity, domain, np.random.default_rng(0))
    assert len(anchors) == 39
    assert (domain[anchors] == "shop").all() and (domain[positives] == "street").all()
    assert (identity[anchors] == identity[positives]).all()


def test_single_domain_pairs_never_pair_a_row_with_itself() -> None:
    identity = np.array([0, 0, 1, 1, 1, 2])
    anchors, positives = pair_rows(identity, np.array([""] * 6), np.random.default_rng(0))
    assert sorted(positives.tolist()) == [0, 1, 2, 3, 4]  # row 5's identity occurs once
    assert (anchors != positives).all() and (identity[anchors] == identity[positives]).all()


@pytest.mark.parametrize("easy_fraction", [0.0, 0.2, 0.5, 1.0])
def test_easy_to_hard_ratio_is_exact(easy_fraction: float) -> None:
    identity, fine, coarse = _catalogue()
    anchors = np.arange(len(identity))
    negatives, hard = sample_negatives(anchors, identity, [fine, coarse], anchors, np.random.default_rng(1),
                                       per_pair=4, easy_fraction=easy_fraction)
    assert negatives.shape == hard.shape == (len(anchors), 4)
    assert (~hard).sum() == round(easy_fraction * hard.size)


def test_paper_ratio_is_one_easy_to_four_hard() -> None:
    identity, fine, coarse = _catalogue(n_items=100)
    plan = PaperTripletSampler(np.arange(100), identity, np.array([""] * 100), [fine, coarse], pairs_per_batch=8,
                               seed=3).plan(0)
    assert plan.negatives.shape == (len(plan), 4)
    assert (~plan.hard).sum() * 4 == plan.hard.sum()


def test_negatives_never_share_the_anchors_identity_and_hard_ones_share_its_category() -> None:
    identity, fine, coarse = _catalogue()
    plan = PaperTripletSampler(np.arange(60), identity, np.array([""] * 60), [fine, coarse], pairs_per_batch=8,
                               seed=0).plan(2)
    anchors, positives, negatives = plan.triplets()
    hard = plan.hard.reshape(-1)
    assert (identity[negatives] != identity[anchors]).all()
    assert (negatives != positives).all()
    assert (fine[negatives][hard] == fine[anchors][hard]).all()
    assert (fine[negatives][~hard] != fine[anchors][~hard]).all()


def test_the_papers_negatives_are_user_shot_photos_of_other_pairs() -> None:
    """The street-to-shop paper draws a pair's 4 negatives from the street (user-shot) photos of other pairs."""
    identity, domain, category = _street_to_shop()
    plan = PaperTripletSampler(np.arange(80), identity, domain, [category], pairs_per_batch=16, seed=0).plan(0)
    anchors, positives, negatives = plan.triplets()
    assert (domain[anchors] == "shop").all() and (domain[positives] == "street").all()
    assert (domain[negatives] == "street").all()
    assert (identity[negatives] != identity[positives]).all()
    hard = plan.hard.reshape(-1)
    assert (~hard).sum() * 4 == hard.sum()  # hard (same category) : easy = 4 : 1
    assert (category[negatives][hard] == category[anchors][hard]).all()
    assert (category[negatives][~hard] != category[anchors][~hard]).all()


def test_shop_negatives_are_other_items_shop_photos() -> None:
    identity, domain, category = _street_to_shop()
    plan = PaperTripletSampler(np.arange(80), identity, domain, [category], pairs_per_batch=16, seed=0,
                               negative_domain="shop").plan(0)
    anchors, positives, negatives = plan.triplets()
    assert (domain[negatives] == "shop").all()
    assert (identity[negatives] != identity[positives]).all()
    hard = plan.hard.reshape(-1)
    assert (category[negatives][hard] == category[anchors][hard]).all()
    assert (category[negatives][~hard] != category[anchors][~hard]).all()


def test_hard_negatives_fall_back_to_the_next_category_level() -> None:
    identity = np.array([0, 0, 1, 1, 2, 2])
    fine = np.array([0, 0, 1, 1, 2, 2])  # every fine category holds a single identity: no hard negative there
    coarse = np.array([0, 0, 0, 0, 1, 1])
    negatives, hard = sample_negatives(np.array([0, 1]), identity, [fine, coarse], np.arange(6),
                                       np.random.default_rng(0), per_pair=5, easy_fraction=0.2)
    assert set(negatives[hard].tolist()) <= {2, 3}  # same coarse category, other identity
    assert set(negatives[~hard].tolist()) <= {4, 5}


def test_without_any_hard_candidate_every_negative_is_easy() -> None:
    identity = np.array([0, 0, 1, 1])
    category = np.array([0, 0, 1, 1])
    negatives, hard = sample_negatives(np.array([0]), identity, [category], np.arange(4), np.random.default_rng(0))
    assert not hard.any() and set(negatives.ravel().tolist()) <= {2, 3}


def test_a_lone_identity_has_no_negative() -> None:
    with pytest.raises(DataError, match="no negative candidate"):
        sample_negatives(np.array([0]), np.zeros(3, dtype=np.int64), [], np.arange(3), np.random.default_rng(0))


def test_plans_repeat_per_seed_and_epoch_and_change_across_epochs() -> None:
    identity, fine, coarse = _catalogue()
    sampler = PaperTripletSampler(np.arange(60), identity, np.array([""] * 60), [fine, coarse], pairs_per_batch=8)
    assert np.array_equal(sampler.plan(0).negatives, sampler.plan(0).negatives)
    assert not np.array_equal(sampler.plan(0).negatives, sampler.plan(1).negatives)


def test_batches_hold_each_row_once_and_their_triplets_point_back_to_the_plan() -> None:
    identity, domain, category = _street_to_shop()
    rows = np.arange(80) + 1000  # manifest rows of the training split
    sampler = PaperTripletSampler(rows, identity, domain, [category], pairs_per_batch=16, seed=5)
    plan = sampler.plan(0)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 3  # 40 pairs in batches of 16
    first = batches[0]
    assert first.triplets is not None
    assert len(np.unique(first.rows.numpy())) == len(first.rows)
    anchor, positive, negative = (first.rows[t].numpy() for t in first.triplets)
    expected = plan.triplets()
    assert np.array_equal(anchor, rows[expected[0][:64]])
    assert np.array_equal(positive, rows[expected[1][:64]])
    assert np.array_equal(negative, rows[expected[2][:64]])


def test_max_pairs_caps_an_epoch() -> None:
    identity, domain, category = _street_to_shop()
    sampler = PaperTripletSampler(np.arange(80), identity, domain, [category], pairs_per_batch=4, max_pairs=10)
    assert len(sampler.plan(0)) == 10 and len(sampler) == 3


def test_no_pairs_is_a_clear_error() -> None:
    with pytest.raises(DataError, match="no positive pairs"):
        PaperTripletSampler(np.arange(3), np.arange(3), np.array(["shop"] * 3), [], pairs_per_batch=4)


def test_invalid_easy_fraction_is_rejected() -> None:
    identity, domain, category = _street_to_shop()
    with pytest.raises(ConfigError, match="easy_fraction"):
        PaperTripletSampler(np.arange(80), identity, domain, [category], pairs_per_batch=4, easy_fraction=1.5)
    with pytest.raises(ConfigError, match="negative domain 'user'"):
        PaperTripletSampler(np.arange(80), identity, domain, [category], pairs_per_batch=4, negative_domain="user")


def test_class_balanced_batches_give_every_row_a_positive() -> None:
    identity = np.repeat(np.arange(10), 3)
    sampler = ClassBalancedSampler(np.arange(30) + 100, identity, batch_size=8, per_identity=2, seed=1)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 2  # 10 groups of 2, 4 groups per batch
    for batch in batches:
        assert batch.triplets is None and len(batch.rows) == 8
        assert (np.bincount(batch.labels.numpy()) % 2 == 0).all()
        assert np.array_equal(identity[batch.rows.numpy() - 100], batch.labels.numpy())
