"""The label space of a tagging model: binary tags and multi-class heads, and their targets from a manifest."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fashionlens.data.records import Manifest
from fashionlens.errors import DataError

EXPANDED_SEPARATOR = "="


@dataclass
class LabelSpace:
    """What a tagging model predicts.

    Attributes:
        tags: Binary label names (one sigmoid each). Names like ``baseColour=Black`` come from a multi-class
            column expanded into one-vs-rest tags.
        heads: Multi-class head name → its class names (one softmax each).
        expanded: Heads that were expanded into tags.
    """

    tags: list[str]
    heads: dict[str, list[str]] = field(default_factory=dict)
    expanded: list[str] = field(default_factory=list)

    @classmethod
    def from_manifest(cls, manifest: Manifest, tags: Sequence[str] | None = None,
                      heads: Sequence[str] | None = None, expand_heads: Sequence[str] = (),
                      min_class_count: int = 1) -> LabelSpace:
        """Build the label space from (the training rows of) ``manifest``.

        Args:
            manifest: Training rows.
            tags: Tag columns to learn (default: all).
            heads: Multi-class heads to learn with softmax (default: all that are not expanded).
            expand_heads: Multi-class heads to learn as one-vs-rest tags ``head=class`` instead.
            min_class_count: Classes seen fewer times than this in training are left out.
        """
        known_tags = manifest.tag_names
        chosen_tags = list(known_tags if tags is None else tags)
        unknown = [t for t in chosen_tags if t not in known_tags]
        if unknown:
            raise DataError(f"unknown tag(s) {unknown} in manifest '{manifest.name}'; known: {known_tags}")
        for head in expand_heads:
            counts = manifest.class_column(head).replace("", np.nan).dropna().value_counts()
            chosen_tags += [f"{head}{EXPANDED_SEPARATOR}{c}" for c in sorted(counts[counts >= min_class_count].index)]
        head_names = [h for h in (manifest.class_heads if heads is None else heads) if h not in expand_heads]
        head_classes: dict[str, list[str]] = {}
        for head in head_names:
            counts = manifest.class_column(head).replace("", np.nan).dropna().value_counts()
            head_classes[head] = sorted(counts[counts >= min_class_count].index)
        if not chosen_tags and not head_classes:
            raise DataError(f"manifest '{manifest.name}' has no labels to learn (no tag or class columns chosen)")
        return cls(tags=chosen_tags, heads=head_classes, expanded=list(expand_heads))

    def tag_targets(self, manifest: Manifest) -> np.ndarray:
        """``(n, len(tags))`` float targets: 1/0, NaN where unlabelled."""
        plain = [t for t in self.tags if EXPANDED_SEPARATOR not in t or t in manifest.tag_names]
        columns: dict[str, np.ndarray] = {}
        if plain:
            matrix = manifest.tag_matrix(plain)
            columns.update({name: matrix[:, i] for i, name in enumerate(plain)})
        for head in self.expanded:
            values = manifest.class_column(head).to_numpy()
            labelled = values != ""
            for tag in self.tags:
                if tag.startswith(head + EXPANDED_SEPARATOR) and tag not in columns:
                    cls_name = tag[len(head) + 1:]
                    columns[tag] = np.where(labelled, (values == cls_name).astype(np.float32), np.nan)
        return np.stack([columns[t] for t in self.tags], axis=1).astype(np.float32) if self.tags else \
            np.zeros((len(manifest), 0), dtype=np.float32)

    def head_targets(self, manifest: Manifest) -> dict[str, np.ndarray]:
        """Per head, ``(n,)`` class indices with -1 for unlabelled (or a class unknown to the model)."""
        targets = {}
        for head, classes in self.heads.items():
            lookup = {c: i for i, c in enumerate(classes)}
            targets[head] = np.array([lookup.get(v, -1) for v in manifest.class_column(head)], dtype=np.int64)
        return targets

    def to_json(self) -> dict[str, Any]:
        """Plain data for ``labels.json``."""
        return {"tags": self.tags, "heads": self.heads, "expanded": self.expanded}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LabelSpace:
        """Inverse of :meth:`to_json`."""
        return cls(tags=list(data["tags"]), heads={k: list(v) for k, v in data.get("heads", {}).items()},
                   expanded=list(data.get("expanded", [])))
