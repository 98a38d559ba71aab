"""ONNX export of taggers, hierarchy classifiers and embedders, and a small onnxruntime runner for the exported files.

A saved model directory holds only what training produced: a feature-mode tagger keeps its head and the *name* of
the frozen backbone, not the backbone's weights. :func:`export_onnx` joins the two into one graph, images in,
probabilities (or embeddings) out, with a dynamic batch axis, so the file can be served by onnxruntime alone.

Everything a server needs besides the graph is recorded in the ONNX ``metadata_props`` (JSON-encoded values):

* ``kind`` (``tagger`` / ``hierarchy`` / ``embedder``), ``fashionlens_version``, ``source_model``, ``backbone``,
  ``weights_id``, ``mode``;
* ``preprocessing``: the input size, mean and std of the backbone's :class:`~fashionlens.models.backbones.Preprocess`
  and the resize / crop that fashionlens' own :func:`~fashionlens.data.transforms.eval_transform` applies to them
  (read off the transform object, so the record cannot drift from what the PyTorch model was fed);
* ``input_name``, ``outputs`` (names in graph order), ``labels`` (tags and each head's classes) and ``thresholds``
  (taggers), ``levels``, ``classes`` and ``decoding`` (hierarchy classifiers: the outputs are each level's
  probabilities), or ``model_id``, ``metric``, ``normalize`` and ``dim`` (embedders; a catalogue index built by the
  PyTorch embedder records the same ``model_id``).

The graph is the model's own :meth:`~fashionlens.tasks.base.TaskModel.inference_graph` (backbone, head and output
activation), so the export and the PyTorch model cannot compute different things.

:class:`OnnxModel` reads that metadata back and prepares PIL images with the recorded preprocessing through the
project's transforms; :func:`verify_export` compares it, end to end on image files, with the PyTorch model's own
prediction path, so a difference in either the graph or the preprocessing shows up.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision.transforms import v2

from fashionlens import __version__
from fashionlens.data.dataset import ManifestImageDataset, collate_skipping
from fashionlens.data.images import DECODE_MAX_SIDE, decode_for_model
from fashionlens.data.records import Manifest
from fashionlens.data.transforms import describe, eval_transform
from fashionlens.errors import ModelError
from fashionlens.features import extract_features
from fashionlens.io import atomic_path
from fashionlens.models.backbones import Preprocess
from fashionlens.runtime import forward_batches
from fashionlens.runtime.compiled import INPUT_NAME, ONNX_OPSET, OnnxForward, export_graph
from fashionlens.tasks.common import manifest_of_paths
from fashionlens.tasks.registry import load_model
from fashionlens.tasks.registry import model_kind as recorded_kind

KINDS = ("tagger", "hierarchy", "embedder")
OPSET = ONNX_OPSET
DEFAULT_ATOL = 1e-4
"""Largest absolute difference from PyTorch that :func:`export_onnx` accepts when verifying: float32 kernels of the
two runtimes sum in different orders, which moves probabilities and unit-length embeddings by about 1e-6."""



@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_onnx` wrote.

    Attributes:
        path: The ``.onnx`` file.
        kind: ``tagger`` or ``embedder``.
        outputs: Output names, in graph order.
        max_abs_diff: Largest difference from PyTorch on the verification images (``None``: not verified).
        images_verified: How many images were compared.
    """

    path: Path
    kind: str
    outputs: list[str]
    max_abs_diff: float | None = None
    images_verified: int = 0


# ---------------------------------------------------------------------------------------------------------- kinds
def model_kind(model_dir: str | Path) -> str:
    """Which exportable model a directory holds (its recorded kind): ``tagger``, ``hierarchy`` or ``embedder``.

    Raises:
        ModelError: Not a model directory (see :func:`fashionlens.tasks.registry.model_kind`), or a tagger ensemble.
    """
    kind = recorded_kind(model_dir)
    if kind not in KINDS:
        raise ModelError(f"{model_dir} is a tagger {kind}, which has no single network to export; export its "
                         f"members" if kind == "ensemble" else f"{model_dir} holds a {kind}, which cannot be exported")
    return kind


