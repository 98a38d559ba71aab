"""Probability-level ensembles of taggers, and the loader of either."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np

from fashionlens import __version__
from fashionlens.data.records import Manifest
from fashionlens.errors import ModelError
from fashionlens.tasks.common.model_dir import read_model_dir, save_model_dir
from fashionlens.tasks.labels import LabelSpace
from fashionlens.tasks.registry import KIND_KEY, VERSION_KEY, check_kind, load_model, register_model
from fashionlens.tasks.tagging.model import Predictions, Tagger, threshold_array, threshold_set
from fashionlens.tasks.tagging.thresholds import apply_thresholds, tune_thresholds


@register_model
class TaggerEnsemble:
    """Probability-level ensemble: a (weighted) mean of members' probabilities, then its own threshold sets.

    Like :class:`Tagger`, it keeps one threshold set per β (:meth:`fit_thresholds` tunes F1 and the asked β) and
    decides with F1 by default.
    """

    kind: ClassVar[str] = "ensemble"

    def __init__(self, members: Sequence[Tagger], weights: Sequence[float] | None = None,
                 thresholds: np.ndarray | None = None, member_dirs: Sequence[str] = (),
                 threshold_sets: dict[float, np.ndarray] | None = None):
        if not members:
            raise ModelError("an ensemble needs at least one member")
        first = members[0].labels
        for member in members[1:]:
            if member.labels.tags != first.tags or member.labels.heads != first.heads:
                raise ModelError("ensemble members predict different labels; train them on the same label space")
        weights = list(weights) if weights is not None else [1.0] * len(members)
        if len(weights) != len(members) or any(w < 0 for w in weights) or sum(weights) <= 0:
            raise ModelError(f"ensemble weights {weights} must be {len(members)} non-negative numbers, not all zero")
        self.members = list(members)
        self.weights = np.asarray(weights, dtype=np.float64) / sum(weights)
        self.labels = first
        self.threshold_sets = dict(threshold_sets or {})
        self._fixed = thresholds if thresholds is not None else np.full(len(first.tags), 0.5, dtype=np.float32)
        self.member_dirs = list(member_dirs)
        # The β that fit_thresholds tuned for: its set is what thresholds.json holds, as for a Tagger's config.beta.
        self.tuned_beta = next((b for b, v in self.threshold_sets.items()
                                if thresholds is not None and np.allclose(v, thresholds)), None)

    @property
    def thresholds(self) -> np.ndarray:
        """The default decision set: F1 when tuned, else the one set given (0.5 by default)."""
        if self.threshold_sets:
            return self.threshold_sets.get(1.0, self.threshold_sets[min(self.threshold_sets)])
        return self._fixed

    def thresholds_for(self, beta: float | None = None) -> np.ndarray:
        """The set tuned for F-beta (``None``: the default decision set)."""
        return threshold_set(self.threshold_sets, beta, self.thresholds, "ensemble")

    @property
    def tag_names(self) -> list[str]:
        """The first member's display names."""
        return self.members[0].tag_names

    def predict(self, manifest: Manifest, device: str | None = None, show_progress: bool = True,
                skip_bad_images: bool = False, runtime: str | None = None) -> Predictions:
        """Weighted mean of the members' probabilities (NaN rows for unreadable images with ``skip_bad_images``)."""
        return self.combine([m.predict(manifest, device=device, show_progress=show_progress,
                                       skip_bad_images=skip_bad_images, runtime=runtime) for m in self.members])

    def combine(self, outputs: Sequence[Predictions]) -> Predictions:
        """The ensemble's probabilities from its members' (in member order): their weighted mean.

        The one place members are averaged, whether they predicted a manifest (:meth:`predict`) or a batch the
        service ran through their backbones.
        """
        if len(outputs) != len(self.members):
            raise ModelError(f"an ensemble of {len(self.members)} members got {len(outputs)} members' predictions")
        tags = sum(w * o.tags for w, o in zip(self.weights, outputs, strict=True))
        heads = {h: np.asarray(sum(w * o.heads[h] for w, o in zip(self.weights, outputs, strict=True)),
                               dtype=np.float32) for h in self.labels.heads}
        return Predictions(tags=np.asarray(tags, dtype=np.float32), heads=heads)

    def decide(self, predictions: Predictions, beta: float | None = None) -> np.ndarray:
        """Boolean decisions with the ensemble's F-``beta`` thresholds (default: the F1 set)."""
        return apply_thresholds(predictions.tags, self.thresholds_for(beta))

    def fit_thresholds(self, manifest: Manifest, beta: float = 2.0, show_progress: bool = True) -> Predictions:
        """Tune per-label thresholds for F1 and F-``beta`` on the ``val`` split of ``manifest``; returns its
        predictions."""
        rows = manifest.split_subset("val")
        predictions = self.predict(rows, show_progress=show_progress)
        truth = self.labels.tag_targets(rows)
        self.threshold_sets = {b: tune_thresholds(truth, predictions.tags, self.labels, b)
                               for b in sorted({1.0, float(beta)})}
        self.tuned_beta = float(beta)
        return predictions

    def save(self, path: str | Path) -> Path:
        """Write ``ensemble.json`` (member directories and weights), labels, thresholds (the set tuned for the β of
        :meth:`fit_thresholds`, as a tagger's ``thresholds.json`` holds its ``config.beta`` set) and every set."""
        sets = {f"{b:g}": dict(zip(self.labels.tags, map(float, v), strict=True))
                for b, v in sorted(self.threshold_sets.items())}
        documents = {"config": {KIND_KEY: self.kind, VERSION_KEY: __version__},
                     "ensemble": {"members": self.member_dirs, "weights": self.weights.tolist()},
                     "labels": self.labels.to_json(),
                     "thresholds": dict(zip(self.labels.tags, map(float, self.thresholds_for(self.tuned_beta)),
                                            strict=True)),
                     "threshold_sets": sets}
        return save_model_dir(path, {}, documents)

    @classmethod
    def load(cls, path: str | Path) -> TaggerEnsemble:
        """Load an ensemble directory and its members."""
        check_kind(path, cls.kind)  # ensembles of earlier versions have no config.json: they load too
        _, docs = read_model_dir(path, ["ensemble", "labels", "thresholds"], optional_json=["threshold_sets"])
        members = [Tagger.load(d) for d in docs["ensemble"]["members"]]
        labels = LabelSpace.from_json(docs["labels"])
        thresholds = threshold_array(docs["thresholds"], labels, f"{path}/thresholds.json")
        try:
            sets = {float(b): threshold_array(doc, labels, f"{path}/threshold_sets.json[{b}]")
                    for b, doc in (docs.get("threshold_sets") or {}).items()}
        except ValueError as error:
            raise ModelError(f"{path}/threshold_sets.json has a key that is not a beta: {error}") from error
        return cls(members, docs["ensemble"]["weights"], thresholds, docs["ensemble"]["members"], sets)


def load_tagger(path: str | Path) -> Tagger | TaggerEnsemble:
    """Load a tagger or an ensemble directory (:func:`~fashionlens.tasks.registry.load_model`, typed).

    Raises:
        ModelError: The directory holds no model, a model of no or an unknown kind, or one of another kind.
    """
    model: Tagger | TaggerEnsemble = load_model(path, kinds=(Tagger.kind, TaggerEnsemble.kind))
    return model
