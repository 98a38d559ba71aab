"""Plumbing shared by the tagging, hierarchy and retrieval tasks: the legacy-config migration, frozen-feature
extraction with the shared cache, feature data loaders, and the saved-model directory convention.

A saved model is one directory holding ``config.json`` (how it was built, with the model's ``kind`` -- see
:mod:`fashionlens.tasks.registry` -- and backbone ``weights_id``), ``labels.json`` (what it predicts),
``model.pt`` (weights), and whatever the task adds (``thresholds.json``, ``metrics.json``, a report). It is
written as a whole into a temporary directory and swapped into place, so a crash never leaves half a model
(:func:`fashionlens.io.atomic_dir`).

``model.pt`` is a :func:`torch.save` of a plain ``dict`` mapping a part name (``"head"``, ``"backbone"`` when
fine-tuned; empty for an ensemble) to that module's ``state_dict()``: string keys and tensors only, nothing else.
It is read with ``weights_only=True`` (:func:`fashionlens.io.load_torch`), so loading a model cannot run code; every
other setting lives in the JSON files beside it. Model directories written by earlier versions have the same layout
and load unchanged through their class's ``load``; :func:`~fashionlens.tasks.registry.load_model`, which reads the
kind they do not record, names the key to add.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, TensorDataset

from fashionlens.data.dataset import ManifestImageDataset, collate_skipping
from fashionlens.data.records import Manifest
from fashionlens.distributed import is_main_process, main_process_first
from fashionlens.errors import DataError, ModelError
from fashionlens.features import extract_features
from fashionlens.io import atomic_dir, default_cache_dir, load_torch, save_torch, write_json
from fashionlens.models.backbones import BackboneConfig, build_backbone


def fold_legacy_freeze(data: dict[str, Any]) -> dict[str, Any]:
    """A task config as plain data, with the ``finetune_freeze`` key of earlier versions folded into
    ``backbone.freeze``.

    Earlier versions kept the stages frozen while fine-tuning in a task-level ``finetune_freeze`` and wrote a dead
    ``backbone.freeze: all`` beside it (saved ``config.json`` files and YAMLs carry both); ``backbone.freeze`` now
    holds that setting. Every task config reads through here (its ``migrate_legacy`` hook, see
    :func:`fashionlens.config.from_dict`), so old models and YAMLs keep loading with the same meaning.
    """
    if "finetune_freeze" not in data:
        return data
    data = dict(data)
    freeze = data.pop("finetune_freeze")
    backbone = data.get("backbone")
    data["backbone"] = {**(backbone if isinstance(backbone, dict) else {}), "freeze": freeze}
    return data


def frozen_features(manifest: Manifest, config: BackboneConfig, backbone: Any | None = None,
                    cache_dir: str | Path | None = None, device: str | None = None,
                    show_progress: bool = True, skip_bad_images: bool = False,
                    runtime: str | None = None) -> np.ndarray:
    """Pooled features of every row from a frozen backbone, through the shared disk cache.

    Args:
        skip_bad_images: Leave the rows of unreadable images all-NaN instead of raising (prediction reports them
            per file; training and evaluation must not silently lose rows, so they keep the default).
        runtime: Where the backbone runs (``None``: ``config.runtime``; see
            :func:`~fashionlens.runtime.compiled.compile_backbone`).

    Raises:
        DataError: Some images could not be decoded (the first few are named), unless ``skip_bad_images``.
    """
    backbone = backbone if backbone is not None else build_backbone(config)
    with main_process_first():  # under torchrun, rank 0 fills the cache and the others read it
        result = extract_features(manifest, backbone, cache_dir=cache_dir or default_cache_dir() / "features",
                                  batch_size=config.batch_size, num_workers=config.num_workers, device=device,
                                  skip_bad_images=True, show_progress=show_progress and is_main_process(),
                                  runtime=runtime or config.runtime)
    if result.failed and not skip_bad_images:
        shown = ", ".join(result.failed[:3])
        raise DataError(f"{len(result.failed)} image(s) could not be read, e.g. {shown} "
                        f"(fix or drop them from manifest '{manifest.name}')")
    return result.vectors


def state_fingerprint(module: torch.nn.Module) -> str:
    """A short hash of a module's weights: the feature-cache identity of a fine-tuned backbone."""
    digest = hashlib.sha1()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return "weights-" + digest.hexdigest()[:16]


