"""Triplet generation for embedding training, as in the seed paper, plus class-balanced batches for online miners.

The paper's recipe: every (anchor, positive) pair is a shop image and a street (user-shot) photo of the same item,
and gets ``negatives_per_pair`` negatives (4), which are **user-shot photos of other pairs**. Negatives are *hard*
(same category as the anchor, another item: a different black dress) or *easy* (another category: a shoe), in the
ratio easy:hard = 1:4, which the paper found better than hard negatives alone. The positive's item is never used as
a negative. Drawing the negatives from the *shop* images instead (``negative_domain="shop"``) is this project's
variant: with PML's distance swap it trains the street photo vs other items' shop photos comparison that a query is
ranked by (see :class:`~fashionlens.tasks.retrieval.RetrievalConfig`).

Generalised to any manifest: ``identity`` decides positives (``item_id`` for street-to-shop; ``articleType`` for
similar-item search, where two products of the same type are a positive pair), and ``categories`` lists the fields
whose equality makes a negative hard, finest first: a hard negative shares the anchor's value of the first field that
offers one (``subCategory``, else ``masterCategory``), an easy one differs in that field. Missing values form a
category of their own. Everything is drawn again every epoch (new positives within an identity, new negatives).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Sampler

from fashionlens.errors import ConfigError, DataError

NEGATIVE_DOMAINS = ("street", "shop")
"""Where cross-domain negatives come from: the paper's user-shot photos of other pairs, or other items' shop images."""


@dataclass(frozen=True)
class TripletPlan:
    """One epoch of triplets as row numbers: pair ``i`` is ``(anchors[i], positives[i])`` with ``negatives[i]``.

    Attributes:
        anchors: ``(P,)`` anchor rows (shop images for street-to-shop).
        positives: ``(P,)`` positive rows (their street photos).
        negatives: ``(P, K)`` negative rows.
        hard: ``(P, K)`` whether each negative is hard (same category as the anchor) rather than easy.
    """

    anchors: np.ndarray
    positives: np.ndarray
    negatives: np.ndarray
    hard: np.ndarray

    def __len__(self) -> int:
        return len(self.anchors)

    def triplets(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Flat ``(anchor, positive, negative)`` row arrays, one entry per negative."""
        per_pair = self.negatives.shape[1]
        return (np.repeat(self.anchors, per_pair), np.repeat(self.positives, per_pair), self.negatives.reshape(-1))


@dataclass(frozen=True)
class TripletBatch:
    """What a batch sampler hands to the data loader: rows to embed and how to form triplets from them.

    Attributes:
        rows: ``(m,)`` manifest rows to embed, each once.
        labels: ``(m,)`` identity codes of those rows (what online miners compare).
        triplets: Positions into ``rows`` of anchors, positives and negatives; ``None`` when a miner picks them.
    """

    rows: torch.Tensor
    labels: torch.Tensor
    triplets: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None


def encode(values: Sequence[str] | pd.Series | np.ndarray) -> np.ndarray:
    """Integer codes of text values (equal values, equal codes); missing values become one more value."""
    codes, _ = pd.factorize(pd.Series(values, dtype="string").fillna(""), sort=True)
    return np.asarray(codes, dtype=np.int64)


def pair_rows(identity: np.ndarray, domain: np.ndarray, rng: np.random.Generator, anchor_domain: str = "shop",
              positive_domain: str = "street") -> tuple[np.ndarray, np.ndarray]:
    """Anchor/positive pairs of rows sharing an identity code.

    When both domains occur, every ``positive_domain`` row whose identity has ``anchor_domain`` rows makes one pair
    with one of them, drawn at random (anchor = shop image, positive = its street photo). Otherwise every row whose
    identity occurs more than once is an anchor paired with another row of that identity, drawn at random.

    Args:
        identity: ``(n,)`` identity codes.
        domain: ``(n,)`` domain of each row (``shop``, ``street`` or empty).
        rng: Random source.
        anchor_domain: Domain of anchors in cross-domain pairs.
        positive_domain: Domain of positives in cross-domain pairs.
    """
    anchor_side, positive_side = domain == anchor_domain, domain == positive_domain
    if not (anchor_side.any() and positive_side.any()):
        anchor_side = positive_side = np.ones(len(identity), dtype=bool)
    groups = _groups(np.flatnonzero(anchor_side), identity[anchor_side])
    anchors, positives = [], []
    for row in np.flatnonzero(positive_side):
        group = groups.get(identity[row])
        if group is None or (len(group) == 1 and group[0] == row):
            continue
        anchor = row
        while anchor == row:  # the row itself is in its group only within one domain, so this ends quickly
            anchor = group[rng.integers(len(group))]
        anchors.append(anchor)
        positives.append(row)
    return np.asarray(anchors, dtype=np.int64), np.asarray(positives, dtype=np.int64)