def _load(model_dir: Path) -> Any:
    model_kind(model_dir)
    return load_model(model_dir, kinds=KINDS)


def preprocessing_record(preprocess: Preprocess) -> dict[str, Any]:
    """How images must be prepared for a backbone, as fashionlens' evaluation transform really prepares them.

    Input size, mean and std come from the backbone's :class:`Preprocess`; resize and crop are read off the
    :func:`eval_transform` built from it, because fashionlens resizes whole images without timm's centre crop.
    timm's own settings are kept under ``pretrained_*`` for reference only.
    """
    transform = eval_transform(preprocess)
    resize = next(step for step in transform.transforms if isinstance(step, v2.Resize))
    crops = [type(step).__name__ for step in transform.transforms if "Crop" in type(step).__name__]
    return {
        "input_size": preprocess.input_size,
        "mean": list(preprocess.mean),
        "std": list(preprocess.std),
        "interpolation": resize.interpolation.value,
        "antialias": bool(resize.antialias),
        "resize": list(resize.size or ()),
        "crop": ",".join(crops) if crops else "none (whole image resized to the square input)",
        "max_side": DECODE_MAX_SIDE,
        "color": "RGB (EXIF-upright; transparency on white)",
        "layout": "NCHW float32: pixels / 255, then (x - mean) / std per channel",
        "pretrained_interpolation": preprocess.interpolation,
        "pretrained_crop_pct": preprocess.crop_pct,
        "transform": describe(transform),
    }


def _metadata(kind: str, model: Any) -> dict[str, Any]:
    """What a server needs to know about the model besides the graph (see the module docstring)."""
    common = {"backbone": model.config.backbone.name, "weights_id": model.backbone.weights_id,
              "mode": model.config.mode}
    if kind == "tagger":
        return {**common, "labels": {"tags": model.labels.tags, "heads": model.labels.heads},
                "thresholds": dict(zip(model.labels.tags, map(float, model.thresholds), strict=True))}
    if kind == "hierarchy":
        taxonomy = model.taxonomy
        return {**common, "levels": list(taxonomy.levels), "classes": [list(c) for c in taxonomy.classes],
                "decoding": model.config.decoding}
    return {**common, "model_id": model.model_id, "metric": model.metric, "normalize": model.config.normalize,
            "dim": model.dim}


# ---------------------------------------------------------------------------------------------------------- export
def export_onnx(model_dir: str | Path, out: str | Path, verify_images: Sequence[str | Path] = (),
                atol: float = DEFAULT_ATOL, opset: int = OPSET, dynamo: bool | None = None) -> ExportResult:
    """Export a tagger or embedder directory to one ``.onnx`` file with a dynamic batch axis.

    The file is written atomically, and when ``verify_images`` are given it is checked against PyTorch *before* it
    replaces ``out``, so a failed or inaccurate export never destroys a good file.

    Args:
        model_dir: A directory saved by :meth:`Tagger.save` or :meth:`Embedder.save`.
        out: The ``.onnx`` file to write.
        verify_images: Real image files to compare onnxruntime with PyTorch on (none: no check).
        atol: Largest accepted absolute difference.
        opset: ONNX opset (17 or later).
        dynamo: ``False``: TorchScript exporter; ``True``: torch.export-based one; ``None``: the TorchScript one,
            falling back to torch.export where it is unavailable (it is simpler for timm's EfficientNets).

    Raises:
        ModelError: Not an exportable model directory, an export failure, or outputs further than ``atol`` from
            PyTorch's.
        ImageError: A verification image cannot be read.
    """
    model_dir = Path(model_dir)
    loaded = _load(model_dir)
    kind: str = loaded.kind
    graph = loaded.inference_graph()
    output_names: list[str] = list(graph.output_names)
    preprocess: Preprocess = loaded.backbone.preprocess
    extra = _metadata(kind, loaded)
    metadata = {"kind": kind, "fashionlens_version": __version__, "source_model": str(model_dir.resolve()),
                "preprocessing": preprocessing_record(preprocess), "input_name": INPUT_NAME,
                "outputs": output_names, **extra}
    size = preprocess.input_size
    props = {key: json.dumps(value) for key, value in metadata.items()}
    model = onnx.load_from_string(export_graph(graph, torch.zeros(2, 3, size, size), output_names, opset, dynamo,
                                               metadata=props))
    model.producer_name, model.producer_version = "fashionlens", __version__
    model.doc_string = f"fashionlens {kind} exported from {model_dir.name}"
    result = ExportResult(Path(out), kind, output_names)
    with atomic_path(out) as tmp:
        onnx.save(model, tmp)
        if verify_images:
            diff = verify_export(model_dir, tmp, verify_images)
            if not diff <= atol:
                raise ModelError(f"ONNX export of {model_dir} differs from PyTorch by {diff:.3g} (> atol {atol:g}) "
                                 f"on {len(verify_images)} image(s); {out} was not written")
            result = ExportResult(Path(out), kind, output_names, diff, len(verify_images))
    return result


