"""The :class:`Embedder`: images → vectors for a catalogue index (a backbone's pooled features, then an
:class:`~fashionlens.models.embedding.EmbeddingHead`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from fashionlens.data.records import Manifest
from fashionlens.errors import ModelError
from fashionlens.features import extract_features
from fashionlens.models.backbones import Backbone, BackboneConfig, build_backbone
from fashionlens.models.embedding import EmbeddingHead
from fashionlens.tasks.base import TaskModel, load_head
from fashionlens.tasks.common import manifest_of_paths, state_fingerprint
from fashionlens.tasks.registry import register_model
from fashionlens.tasks.retrieval.config import RetrievalConfig


@register_model
class Embedder(TaskModel[np.ndarray]):
    """A trained (or untrained baseline) embedding model: images → vectors for a catalogue index.

    Args:
        config: How it was built.
        head: The embedding head on pooled backbone features.
        weights_id: Identity of the backbone weights whose features the head expects.
        backbone: The fine-tuned backbone (``finetune`` mode); ``None`` builds the pretrained one when needed.
        metrics_summary: Validation scores from training.
    """

    kind: ClassVar[str] = "embedder"
    config_class: ClassVar[type] = RetrievalConfig
    required_documents: ClassVar[tuple[str, ...]] = ("embedder",)
    config: RetrievalConfig
    head: EmbeddingHead

    def __init__(self, config: RetrievalConfig, head: EmbeddingHead, weights_id: str,
                 backbone: Backbone | None = None, metrics_summary: Mapping[str, Any] | None = None):
        super().__init__(config, head, backbone, weights_id, metrics_summary)
        self.weights_id: str = weights_id

    @classmethod
    def untrained(cls, backbone: BackboneConfig | None = None, normalize: bool = True) -> Embedder:
        """The baseline: pretrained (ImageNet) pooled features, no projection, L2-normalised by default."""
        config = RetrievalConfig(backbone=backbone or BackboneConfig(), dim=None, normalize=normalize)
        network = build_backbone(config.backbone)
        return cls(config, EmbeddingHead(network.num_features, None, None, normalize), network.weights_id, network)

    @property
    def dim(self) -> int:
        """Width of the embeddings."""
        return self.head.out_features

    @property
    def metric(self) -> str:
        """Catalogue index metric: ``ip`` (cosine) for normalised embeddings, else ``l2`` (squared L2, as trained)."""
        return "ip" if self.config.normalize else "l2"

    @property
    def model_id(self) -> str:
        """Backbone name, weights id and head fingerprint: what a catalogue index records and checks."""
        norm = "l2norm" if self.config.normalize else "raw"
        return f"{self.config.backbone.name}|{self.weights_id}|head-{state_fingerprint(self.head)}|{norm}"

    @property
    def output_names(self) -> list[str]:
        """``embeddings``."""
        return ["embeddings"]

    def activate(self, raw_outputs: Any) -> dict[str, torch.Tensor]:
        """The head's output is the embedding (normalised by the head when the config says so)."""
        return {"embeddings": raw_outputs.float()}

    def from_outputs(self, outputs: Mapping[str, np.ndarray], n_rows: int) -> np.ndarray:
        """Embeddings ``(n_rows, dim)``."""
        return np.asarray(outputs.get("embeddings", np.zeros((n_rows, self.dim), np.float32)), dtype=np.float32)

    def embed_features(self, features: np.ndarray) -> np.ndarray:
        """Embeddings ``(n, dim)`` of pooled backbone features ``(n, in_features)`` (:meth:`predict_features`)."""
        return self.predict_features(features)

    def embed(self, manifest: Manifest, show_progress: bool = False) -> np.ndarray:
        """Embeddings ``(len(manifest), dim)`` of a manifest's images (box crops when boxes exist; :meth:`predict`).

        Raises:
            DataError: Some images cannot be read (named).
        """
        return self.predict(manifest, show_progress=show_progress)

    def embed_paths(self, paths: Sequence[str | Path], runtime: str | None = None) -> np.ndarray:
        """Embeddings of query photos (see :meth:`embed_queries`).

        Raises:
            ImageError: A file is missing or not a decodable image.
        """
        return self.embed_queries(manifest_of_paths(paths, name="queries"), runtime)

    def embed_queries(self, queries: Manifest, runtime: str | None = None) -> np.ndarray:
        """Embeddings of query photos (cropped to their ``bbox_*`` boxes, if any); a bad file stops the batch with an
        :class:`ImageError` naming it and its problem.

        One-off queries bypass the feature cache: looking them up would load every cached vector, and storing them
        would fill the cache with photos never seen again.

        Raises:
            ImageError: A file is missing or not a decodable image.
        """
        network: Any = self.backbone  # a Backbone's frozen Preprocess satisfies CompilableBackbone only at run time
        result = extract_features(queries, network, cache_dir=None, batch_size=self.config.backbone.batch_size,
                                  num_workers=0, show_progress=False, runtime=runtime or self.config.backbone.runtime)
        return self.embed_features(result.vectors)

    def documents(self) -> dict[str, Any]:
        """``embedder.json``: model id, weights id, widths and index metric (what a catalogue index checks)."""
        return {"embedder": {"model_id": self.model_id, "weights_id": self.weights_id,
                             "in_features": self.head.in_features, "dim": self.dim, "metric": self.metric}}

    @classmethod
    def from_saved(cls, path: Path, config: Any, state: Mapping[str, Any], documents: Mapping[str, Any],
                   backbone: Backbone | None, weights_id: str | None) -> Embedder:
        """The embedder of a saved directory (see :meth:`TaskModel.load`); its model id must match
        ``embedder.json``."""
        identity = documents["embedder"]
        if not isinstance(identity, dict) or not {"in_features", "weights_id", "model_id"} <= set(identity):
            raise ModelError(f"{path}/embedder.json must hold in_features, weights_id and model_id")
        head = EmbeddingHead(int(identity["in_features"]), config.dim, config.hidden, config.normalize)
        load_head(head, state, path, "config.json")
        embedder = cls(config, head, str(identity["weights_id"]), backbone, documents.get("metrics"))
        if embedder.model_id != identity["model_id"]:
            raise ModelError(f"{path}/model.pt does not produce model id {identity['model_id']!r} recorded in "
                             f"embedder.json (got {embedder.model_id!r}); the directory was modified")
        return embedder

