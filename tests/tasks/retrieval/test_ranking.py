"""Ranking a gallery and scoring the ranking on known cases."""

from __future__ import annotations

import numpy as np
import pytest

from fashionlens.tasks.retrieval import (
    rank_gallery,
    score_ranking,
)


def test_scores_of_a_known_street_to_shop_ranking() -> None:
    ranked = np.array([[3, 0, 1], [1, 2, 0], [0, 1, 2], [0, 1, 2]])
    scores = score_ranking(["a", "b", "c", ""], ["a", "b", "b", "x"], ranked, ks=[1, 2])
    # query "c" has no relevant gallery item and "" is unlabelled: both are left out
    assert scores["queries"] == 2
    assert scores["recall@1"] == pytest.approx(0.5)  # hit rate: a at rank 2, b at rank 1
    assert scores["recall@2"] == pytest.approx(1.0)
    assert scores["precision@2"] == pytest.approx((0.5 + 1.0) / 2)
    assert scores["mAP"] == pytest.approx((0.5 + 1.0) / 2)


def test_scores_excluding_the_query_itself() -> None:
    ranked = np.array([[1, 2], [2, 0], [0, 1]])  # lists already without the query
    scores = score_ranking(["a", "a", "b"], ["a", "a", "b"], ranked, ks=[1], exclude_self=True)
    assert scores["queries"] == 2  # "b" has no other "b"
    assert scores["recall@1"] == pytest.approx(0.5)
    assert scores["mAP"] == pytest.approx((1.0 + 0.5) / 2)


def test_recall_is_hit_rate_not_fraction_of_relevant_items_found() -> None:
    scores = score_ranking(["a"], ["a", "a", "a", "a"], np.array([[0, -1, -1, -1]]), ks=[1])
    assert scores["recall@1"] == 1.0  # one of four relevant items found still counts as a hit


def test_rank_gallery_orders_by_similarity_and_can_exclude_the_query() -> None:
    gallery = np.array([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]], dtype=np.float32)
    assert rank_gallery(gallery[:1], gallery, "ip", 3).tolist() == [[0, 1, 2]]
    assert rank_gallery(gallery, gallery, "ip", 2, exclude_self=True).tolist() == [[1, 2], [0, 2], [1, 0]]
    assert rank_gallery(gallery[:1], gallery[:2], "l2", 4).tolist() == [[0, 1, -1, -1]]  # padded past the gallery
