"""How building a taxonomy resolves its label problems (a child under two parents, rare classes) and reports them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from fashionlens.errors import ConfigError, DataError

ConflictPolicy = Literal["majority", "split", "error"]
RarePolicy = Literal["other", "drop"]
CONFLICT_POLICIES = ("majority", "split", "error")
RARE_POLICIES = ("other", "drop")
PATH_SEPARATOR = " > "
N_ROWS = "__rows"
N_TRAIN = "__train_rows"
"""Columns of a raw path table: rows with the path (majority votes), and its rows counted against ``min_count``."""


def other_name(parent_path: Sequence[str]) -> str:
    """Name of the node gathering the rare children of the class at ``parent_path`` (``"Other"`` at the top).

    The full parent path keeps names unique even where a class name recurs across levels (Fashion Product's
    "Accessories" is both a masterCategory and a subCategory).
    """
    return f"Other ({path_key(parent_path)})" if parent_path else "Other"


def path_key(raw: Sequence[str]) -> str:
    """Alias key of a full raw label path (used where a leaf name alone is ambiguous)."""
    return PATH_SEPARATOR.join(raw)


@dataclass(frozen=True)
class Conflict:
    """A child class found under more than one parent.

    Attributes:
        level: Level of the child.
        child: The child class.
        parents: Parent class → rows seen under it.
        resolution: What the policy did, in words.
    """

    level: str
    child: str
    parents: dict[str, int]
    resolution: str = ""

    def describe(self) -> str:
        """One line: the child, its parents with row counts, and the resolution."""
        seen = ", ".join(f"'{p}' ({n} rows)" for p, n in self.parents.items())
        return f"{self.level} '{self.child}' is under {len(self.parents)} parents: {seen}" + (
            f"; {self.resolution}" if self.resolution else "")


@dataclass
class TaxonomyReport:
    """What building a taxonomy changed: resolved conflicts, classes merged into "Other", classes dropped."""

    conflicts: list[Conflict] = field(default_factory=list)
    merged: dict[str, dict[str, str]] = field(default_factory=dict)
    dropped: dict[str, list[str]] = field(default_factory=dict)
    min_count: int = 0
    counted_on: str = ""

    def lines(self) -> list[str]:
        """Human-readable summary, one finding per line."""
        out = [c.describe() for c in self.conflicts]
        for level, merged in self.merged.items():
            if merged:
                out.append(f"{level}: {len(merged)} class(es) with < {self.min_count} {self.counted_on} rows merged: "
                           + ", ".join(f"'{raw}' → '{into}'" for raw, into in merged.items()))
        for level, dropped in self.dropped.items():
            if dropped:
                out.append(f"{level}: {len(dropped)} class(es) with < {self.min_count} {self.counted_on} rows "
                           f"dropped: {dropped}")
        return out

    def to_json(self) -> dict[str, Any]:
        """Plain data (saved next to a model)."""
        return {"conflicts": [{"level": c.level, "child": c.child, "parents": c.parents,
                               "resolution": c.resolution} for c in self.conflicts],
                "merged": self.merged, "dropped": self.dropped, "min_count": self.min_count,
                "counted_on": self.counted_on}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TaxonomyReport:
        """Inverse of :meth:`to_json`."""
        return cls(conflicts=[Conflict(**c) for c in data.get("conflicts", [])], merged=dict(data.get("merged", {})),
                   dropped=dict(data.get("dropped", {})), min_count=int(data.get("min_count", 0)),
                   counted_on=str(data.get("counted_on", "")))


def find_conflicts(paths: pd.DataFrame, levels: Sequence[str]) -> list[Conflict]:
    """Every child seen under more than one parent, level by level (row counts from ``__rows`` when present)."""
    counts = paths[N_ROWS] if N_ROWS in paths else pd.Series(1, index=paths.index)
    found = []
    for h in range(1, len(levels)):
        found += _conflicts_at(paths[list(levels)].astype(str), counts, list(levels), h)
    return found


def _conflicts_at(node: pd.DataFrame, counts: pd.Series, levels: list[str], h: int,
                  mask: np.ndarray | None = None) -> list[Conflict]:
    child, parent = levels[h], levels[h - 1]
    frame = pd.DataFrame({"child": node[child], "parent": node[parent], "n": counts})
    if mask is not None:
        frame = frame[mask]
    per_pair = frame.groupby(["child", "parent"], sort=False)["n"].sum()
    found = []
    for name, group in per_pair.groupby(level="child", sort=True):
        if len(group) > 1:
            found.append(Conflict(child, str(name), {str(p): int(n) for p, n in group.droplevel("child").items()}))
    return found


def resolve_conflicts(node: pd.DataFrame, counts: pd.Series, levels: list[str], h: int,
                       policy: ConflictPolicy, mask: np.ndarray) -> list[Conflict]:
    """Rewrite ``node`` in place so each class at level ``h`` has one parent; returns what was resolved."""
    found = _conflicts_at(node, counts, levels, h, mask)
    if found and policy == "error":
        shown = "; ".join(c.describe() for c in found)
        raise DataError(f"{len(found)} inconsistent {levels[h]} class(es): {shown} (set the taxonomy conflicts "
                        f"policy to 'majority' or 'split')")
    child, parent = levels[h], levels[h - 1]
    resolved = []
    for conflict in found:
        rows = (node[child] == conflict.child).to_numpy()
        if policy == "majority":
            winner = max(conflict.parents, key=lambda p: conflict.parents[p])  # first listed wins ties
            source = node[rows & (node[parent] == winner).to_numpy()].iloc[0]
            moved = rows & (node[parent] != winner).to_numpy()
            for upper in levels[:h]:
                node.loc[moved, upper] = source[upper]
            losers = [p for p in conflict.parents if p != winner]
            text = f"kept under '{winner}' (majority), {int(counts[moved].sum())} row(s) from {losers} moved there"
        else:
            for name in conflict.parents:
                node.loc[rows & (node[parent] == name).to_numpy(), child] = f"{conflict.child} ({name})"
            text = "split into " + ", ".join(f"'{conflict.child} ({p})'" for p in conflict.parents)
        resolved.append(Conflict(conflict.level, conflict.child, conflict.parents, text))
    return resolved


def merge_rare(node: pd.DataFrame, counts: pd.Series, levels: list[str], h: int, min_count: int,
                 policy: RarePolicy, collapsed: np.ndarray, dropped_rows: np.ndarray, report: TaxonomyReport) -> None:
    """Merge (or drop) level-``h`` classes with fewer than ``min_count`` counted rows; rewrites ``node`` in place."""
    level = levels[h]
    active = ~dropped_rows & ~collapsed
    row_paths = [tuple(p) for p in node[levels[:h + 1]].to_numpy().tolist()]
    totals = counts[active].groupby([node.loc[active, lv] for lv in levels[:h + 1]]).sum()
    rare_paths = {k if isinstance(k, tuple) else (k,) for k, n in totals.items() if n < min_count}
    rare_rows = active & np.array([p in rare_paths for p in row_paths], dtype=bool)
    if policy == "drop":
        report.dropped[level] = sorted({p[-1] for p in rare_paths})
        dropped_rows |= rare_rows
        return
    targets = {p: other_name(p[:-1]) for p in rare_paths}
    clash = sorted(set(targets.values()) & set(node.loc[~rare_rows, level]))
    if clash:
        raise DataError(f"cannot merge rare {level} classes into {clash}: a real class already has that name")
    report.merged[level] = {path_key(p): targets[p] for p in sorted(rare_paths)}
    node.loc[rare_rows, level] = [targets[row_paths[row]] for row in np.flatnonzero(rare_rows)]
    collapsed |= rare_rows


def walk_tree(tree: Any, depth: int, where: str, prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], str]]:
    """``(ancestors, leaf)`` pairs of a nested tree, checking its shape."""
    location = f"{where}: tree" + "".join(f"[{p!r}]" for p in prefix)
    if len(prefix) == depth - 1:
        if not isinstance(tree, list) or not tree or not all(isinstance(v, str) and v.strip() for v in tree):
            raise ConfigError(f"{location} must be a non-empty list of class names (the last level)")
        return [(prefix, leaf.strip()) for leaf in tree]
    if not isinstance(tree, dict) or not tree:
        raise ConfigError(f"{location} must map class names to their children ({depth - len(prefix)} more levels)")
    pairs = []
    for name, children in tree.items():
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"{location} has an empty or non-text class name {name!r}")
        pairs += walk_tree(children, depth, where, (*prefix, name.strip()))
    return pairs
