"""What a batch-inference job runs: a picklable model spec, and the loaded model as a feature → outputs function.

Batch engines never pickle a model: they pass a :class:`ModelSpec` (task + model directory), and each worker
(an in-process loop, or a Ray actor on another machine) calls :meth:`ModelSpec.load` once, through the model-kind
registry (:func:`~fashionlens.tasks.registry.load_model`). The loaded :class:`BatchModel` is the project's own model
(:class:`~fashionlens.tasks.tagging.Tagger`, :class:`~fashionlens.tasks.hierarchy.HierarchyClassifier` or
:class:`~fashionlens.tasks.retrieval.Embedder`) seen through one interface: a backbone that turns preprocessed images
into pooled features, and :meth:`BatchModel.outputs` that turns those features into the columns a shard stores.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from fashionlens.errors import ConfigError
from fashionlens.runtime import check_runtime

Task = Literal["tag", "hierarchy", "embed"]
TASKS: tuple[Task, ...] = ("tag", "hierarchy", "embed")
TASK_KINDS: dict[str, tuple[str, ...]] = {"tag": ("tagger",), "hierarchy": ("hierarchy",), "embed": ("embedder",)}
"""The model kinds each task runs (an ensemble's members may need different backbones: run them one by one)."""


@dataclass(frozen=True)
class ModelSpec:
    """Which model a job runs; small and picklable, so it can travel to Ray actors on other machines.

    Attributes:
        task: ``tag`` (a saved tagger directory), ``hierarchy`` (a hierarchy classifier directory) or ``embed`` (a
            saved embedder directory, or the untrained baseline).
        path: The model directory; ``None`` only for the untrained ImageNet embedder of ``backbone``.
        backbone: Backbone of the untrained embedder (ignored when ``path`` is given).
        runtime: Where the backbone runs (``auto``, ``torch``, ``onnx``; see
            :func:`~fashionlens.runtime.compiled.compile_backbone`). Runtimes agree to ~1e-6, so a job may resume
            under another one.
    """

    task: Task
    path: str | None = None
    backbone: str = "efficientnet_lite0"
    runtime: str = "auto"

    def __post_init__(self) -> None:
        check_runtime(self.runtime)
        if self.task not in TASKS:
            raise ConfigError(f"unknown batch task '{self.task}'; use one of {TASKS}")
        if self.task != "embed" and self.path is None:
            raise ConfigError(f"a {self.task} job needs a model directory (--model)")

    def load(self) -> BatchModel:
        """Load the model (once per worker).

        Raises:
            ModelError: Missing or inconsistent model directory, or one of another kind than the task runs (e.g. a
                tagger ensemble, whose members may need different backbones and input sizes).
        """
        from fashionlens.tasks.registry import load_model

        if self.path is not None:
            return BatchModel(self, load_model(self.path, kinds=TASK_KINDS[self.task]))
        from fashionlens.models.backbones import BackboneConfig
        from fashionlens.tasks.retrieval import Embedder

        return BatchModel(self, Embedder.untrained(BackboneConfig(name=self.backbone)))


class BatchModel:
    """A loaded tagger, hierarchy classifier or embedder seen as ``images → backbone features → output columns``.

    Output columns (each a 2-D array with one row per image): ``probs`` (tag probabilities), ``decisions`` (tags at
    the saved thresholds) and ``head:<name>`` (class probabilities of each multi-class head) for taggers;
    ``level:<level>`` (class probabilities of each taxonomy level, the model's own outputs) for hierarchy
    classifiers; ``embedding`` for embedders.
    """

    def __init__(self, spec: ModelSpec, model: Any):
        self.spec = spec
        self.model = model
        self.backbone: Any = model.backbone
        self.backbone.eval()

    @property
    def preprocess(self) -> Any:
        """The backbone's input preprocessing (input size, mean, std)."""
        return self.backbone.preprocess

    def outputs(self, features: np.ndarray) -> dict[str, np.ndarray]:
        """Output columns from pooled features ``(n, num_features)``; rows of unread images (NaN features) get NaN
        outputs (and no tag decisions)."""
        bad = ~np.isfinite(features).all(axis=1)
        features = np.where(bad[:, None], 0.0, features).astype(np.float32) if bad.any() else features
        if self.spec.task == "embed":
            columns = {"embedding": self.model.embed_features(features.astype(np.float32))}
        elif self.spec.task == "hierarchy":
            columns = self.model.head_outputs(features)
        else:
            predictions = self.model.predict_features(features)
            columns = {"probs": predictions.tags, "decisions": self.model.decide(predictions)}
            columns.update({f"head:{name}": probs for name, probs in predictions.heads.items()})
        for values in columns.values():
            values[bad] = False if values.dtype == bool else np.nan
        return columns

    def identity(self) -> dict[str, Any]:
        """What the job record stores about the model: its fingerprint and what the output columns mean."""
        if self.spec.task == "embed":
            return {"fingerprint": model_fingerprint(self.spec, self.model.model_id),
                    "model_id": self.model.model_id, "metric": self.model.metric, "dim": self.model.dim}
        if self.spec.task == "hierarchy":
            taxonomy = self.model.taxonomy
            return {"fingerprint": model_fingerprint(self.spec, None), "levels": list(taxonomy.levels),
                    "classes": [list(c) for c in taxonomy.classes]}
        return {"fingerprint": model_fingerprint(self.spec, None), "tags": list(self.model.labels.tags),
                "heads": {h: list(c) for h, c in self.model.labels.heads.items()}}


def model_fingerprint(spec: ModelSpec, model_id: str | None) -> str:
    """Hash of every file of the model directory (weights, thresholds, labels...), or the untrained model's id.

    A resumed job must run the very same model as the shards already written, and a re-saved model (new thresholds,
    retrained head) must not be mixed with shards of the old one.
    """
    digest = hashlib.sha1(spec.task.encode())
    if spec.path is None:
        digest.update(f"untrained|{model_id}".encode())
        return digest.hexdigest()[:20]
    root = Path(spec.path)
    for file in sorted(p for p in root.iterdir() if p.is_file()):  # not report/ folders written beside the model
        digest.update(file.name.encode())
        with file.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()[:20]