# ---------------------------------------------------------------------------------------------------------- runner
class OnnxModel:
    """An exported tagger or embedder served by onnxruntime, with the preprocessing recorded in the file.

    Needs no fashionlens network (only its image decoding and transforms)::

        model = OnnxModel("tagger.onnx")
        outputs = model.predict(["photo.jpg"])      # {"tags": (1, L), "class:<head>": (1, C)...}
        model.decide(outputs["tags"])              # boolean tags with the saved per-label thresholds

    Args:
        path: A ``.onnx`` file written by :func:`export_onnx`.
        threads: onnxruntime intra-op threads (``None``: its default, one per core).

    Attributes:
        metadata: The decoded ``metadata_props`` (see the module docstring).
        kind: ``tagger`` or ``embedder``.
        output_names: Output names in graph order.

    Raises:
        ModelError: Missing or unreadable file, no fashionlens metadata, or a recorded preprocessing that this
            fashionlens' transforms do not reproduce.
    """

    def __init__(self, path: str | Path, threads: int | None = None):
        self.path = Path(path)
        self.forward = OnnxForward(self.path, threads)
        raw = self.forward.metadata
        if raw.get("kind") is None:
            raise ModelError(f"{self.path} has no fashionlens metadata ('kind'); export it with "
                             f"'fashionlens export onnx'")
        try:
            self.metadata: dict[str, Any] = {key: json.loads(value) for key, value in raw.items()}
        except json.JSONDecodeError as error:
            raise ModelError(f"{self.path} has unreadable fashionlens metadata: {error}") from error
        self.kind: str = self.metadata["kind"]
        if self.kind not in KINDS:
            raise ModelError(f"{self.path} holds a '{self.kind}', not one of {KINDS}")
        self.output_names: list[str] = list(self.metadata["outputs"])
        self.input_name: str = self.metadata["input_name"]
        record = self.metadata["preprocessing"]
        mean, std = (tuple(float(v) for v in record[key]) for key in ("mean", "std"))
        self.preprocess = Preprocess(int(record["input_size"]), (mean[0], mean[1], mean[2]), (std[0], std[1], std[2]),
                                     str(record["pretrained_interpolation"]), float(record["pretrained_crop_pct"]))
        if record.get("max_side") != DECODE_MAX_SIDE:
            raise ModelError(f"{self.path} was exported for images shrunk to {record.get('max_side')} px, not "
                             f"{DECODE_MAX_SIDE} as this fashionlens decodes them; re-export the model")
        self.transform = eval_transform(self.preprocess)
        if describe(self.transform) != record["transform"]:
            raise ModelError(f"{self.path} was exported with preprocessing '{record['transform']}', which this "
                             f"fashionlens no longer applies ('{describe(self.transform)}'); re-export the model")

    @property
    def tags(self) -> list[str]:
        """Tag names, in the order of the ``tags`` output (taggers; empty for embedders)."""
        return list(self.metadata.get("labels", {}).get("tags", []))

    @property
    def heads(self) -> dict[str, list[str]]:
        """Multi-class head → class names, in the order of its ``class:<head>`` output (taggers)."""
        return dict(self.metadata.get("labels", {}).get("heads", {}))

    @property
    def thresholds(self) -> np.ndarray:
        """Per-tag decision thresholds tuned on validation (taggers)."""
        saved: Mapping[str, float] = self.metadata.get("thresholds", {})
        return np.array([saved[tag] for tag in self.tags], dtype=np.float32)

    def decide(self, tag_probabilities: np.ndarray) -> np.ndarray:
        """Boolean tag decisions with the saved thresholds."""
        return np.asarray(tag_probabilities >= self.thresholds[None, :])

    def load(self, path: str | Path) -> Image.Image:
        """Decode an image file by fashionlens' one decode policy (upright RGB, long side shrunk to ``max_side``).

        Raises:
            ImageError: Missing or undecodable file (named).
        """
        return decode_for_model(path).image

    def preprocess_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """The network input ``(N, 3, size, size)`` float32 of RGB PIL images."""
        if not images:
            size = self.preprocess.input_size
            return np.zeros((0, 3, size, size), dtype=np.float32)
        return torch.stack([self.transform(image.convert("RGB")) for image in images]).numpy()

    def run(self, batch: np.ndarray | torch.Tensor) -> dict[str, np.ndarray]:
        """Outputs of the graph on an already preprocessed batch, by name."""
        output = self.forward(batch)
        return dict(output) if isinstance(output, dict) else {self.output_names[0]: output}

    def predict(self, images: Sequence[str | Path], batch_size: int = 32) -> dict[str, np.ndarray]:
        """Outputs for image files, in batches of ``batch_size``, through the same dataset and batched forward pass
        as every fashionlens prediction.

        Raises:
            ImageError: A file is missing or not a decodable image (named).
        """
        manifest = Manifest(pd.DataFrame({"path": [str(p) for p in images]}), name="onnx")
        loader = DataLoader(ManifestImageDataset(manifest, self.transform), batch_size=batch_size,
                            collate_fn=collate_skipping)
        outputs, _ = forward_batches(self.run, loader, len(manifest))
        if not outputs:
            return self.run(self.preprocess_images([]))
        return {name: outputs[name] for name in self.output_names}