def manifest_of_paths(paths: Iterable[str | Path], name: str = "images") -> Manifest:
    """An unlabelled manifest of image files (for prediction on loose images)."""
    resolved = [str(Path(p).expanduser().resolve()) for p in paths]
    if not resolved:
        raise DataError("no image paths given")
    return Manifest(pd.DataFrame({"path": resolved}), name=name)


def tensor_loader(arrays: Iterable[np.ndarray | torch.Tensor], batch_size: int, shuffle: bool,
                  seed: int = 0) -> DataLoader[Any]:
    """A DataLoader over in-memory arrays (features and targets), seeded when shuffling."""
    tensors = [torch.as_tensor(a) for a in arrays]
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(TensorDataset(*tensors), batch_size=batch_size, shuffle=shuffle, generator=generator)


def image_row_loader(manifest: Manifest, rows: np.ndarray, transform: Any, batch_size: int, shuffle: bool,
                     workers: int, seed: int) -> DataLoader[Any]:
    """``(images, manifest_rows)`` batches over the images of ``rows``: the fine-tuning loaders of every task.

    Unreadable images are skipped (``collate_skipping``) and each batch carries the manifest row of every image it
    kept, so a task's targets are looked up by row. A shuffled loader drops a last partial batch (batch norm
    cannot train on a single row).
    """
    dataset = ManifestImageDataset(manifest.subset(np.isin(np.arange(len(manifest)), rows)), transform)
    global_rows = torch.as_tensor(np.sort(rows))

    def collate(batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        images, local = collate_skipping(batch)
        return images, global_rows[local]

    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=workers, collate_fn=collate,
                      generator=torch.Generator().manual_seed(seed), drop_last=shuffle and len(rows) > batch_size)


def save_model_dir(path: str | Path, state: Mapping[str, Any], json_files: Mapping[str, Any],
                   extra: Mapping[str, str | bytes] | None = None) -> Path:
    """Write a model directory atomically: ``model.pt`` from ``state`` plus ``<name>.json`` files.

    Under torchrun only rank 0 writes (every process trained the same weights).
    """
    path = Path(path)
    if not is_main_process():
        return path
    with atomic_dir(path) as tmp:
        save_torch(tmp / "model.pt", dict(state))
        for name, content in json_files.items():
            write_json(tmp / f"{name}.json", content)
        for name, data in (extra or {}).items():
            target = tmp / name
            target.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(data, bytes):
                target.write_bytes(data)
            else:
                target.write_text(data, encoding="utf-8")
    return path


def read_model_dir(path: str | Path, required_json: Iterable[str],
                   optional_json: Iterable[str] = ()) -> tuple[dict[str, Any], dict[str, Any]]:
    """Load ``model.pt`` and the named JSON files of a model directory (``optional_json`` ones when present).

    Raises:
        ModelError: The directory or one of its files is missing or unreadable (the file is named).
    """
    path = Path(path)
    if not path.is_dir():
        raise ModelError(f"model directory not found: {path}")
    documents: dict[str, Any] = {}
    optional = set(optional_json)
    for name in [*required_json, *optional]:
        file = path / f"{name}.json"
        if name in optional and not file.is_file():
            continue
        if not file.is_file():
            raise ModelError(f"model directory {path} is missing {file.name}")
        try:
            documents[name] = json.loads(file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise ModelError(f"cannot parse {file}: {error}") from error
    weights = path / "model.pt"
    if not weights.is_file():
        raise ModelError(f"model directory {path} is missing model.pt")
    state = load_torch(weights)
    if not isinstance(state, dict):
        raise ModelError(f"{weights} holds a {type(state).__name__}, not a dictionary of state dicts")
    return state, documents
