"""Category taxonomies: levels of classes where every class has one parent in the level above.

A taxonomy is built from the label columns of a manifest (Fashion Product Images: masterCategory > subCategory >
articleType) or from a tree the user writes in YAML (DeepFashion's 50 categories under upper/lower/full body). Real
labels are rarely a clean tree, so building one makes two decisions explicit and reports them:

* **Inconsistencies** -- a child seen under two parents (Fashion Product's "Sandals" under both "Sandal" and
  "Shoes"). Policy ``error`` refuses; ``majority`` keeps the child under the parent with most rows (ties: the parent
  listed first) and moves the other rows there; ``split`` turns each (parent, child) pair into its own node,
  ``"Sandals (Shoes)"``.
* **The long tail** -- classes with fewer than ``min_count`` (training) rows cannot be learned or scored reliably.
  Policy ``other`` merges them into one ``"Other (<parent path>)"`` node per parent (a merged node's descendants
  collapse into it), so every row keeps a target; ``drop`` takes their rows out of training and scoring altogether.

The raw label of every row is kept resolvable through ``aliases`` (raw leaf name, or the full raw path where the leaf
name alone is ambiguous, → leaf class), so the same taxonomy encodes any manifest with the same label columns.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from fashionlens.config import resolve_config
from fashionlens.data.records import Manifest
from fashionlens.errors import ConfigError, DataError
from fashionlens.tasks.hierarchy.resolve import (
    CONFLICT_POLICIES,
    N_ROWS,
    N_TRAIN,
    PATH_SEPARATOR,
    RARE_POLICIES,
    ConflictPolicy,
    RarePolicy,
    TaxonomyReport,
    merge_rare,
    path_key,
    resolve_conflicts,
    walk_tree,
)


@dataclass
class EncodedLabels:
    """Targets of a manifest under a taxonomy, and how many rows could not be given one.

    Attributes:
        targets: ``(n, levels)`` class index per level; ``-1`` where the row has no target.
        unlabelled: Rows with an empty leaf label.
        unknown: Rows whose leaf label the taxonomy does not know.
        dropped: Rows of classes dropped as too rare.
        ambiguous: Rows whose leaf name is under several split nodes and whose parent labels are missing.
        rewritten: Per level, labelled rows whose raw label differs from their taxonomy node (merged into
            "Other", split, or moved to the majority parent).
    """

    targets: np.ndarray
    unlabelled: int = 0
    unknown: int = 0
    dropped: int = 0
    ambiguous: int = 0
    rewritten: dict[str, int] = field(default_factory=dict)

    @property
    def excluded(self) -> int:
        """Rows left without a target for any reason."""
        return self.unlabelled + self.unknown + self.dropped + self.ambiguous


@dataclass(frozen=True)
class Taxonomy:
    """Levels of classes, top level first; each class below the top has exactly one parent.

    Attributes:
        levels: Level names, which are also the manifest class heads read (``masterCategory``...).
        classes: Per level, its class names (unique within the level).
        parents: Per level, the index in the level above of each class's parent (empty for the top level).
        aliases: Raw leaf label (or :func:`path_key` of a full raw path) → leaf class it maps to; a leaf class name
            not listed here stands for itself.
        dropped: Raw leaf labels (or path keys) whose rows are left out.
        report: What was changed when the taxonomy was built.
    """

    levels: tuple[str, ...]
    classes: tuple[tuple[str, ...], ...]
    parents: tuple[tuple[int, ...], ...]
    aliases: Mapping[str, str] = field(default_factory=dict)
    dropped: tuple[str, ...] = ()
    report: TaxonomyReport = field(default_factory=TaxonomyReport, compare=False)

    def __post_init__(self) -> None:
        if not self.levels or len(self.classes) != len(self.levels) or len(self.parents) != len(self.levels):
            raise ConfigError(f"a taxonomy needs classes and parents for each of its levels {list(self.levels)}")
        if len(set(self.levels)) != len(self.levels):
            raise ConfigError(f"taxonomy levels must be distinct, got {list(self.levels)}")
        for h, (level, names, parents) in enumerate(zip(self.levels, self.classes, self.parents, strict=True)):
            if not names:
                raise ConfigError(f"taxonomy level '{level}' has no classes")
            duplicated = sorted({n for n in names if names.count(n) > 1})
            if duplicated:
                raise ConfigError(f"taxonomy level '{level}' lists class(es) {duplicated} more than once")
            expected = 0 if h == 0 else len(names)
            upper = len(self.classes[h - 1]) if h else 0
            if len(parents) != expected or any(not 0 <= p < upper for p in parents):
                raise ConfigError(f"taxonomy level '{level}' needs one parent index in 0..{upper - 1} per class")
        leaves = set(self.classes[-1])
        stray = sorted({v for v in self.aliases.values() if v not in leaves})
        if stray:
            raise ConfigError(f"taxonomy aliases point to unknown {self.levels[-1]} class(es) {stray[:5]}")

    # ------------------------------------------------------------------ structure
    @property
    def depth(self) -> int:
        """Number of levels."""
        return len(self.levels)

    @property
    def sizes(self) -> list[int]:
        """Classes per level."""
        return [len(c) for c in self.classes]

    @property
    def leaf_level(self) -> str:
        """Name of the last (finest) level."""
        return self.levels[-1]

    @property
    def catch_all(self) -> frozenset[str]:
        """Names of the "Other" classes made by merging rare classes (at any level; merged names recur below)."""
        return frozenset(name for merged in self.report.merged.values() for name in merged.values())

    def leaf_paths(self) -> np.ndarray:
        """``(leaves, depth)``: the class index at every level of each leaf's path."""
        paths = np.zeros((self.sizes[-1], self.depth), dtype=np.int64)
        paths[:, -1] = np.arange(self.sizes[-1])
        for h in range(self.depth - 1, 0, -1):
            paths[:, h - 1] = np.asarray(self.parents[h], dtype=np.int64)[paths[:, h]]
        return paths

    def path_names(self, path: Sequence[int]) -> list[str]:
        """Class names along a path of per-level indices."""
        return [self.classes[h][int(i)] for h, i in enumerate(path)]

    def is_consistent(self, paths: np.ndarray) -> np.ndarray:
        """Whether each ``(n, depth)`` path of class indices follows parent links (every class under its parent)."""
        paths = np.asarray(paths, dtype=np.int64)
        ok = np.ones(len(paths), dtype=bool)
        for h in range(1, self.depth):
            ok &= np.asarray(self.parents[h], dtype=np.int64)[paths[:, h]] == paths[:, h - 1]
        return ok

    def marginals(self, leaf_probabilities: np.ndarray) -> list[np.ndarray]:
        """Per-level probabilities implied by leaf probabilities (a class's mass is the sum of its leaves')."""
        leaf_probabilities = np.asarray(leaf_probabilities, dtype=np.float64)
        paths = self.leaf_paths()
        out = []
        for h, size in enumerate(self.sizes[:-1]):
            level = np.zeros((len(leaf_probabilities), size))
            np.add.at(level.T, paths[:, h], leaf_probabilities.T)
            out.append(level)
        return [*out, leaf_probabilities]

    def decode_consistent(self, level_probabilities: Sequence[np.ndarray], eps: float = 1e-12) -> np.ndarray:
        """The tree path maximising the product of per-level probabilities, for each row.

        Greedy per-level argmaxes can disagree with the tree (a "Sandals" under "Topwear"); this scores every leaf's
        full path, Σ_h log P_h(ancestor_h(leaf)), and returns the best, so the answer is always a valid path.
        """
        if len(level_probabilities) != self.depth:
            raise DataError(f"{len(level_probabilities)} levels of probabilities for a {self.depth}-level taxonomy")
        paths = self.leaf_paths()
        scores = sum(np.log(np.asarray(p, dtype=np.float64)[:, paths[:, h]] + eps)
                     for h, p in enumerate(level_probabilities))
        return paths[np.asarray(scores).argmax(axis=1)]

    # ------------------------------------------------------------------ labels
    def encode(self, manifest: Manifest) -> EncodedLabels:
        """Per-level class indices of every row, from its leaf label (and full raw path where needed).

        Ancestors come from the tree, not the upper label columns, so targets are always consistent; rows whose
        raw upper labels differ from the tree are counted in ``rewritten``.
        """
        leaf_raw = manifest.class_column(self.leaf_level).to_numpy()
        present = [h for h, level in enumerate(self.levels) if level in manifest.class_heads]
        raw = {h: manifest.class_column(self.levels[h]).to_numpy() for h in present}
        full = len(present) == self.depth
        leaf_index = {name: i for i, name in enumerate(self.classes[-1])}
        ambiguous_names = {k.rsplit(PATH_SEPARATOR, 1)[-1] for k in (*self.aliases, *self.dropped)
                           if PATH_SEPARATOR in k} - set(self.aliases) - set(self.dropped)
        dropped = set(self.dropped)
        leaves = np.full(len(leaf_raw), -1, dtype=np.int64)
        result = EncodedLabels(targets=np.empty(0))
        for row, name in enumerate(leaf_raw):
            if name == "":
                result.unlabelled += 1
                continue
            key = path_key([raw[h][row] for h in range(self.depth)]) if full else None
            for candidate in (key, name):
                if candidate is None:
                    continue
                if candidate in self.aliases:
                    leaves[row] = leaf_index[self.aliases[candidate]]
                    break
                if candidate in dropped:
                    result.dropped += 1
                    break
            else:
                if name in leaf_index and name not in ambiguous_names:  # a class name stands for itself
                    leaves[row] = leaf_index[name]
                elif name in ambiguous_names:
                    result.ambiguous += 1
                else:
                    result.unknown += 1
        paths = self.leaf_paths()
        targets = np.where(leaves[:, None] >= 0, paths[np.maximum(leaves, 0)], -1)
        labelled = leaves >= 0
        for h in present:
            names = np.asarray(self.classes[h], dtype=object)[np.maximum(targets[:, h], 0)]
            result.rewritten[self.levels[h]] = int((labelled & (names != raw[h])).sum())
        result.targets = targets
        return result

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_paths(cls, paths: pd.DataFrame, levels: Sequence[str], conflicts: ConflictPolicy = "majority",
                   min_count: int = 0, rare: RarePolicy = "other", counted_on: str = "training") -> Taxonomy:
        """Build a taxonomy from distinct raw label paths and their row counts.

        Args:
            paths: One row per distinct raw path: a column per level, plus optional ``__rows`` (rows with this path,
                used for majority votes) and ``__train_rows`` (rows counted against ``min_count``).
            levels: Level names, top first.
            conflicts: ``majority``, ``split`` or ``error`` (see the module docstring).
            min_count: Classes with fewer counted rows are handled by ``rare``; 0 keeps everything.
            rare: ``other`` or ``drop``.
            counted_on: Which rows ``__train_rows`` counts, for the report.

        Raises:
            DataError: ``conflicts="error"`` and a child has two parents (all such children are named).
        """
        levels = list(levels)
        if conflicts not in CONFLICT_POLICIES:
            raise ConfigError(f"unknown conflict policy '{conflicts}'; use one of {CONFLICT_POLICIES}")
        if rare not in RARE_POLICIES:
            raise ConfigError(f"unknown rare-class policy '{rare}'; use one of {RARE_POLICIES}")
        missing = [c for c in levels if c not in paths.columns]
        if missing or paths.empty:
            raise DataError(f"no labelled paths to build a taxonomy over levels {levels} (missing: {missing})")
        frame = paths.reset_index(drop=True).copy()
        frame[N_ROWS] = frame.get(N_ROWS, 1)
        frame[N_TRAIN] = frame.get(N_TRAIN, frame[N_ROWS])
        raw = frame[levels].astype(str).copy()
        node = raw.copy()
        collapsed = np.zeros(len(frame), dtype=bool)
        dropped_rows = np.zeros(len(frame), dtype=bool)
        report = TaxonomyReport(min_count=min_count, counted_on=counted_on)
        for h, level in enumerate(levels):
            if h > 0:
                # A merged node has one child per level below, of the same name ("Other (Apparel)" twice).
                node.loc[collapsed, level] = node.loc[collapsed, levels[h - 1]]
                report.conflicts += resolve_conflicts(node, frame[N_ROWS], levels, h, conflicts, ~dropped_rows)
            if min_count > 0:
                merge_rare(node, frame[N_TRAIN], levels, h, min_count, rare, collapsed, dropped_rows, report)
        return cls._assemble(levels, raw, node, dropped_rows, report)

    @classmethod
    def _assemble(cls, levels: list[str], raw: pd.DataFrame, node: pd.DataFrame, dropped_rows: np.ndarray,
                  report: TaxonomyReport) -> Taxonomy:
        kept = node[~dropped_rows]
        if kept.empty:
            raise DataError(f"every class was dropped as rare (min_count={report.min_count}); lower min_count")
        classes: list[tuple[str, ...]] = []
        parents: list[tuple[int, ...]] = []
        for h, level in enumerate(levels):
            names = tuple(sorted(kept[level].unique()))
            classes.append(names)
            if h == 0:
                parents.append(())
                continue
            parent_of = kept.drop_duplicates(level).set_index(level)[levels[h - 1]]
            index = {n: i for i, n in enumerate(classes[h - 1])}
            parents.append(tuple(index[parent_of[n]] for n in names))
        leaf = levels[-1]
        # A raw leaf name whose paths end in different places needs its full path as the alias key.
        outcome = pd.Series(np.where(dropped_rows, "", node[leaf].to_numpy()), index=raw.index)
        ambiguous = raw[leaf].map(outcome.groupby(raw[leaf]).nunique()) > 1
        keys = [path_key(r) if a else r[-1] for r, a in zip(raw[levels].to_numpy().tolist(), ambiguous, strict=True)]
        aliases = {k: n for k, n, d in zip(keys, node[leaf], dropped_rows, strict=True) if not d}
        dropped = tuple(sorted({k for k, d in zip(keys, dropped_rows, strict=True) if d}))
        return cls(tuple(levels), tuple(classes), tuple(parents), aliases, dropped, report)

    @classmethod
    def from_manifest(cls, manifest: Manifest, levels: Sequence[str], conflicts: ConflictPolicy = "majority",
                      min_count: int = 0, rare: RarePolicy = "other") -> Taxonomy:
        """Build a taxonomy from the level columns of ``manifest`` (rows with every level labelled).

        The structure uses every split's labels (a taxonomy is label metadata, so a class seen only in validation
        is still known); ``min_count`` counts the ``train`` rows when the manifest has a train split, else all rows.
        """
        for level in levels:
            manifest.class_column(level)  # raises DataError naming an unknown head
        frame = pd.DataFrame({level: manifest.class_column(level).to_numpy() for level in levels})
        labelled = (frame != "").all(axis=1).to_numpy()
        if not labelled.any():
            raise DataError(f"manifest '{manifest.name}' has no row with all of {list(levels)} labelled")
        is_train = (manifest.frame["split"] == "train").to_numpy()
        counted = is_train if is_train[labelled].any() else np.ones(len(frame), dtype=bool)
        frame[N_ROWS], frame[N_TRAIN] = 1, counted.astype(int)
        paths = frame[labelled].groupby(list(levels), sort=True, as_index=False)[[N_ROWS, N_TRAIN]].sum()
        return cls.from_paths(paths, levels, conflicts, min_count, rare,
                              counted_on="training" if is_train[labelled].any() else "labelled")

    @classmethod
    def from_tree(cls, tree: Mapping[str, Any], levels: Sequence[str], conflicts: ConflictPolicy = "error",
                  leaf_counts: Mapping[str, int] | None = None, min_count: int = 0,
                  rare: RarePolicy = "other", where: str = "taxonomy") -> Taxonomy:
        """Build a taxonomy from a nested mapping ``{parent: {child: [leaf, ...]}}`` (lists at the last level).

        Args:
            tree: The nested tree; its depth must equal ``len(levels)``.
            levels: Level names, which are the manifest class heads (the leaf level must be a manifest column).
            conflicts: Policy for a class listed under two parents (votes use ``leaf_counts``; ties go to the
                parent listed first).
            leaf_counts: Training rows per leaf name, for ``min_count`` and majority votes.
            min_count: See :meth:`from_paths` (ignored without ``leaf_counts``).
            rare: See :meth:`from_paths`.
            where: Name of the source in error messages.

        Raises:
            ConfigError: The tree is malformed (the offending key path is named).
        """
        rows = [(*path, leaf) for path, leaf in walk_tree(tree, len(levels), where)]
        paths = pd.DataFrame(rows, columns=list(levels))
        counts = paths[levels[-1]].map(dict(leaf_counts or {})).fillna(0).astype(int)
        paths[N_ROWS], paths[N_TRAIN] = counts, counts
        return cls.from_paths(paths, levels, conflicts, min_count if leaf_counts is not None else 0, rare)

    @classmethod
    def from_yaml(cls, path: str | Path, conflicts: ConflictPolicy = "error",
                  leaf_counts: Mapping[str, int] | None = None, min_count: int = 0,
                  rare: RarePolicy = "other") -> Taxonomy:
        """Load a user-written taxonomy (a file, or a shipped config name such as ``deepfashion_taxonomy``):
        ``levels: [...]`` and ``tree: {...}``."""
        try:
            path = resolve_config(path)
        except ConfigError:
            raise ConfigError(f"taxonomy file not found: {path}") from None
        try:
            document = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as error:
            raise ConfigError(f"cannot parse taxonomy YAML {path}: {str(error).splitlines()[0]}") from error
        if not isinstance(document, dict) or set(document) != {"levels", "tree"}:
            keys = sorted(document) if isinstance(document, dict) else type(document).__name__
            raise ConfigError(f"taxonomy {path} must be a mapping with exactly the keys 'levels' and 'tree', "
                              f"got {keys}")
        levels = document["levels"]
        if not isinstance(levels, list) or not levels or not all(isinstance(v, str) for v in levels):
            raise ConfigError(f"taxonomy {path}: 'levels' must be a list of level names")
        return cls.from_tree(document["tree"], levels, conflicts, leaf_counts, min_count, rare, where=str(path))

    # ------------------------------------------------------------------ persistence
    def to_json(self) -> dict[str, Any]:
        """Plain data for ``labels.json``."""
        return {"levels": list(self.levels), "classes": [list(c) for c in self.classes],
                "parents": [list(p) for p in self.parents], "aliases": dict(self.aliases),
                "dropped": list(self.dropped), "report": self.report.to_json()}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Taxonomy:
        """Inverse of :meth:`to_json`."""
        try:
            return cls(tuple(data["levels"]), tuple(tuple(c) for c in data["classes"]),
                       tuple(tuple(int(i) for i in p) for p in data["parents"]), dict(data.get("aliases", {})),
                       tuple(data.get("dropped", ())), TaxonomyReport.from_json(data.get("report", {})))
        except (KeyError, TypeError) as error:
            raise ConfigError(f"malformed taxonomy document: missing or invalid {error}") from error