# ---------------------------------------------------------------------------------------------------------- verify
def pytorch_outputs(model_dir: str | Path, images: Sequence[str | Path]) -> dict[str, np.ndarray]:
    """What the PyTorch model in ``model_dir`` gives for image files by its own prediction path (the shared feature
    extraction on the ``torch`` runtime, then its head), under the output names of its exported graph."""
    model = _load(Path(model_dir))
    # Predicting through the model would use the shared feature cache; a verification must compute afresh.
    features = extract_features(manifest_of_paths(images), model.backbone, cache_dir=None,
                                batch_size=model.config.backbone.batch_size, num_workers=0, show_progress=False,
                                runtime="torch").vectors
    return dict(model.head_outputs(features))


def verify_export(model_dir: str | Path, onnx_path: str | Path, images: Sequence[str | Path]) -> float:
    """Largest absolute difference between onnxruntime (:class:`OnnxModel`) and PyTorch on real image files.

    Both sides decode and preprocess the files themselves, so the figure covers the recorded preprocessing as well
    as the graph.

    Raises:
        ModelError: No images, or the ONNX file does not have the model's outputs (another model's export).
        ImageError: An image cannot be read.
    """
    if not images:
        raise ModelError(f"verifying {onnx_path} needs at least one image")
    exported = OnnxModel(onnx_path).predict(list(images))
    reference = pytorch_outputs(model_dir, images)
    if sorted(exported) != sorted(reference) or any(exported[k].shape != v.shape for k, v in reference.items()):
        shapes = {k: v.shape for k, v in exported.items()}, {k: v.shape for k, v in reference.items()}
        raise ModelError(f"{onnx_path} outputs {shapes[0]} but model {model_dir} gives {shapes[1]}; "
                         f"it was exported from another model")
    differences = [np.max(np.abs(exported[k] - v), initial=0.0) for k, v in reference.items()]
    return float(np.max(differences))  # NaN, if any, propagates and fails every tolerance