def _groups(members: np.ndarray, keys: np.ndarray) -> dict[int, np.ndarray]:
    """``members`` grouped by ``keys`` (aligned arrays)."""
    order = np.argsort(keys, kind="stable")
    values, starts = np.unique(keys[order], return_index=True)
    return dict(zip(values.tolist(), np.split(members[order], starts[1:]), strict=True))


def _draw(rng: np.random.Generator, pool: np.ndarray, n: int, reject: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """``n`` draws from ``pool`` (with replacement) that ``reject`` accepts; rejection sampling, exact if slow."""
    out = pool[rng.integers(len(pool), size=n)]
    for _ in range(16):
        bad = reject(out)
        if not bad.any():
            return out
        out[bad] = pool[rng.integers(len(pool), size=int(bad.sum()))]
    valid = pool[~reject(pool)]
    bad = reject(out)
    out[bad] = valid[rng.integers(len(valid), size=int(bad.sum()))]
    return out


def _outside(identity: np.ndarray, ident: int, codes: np.ndarray | None,
             category: int) -> Callable[[np.ndarray], np.ndarray]:
    """Rejection test for negatives: same identity as the anchor, or (when ``codes`` is given) same category."""

    def reject(rows: np.ndarray) -> np.ndarray:
        same: np.ndarray = identity[rows] == ident
        return same | (codes[rows] == category) if codes is not None else same

    return reject


class _Level:
    """Counts of one category field over the negative candidates, to tell whether hard/easy pools are empty."""

    def __init__(self, codes: np.ndarray, candidates: np.ndarray, identity: np.ndarray):
        self.codes = codes
        values = codes[candidates]
        self.members = _groups(candidates, values)
        self.size = pd.Series(values).value_counts()
        self.size_with_identity = pd.Series(1, index=pd.MultiIndex.from_arrays([values, identity[candidates]])
                                            ).groupby(level=[0, 1]).sum()

    def hard_pool(self, category: int, identity: int) -> int:
        """Candidates in ``category`` with another identity."""
        same = int(self.size.get(category, 0))
        return same - int(self.size_with_identity.get((category, identity), 0))

    def easy_pool(self, category: int, identity: int, total: int, identity_total: int) -> int:
        """Candidates outside ``category`` with another identity."""
        outside_with_identity = identity_total - int(self.size_with_identity.get((category, identity), 0))
        return total - int(self.size.get(category, 0)) - outside_with_identity


def sample_negatives(anchors: np.ndarray, identity: np.ndarray, categories: Sequence[np.ndarray],
                     candidates: np.ndarray, rng: np.random.Generator, per_pair: int = 4,
                     easy_fraction: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    """Negatives for each anchor: hard ones share its category, easy ones do not; none shares its identity.

    Exactly ``round(easy_fraction * len(anchors) * per_pair)`` slots, spread at random, ask for an easy negative,
    the rest for a hard one. An anchor whose category holds no other identity at any level gets easy negatives in
    its hard slots (and hard ones in easy slots when every candidate shares its category); the returned ``hard``
    mask records what was actually drawn.

    Args:
        anchors: ``(P,)`` anchor rows.
        identity: ``(n,)`` identity codes of all rows.
        categories: Category codes ``(n,)`` per field, finest first; may be empty (every negative is then easy).
        candidates: Rows that may serve as negatives (e.g. the shop images).
        rng: Random source.
        per_pair: Negatives per anchor.
        easy_fraction: Share of easy negatives (0.2 is the paper's easy:hard = 1:4; 0 is hard only).

    Returns:
        ``(negatives, hard)``, both ``(P, per_pair)``.

    Raises:
        DataError: Some anchor has no candidate of another identity at all.
    """
    slots = np.zeros(len(anchors) * per_pair, dtype=bool)
    slots[rng.choice(len(slots), size=round(easy_fraction * len(slots)), replace=False)] = True
    easy_slots = slots.reshape(len(anchors), per_pair)
    levels = [_Level(codes, candidates, identity) for codes in categories]
    identity_totals = pd.Series(identity[candidates]).value_counts()
    negatives = np.empty((len(anchors), per_pair), dtype=np.int64)
    hard = np.zeros((len(anchors), per_pair), dtype=bool)
    everyone = _Level(np.zeros_like(identity), candidates, identity)  # one category: "any other identity"
    for i, anchor in enumerate(anchors):
        ident = identity[anchor]
        level = next((lv for lv in levels if lv.hard_pool(lv.codes[anchor], ident) > 0), None)
        want_easy = easy_slots[i].copy()
        if level is None:
            want_easy[:] = True
        elif level.easy_pool(level.codes[anchor], ident, len(candidates), int(identity_totals.get(ident, 0))) == 0:
            want_easy[:] = False
        if want_easy.any():
            if level is None and everyone.hard_pool(0, ident) == 0:
                raise DataError(f"row {anchor} has no negative candidate of another identity")
            negatives[i, want_easy] = _draw(rng, candidates, int(want_easy.sum()),
                                            _outside(identity, ident, level.codes if level else None,
                                                     level.codes[anchor] if level else -1))
        if level is not None and (~want_easy).any():
            negatives[i, ~want_easy] = _draw(rng, level.members[level.codes[anchor]], int((~want_easy).sum()),
                                             _outside(identity, ident, None, -1))
            hard[i, ~want_easy] = True
    return negatives, hard


class PaperTripletSampler(Sampler[TripletBatch]):
    """Batches of the paper's triplets over a set of manifest rows, drawn anew each epoch.

    Args:
        rows: Manifest rows to train on (e.g. the ``train`` split).
        identity: Identity codes of ``rows`` (see :func:`encode`).
        domain: Domains of ``rows``.
        categories: Category codes of ``rows`` per field, finest first.
        pairs_per_batch: Anchor/positive pairs per batch, each with its negatives.
        negatives_per_pair: See :func:`sample_negatives`.
        easy_fraction: See :func:`sample_negatives`.
        max_pairs: Use at most this many pairs per epoch (a random subset), for quick runs.
        seed: Seed of the per-epoch random draws.
        anchor_domain: Domain of anchors in cross-domain data (positives come from the other domain).
        negative_domain: Domain negatives are drawn from in cross-domain data: ``street`` (the paper's: user-shot
            photos of other pairs) or ``shop`` (other items' shop images). Single-domain data draws from all rows.
    """

    def __init__(self, rows: np.ndarray, identity: np.ndarray, domain: np.ndarray, categories: Sequence[np.ndarray],
                 pairs_per_batch: int, negatives_per_pair: int = 4, easy_fraction: float = 0.2,
                 max_pairs: int | None = None, seed: int = 0, anchor_domain: str = "shop",
                 negative_domain: str = "street"):
        if pairs_per_batch < 1 or negatives_per_pair < 1:
            raise ConfigError(f"pairs per batch ({pairs_per_batch}) and negatives per pair ({negatives_per_pair}) "
                              f"must be >= 1")
        if not 0.0 <= easy_fraction <= 1.0:
            raise ConfigError(f"easy_fraction must lie in 0..1, got {easy_fraction}")
        self.rows, self.identity, self.domain = np.asarray(rows), identity, domain
        self.categories = list(categories)
        self.pairs_per_batch, self.negatives_per_pair = pairs_per_batch, negatives_per_pair
        self.easy_fraction, self.max_pairs, self.seed = easy_fraction, max_pairs, seed
        if negative_domain not in NEGATIVE_DOMAINS:
            raise ConfigError(f"unknown negative domain '{negative_domain}'; use one of {NEGATIVE_DOMAINS}")
        self.anchor_domain, self.negative_domain = anchor_domain, negative_domain
        cross_domain = (domain == anchor_domain).any() and (domain != anchor_domain).any()
        self.candidates = np.flatnonzero(domain == negative_domain) if cross_domain else np.arange(len(rows))
        self.epoch = 0
        n_pairs = len(pair_rows(identity, domain, np.random.default_rng(0), anchor_domain)[0])
        if n_pairs == 0:
            raise DataError("no positive pairs: no two training rows share an identity (item_id, or the identity "
                            "field); street-to-shop needs shop and street photos of the same items")
        self.n_pairs = min(n_pairs, max_pairs) if max_pairs else n_pairs

    def plan(self, epoch: int) -> TripletPlan:
        """The triplets of ``epoch`` in local row positions (0..len(rows)-1), deterministic per (seed, epoch)."""
        rng = np.random.default_rng([self.seed, epoch])
        anchors, positives = pair_rows(self.identity, self.domain, rng, self.anchor_domain)
        order = rng.permutation(len(anchors))[: self.n_pairs]
        anchors, positives = anchors[order], positives[order]
        negatives, hard = sample_negatives(anchors, self.identity, self.categories, self.candidates, rng,
                                           self.negatives_per_pair, self.easy_fraction)
        return TripletPlan(anchors, positives, negatives, hard)

    def __len__(self) -> int:
        return math.ceil(self.n_pairs / self.pairs_per_batch)

    def __iter__(self) -> Iterator[TripletBatch]:
        plan = self.plan(self.epoch)
        self.epoch += 1
        for start in range(0, len(plan), self.pairs_per_batch):
            part = slice(start, start + self.pairs_per_batch)
            chunk = TripletPlan(plan.anchors[part], plan.positives[part], plan.negatives[part], plan.hard[part])
            a, p, n = chunk.triplets()
            local, positions = np.unique(np.concatenate([a, p, n]), return_inverse=True)
            a_pos, p_pos, n_pos = np.split(positions, [len(a), 2 * len(a)])
            yield TripletBatch(rows=torch.as_tensor(self.rows[local]), labels=torch.as_tensor(self.identity[local]),
                               triplets=(torch.as_tensor(a_pos), torch.as_tensor(p_pos), torch.as_tensor(n_pos)))


class ClassBalancedSampler(Sampler[TripletBatch]):
    """Batches of ``per_identity`` rows from each of several identities, for PML's online triplet miners.

    Every row in a batch has a positive there, and the miner chooses the triplets. Each epoch is one pass over the
    rows: each identity's rows are shuffled and cut into groups of ``per_identity``, and the groups are shuffled
    into batches. (PML's ``MPerClassSampler`` does the same, but importing ``pytorch_metric_learning.samplers``
    imports ``faiss.contrib.torch_utils``, which replaces ``faiss.Index.search`` process-wide with a version that
    rejects the search parameters the catalogue index passes.)

    Args:
        rows: Manifest rows to train on.
        identity: Identity codes of ``rows``; identities with fewer than ``per_identity`` rows are left out.
        batch_size: Rows per batch (rounded down to a multiple of ``per_identity``).
        per_identity: Rows per identity in a batch.
        seed: Seed of the per-epoch shuffles.
    """

    def __init__(self, rows: np.ndarray, identity: np.ndarray, batch_size: int, per_identity: int = 2, seed: int = 0):
        if per_identity < 2 or batch_size < 2 * per_identity:
            raise ConfigError(f"online mining needs per_identity >= 2 and batch_size >= 2 * per_identity, got "
                              f"{per_identity} and {batch_size}")
        self.rows, self.identity = np.asarray(rows), identity
        self.groups_per_batch, self.per_identity, self.seed = batch_size // per_identity, per_identity, seed
        counts = pd.Series(identity).value_counts()
        if int((counts >= per_identity).sum()) < 2:
            raise DataError(f"online mining needs at least two identities with {per_identity} or more training rows")
        self.n_groups = int((counts // per_identity).sum())
        self.epoch = 0

    def __len__(self) -> int:
        return max(1, self.n_groups // self.groups_per_batch)

    def __iter__(self) -> Iterator[TripletBatch]:
        rng = np.random.default_rng([self.seed, self.epoch])
        self.epoch += 1
        groups = []
        for members in _groups(np.arange(len(self.rows)), self.identity).values():
            shuffled = rng.permutation(members)
            usable = len(shuffled) - len(shuffled) % self.per_identity
            groups += np.split(shuffled[:usable], usable // self.per_identity) if usable else []
        order = rng.permutation(len(groups))
        for batch in range(len(self)):
            chosen = np.concatenate([groups[g] for g in order[batch * self.groups_per_batch:
                                                               (batch + 1) * self.groups_per_batch]])
            yield TripletBatch(rows=torch.as_tensor(self.rows[chosen]), labels=torch.as_tensor(self.identity[chosen]),
                               triplets=None)
