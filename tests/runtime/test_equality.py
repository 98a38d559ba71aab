"""onnxruntime and PyTorch give the same predictions for every model kind, frozen and fine-tuned, on real photos.

Each model predicts the same catalogue and street photos twice through its own ``predict`` (decode policy, feature
extraction, head, activation), once per runtime, each with an empty feature cache of its own so that neither reads
the other's vectors.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from fashionlens.data.records import Manifest
from fashionlens.models import BackboneConfig, build_backbone
from fashionlens.models.embedding import EmbeddingHead
from fashionlens.models.heads import TaggingHead
from fashionlens.tasks.common import state_fingerprint
from fashionlens.tasks.hierarchy import HierarchyClassifier, HierarchyConfig, build_head
from fashionlens.tasks.hierarchy.taxonomy import Taxonomy
from fashionlens.tasks.labels import LabelSpace
from fashionlens.tasks.retrieval import Embedder, RetrievalConfig
from fashionlens.tasks.tagging import Tagger, TaggerEnsemble, TaggingConfig

TOLERANCE = 1e-4
LABELS = LabelSpace(tags=["red", "striped", "collar"], heads={"sleeve": ["long", "short", "none"]})
TAXONOMY = Taxonomy.from_json({"levels": ["master", "article"], "classes": [["Apparel", "Footwear"],
                                                                             ["Shirt", "Jeans", "Shoe"]],
                               "parents": [[], [0, 0, 1]]})
BACKBONE = BackboneConfig(num_workers=0)


@pytest.fixture(scope="module")
def photos(shared_data: Path) -> Manifest:
    """Four catalogue photos, two street photos and one 1800x2400 original (the decode policy shrinks it)."""
    products = sorted((shared_data / "fashion-product-images" / "images").glob("*.jpg"))[:4]
    street = sorted((shared_data / "clothing-attributes" / "images").glob("*.jpg"))[:2]
    original = sorted((shared_data / "fashion-product-images-hires" / "images").glob("*.jpg"))[:1]
    return Manifest(pd.DataFrame({"path": [str(p) for p in [*products, *street, *original]]}), name="photos")


def finetuned_backbone(seed: int) -> Any:
    """EfficientNet-Lite0 as fine-tuning leaves it: changed weights, identified by their fingerprint."""
    backbone = build_backbone(BACKBONE, finetune=True)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in backbone.parameters():
            parameter.mul_(1 + 0.05 * torch.randn(parameter.shape, generator=generator))
    backbone.weights_id = state_fingerprint(backbone)
    return backbone


def tagger(mode: str, seed: int = 0) -> Tagger:
    backbone = finetuned_backbone(seed) if mode == "finetune" else None
    torch.manual_seed(seed)
    head = TaggingHead(1280, len(LABELS.tags), {"sleeve": 3}, hidden=32, dropout=0.0)
    return Tagger(TaggingConfig(backbone=BACKBONE, mode=mode, hidden=32), LABELS, head, np.full(3, 0.5),
                  backbone=backbone)


def hierarchy(mode: str) -> HierarchyClassifier:
    backbone = finetuned_backbone(2) if mode == "finetune" else None
    config = HierarchyConfig(backbone=BACKBONE, mode=mode, hidden=32)
    torch.manual_seed(0)
    return HierarchyClassifier(config, TAXONOMY, build_head(config, TAXONOMY, 1280), backbone=backbone)


def embedder(mode: str) -> Embedder:
    if mode == "untrained":
        return Embedder.untrained(BACKBONE)
    backbone = finetuned_backbone(3) if mode == "finetune" else build_backbone(BACKBONE)
    torch.manual_seed(0)
    return Embedder(RetrievalConfig(backbone=BACKBONE, mode=mode, dim=64), EmbeddingHead(1280, 64, None),
                    backbone.weights_id, backbone if mode == "finetune" else None)


MODELS: dict[str, Callable[[], Any]] = {
    "tagger-features": lambda: tagger("features"),
    "tagger-finetune": lambda: tagger("finetune"),
    "ensemble": lambda: TaggerEnsemble([tagger("features", 0), tagger("finetune", 1)], [0.3, 0.7]),
    "hierarchy-features": lambda: hierarchy("features"),
    "hierarchy-finetune": lambda: hierarchy("finetune"),
    "embedder-features": lambda: embedder("features"),
    "embedder-finetune": lambda: embedder("finetune"),
    "embedder-untrained": lambda: embedder("untrained"),
}


def outputs(predictions: Any) -> dict[str, np.ndarray]:
    """Every array a prediction holds, by name."""
    if isinstance(predictions, np.ndarray):
        return {"embeddings": predictions}
    if hasattr(predictions, "tags"):
        return {"tags": predictions.tags, **{f"class:{h}": p for h, p in predictions.heads.items()}}
    return {f"level{i}": p for i, p in enumerate(predictions.probabilities)} | {"paths": predictions.paths}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(MODELS))
def test_onnxruntime_and_pytorch_agree(name: str, photos: Manifest, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    model = MODELS[name]()
    results = {}
    for runtime in ("torch", "onnx"):
        monkeypatch.setenv("FASHIONLENS_CACHE", str(tmp_path / runtime))  # features computed afresh per runtime
        results[runtime] = outputs(model.predict(photos, show_progress=False, runtime=runtime))
    assert (tmp_path / "onnx" / "onnx").is_dir()  # the ONNX runtime really ran (its compiled graph is cached there)
    for key, reference in results["torch"].items():
        assert np.isfinite(reference).all()
        difference = float(np.abs(results["onnx"][key] - reference).max())
        assert difference < TOLERANCE, f"{name} {key}: onnxruntime differs from PyTorch by {difference:.2g}"
