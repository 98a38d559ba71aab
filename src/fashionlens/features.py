"""Batched feature extraction with a disk cache.

Tasks that train on frozen features (tagging heads, HMCN-F, similar-item search) call :func:`extract_features`.
Vectors are cached under ``cache_dir`` keyed by (backbone name, weights id, image transform, decoder) and, inside
that, by image file (path, size, modification time, box). Extraction writes a shard every ``shard_size`` images or
every ``flush_seconds``, whichever comes first, and what is computed when it stops on an error or Ctrl-C, so a killed
run loses at most that much work and resumes where it stopped; a later run over an overlapping manifest only computes
what is new.
"""

from __future__ import annotations

import hashlib
import os
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch.utils.data import DataLoader

from fashionlens.data.dataset import ManifestImageDataset, collate_skipping
from fashionlens.data.images import DECODER_ID
from fashionlens.data.records import BBOX_COLUMNS, Manifest
from fashionlens.data.transforms import PreprocessLike, describe, eval_transform
from fashionlens.errors import ConfigError, DataError
from fashionlens.io import atomic_path
from fashionlens.runtime import SINGLE_OUTPUT, default_workers, forward_batches, resolve_device
from fashionlens.runtime.compiled import CompiledBackbone, compile_backbone


class FeatureExtractor(Protocol):
    """A backbone as seen by feature extraction (see :func:`fashionlens.models.create_backbone`)."""

    name: str
    weights_id: str
    num_features: int

    @property
    def preprocess(self) -> PreprocessLike: ...

    def __call__(self, images: torch.Tensor) -> torch.Tensor: ...

    def eval(self) -> torch.nn.Module: ...

    def to(self, device: torch.device) -> torch.nn.Module: ...


@dataclass
class FeatureResult:
    """Extracted vectors, aligned with the manifest rows; rows whose image failed are all-NaN."""

    vectors: np.ndarray
    computed: int
    cached: int
    failed: list[str]
    seconds: float

    @property
    def images_per_second(self) -> float:
        """Throughput of the images actually computed in this call."""
        return self.computed / self.seconds if self.seconds > 0 else float("nan")


def image_keys(manifest: Manifest) -> list[str]:
    """Cache keys of the manifest's images: path, byte size, modification time and crop box."""
    keys = []
    boxes = manifest.frame[list(BBOX_COLUMNS)].to_numpy(dtype=float)
    for path, box in zip(manifest.frame["path"], boxes, strict=True):
        try:
            stat = os.stat(path)
            signature = f"{stat.st_size}:{stat.st_mtime_ns}"
        except OSError:
            signature = "missing"
        box_text = "" if np.isnan(box).any() else ",".join(f"{v:.1f}" for v in box)
        keys.append(hashlib.sha1(f"{path}|{signature}|{box_text}".encode()).hexdigest())
    return keys


class FeatureCache:
    """Vectors of one (backbone, weights, transform, decoder) combination, stored as ``.npz`` shards."""

    def __init__(self, root: str | Path, backbone_name: str, weights_id: str, transform_text: str):
        key = f"{backbone_name}|{weights_id}|{transform_text}|{DECODER_ID}"
        digest = hashlib.sha1(key.encode()).hexdigest()[:16]
        self.directory = Path(root) / f"{backbone_name}-{digest}"
        self._vectors: dict[str, np.ndarray] = {}
        if self.directory.is_dir():
            for shard in sorted(self.directory.glob("shard-*.npz")):
                try:
                    with np.load(shard) as content:
                        self._vectors.update(zip(content["keys"].tolist(), content["vectors"], strict=True))
                except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
                    shard.unlink(missing_ok=True)  # a damaged shard is recomputed, never trusted

    def get(self, key: str) -> np.ndarray | None:
        """The cached vector for ``key``, if any."""
        return self._vectors.get(key)

    def put(self, keys: list[str], vectors: np.ndarray) -> None:
        """Store a shard of new vectors atomically."""
        if not keys:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        name = f"shard-{time.time_ns()}-{os.getpid()}.npz"
        with atomic_path(self.directory / name, durable=False) as tmp, open(tmp, "wb") as handle:
            np.savez(handle, keys=np.array(keys), vectors=vectors.astype(np.float32))
        self._vectors.update(zip(keys, vectors, strict=True))


def progress_bar(description: str) -> Progress:
    """The rich progress bar used for long loops."""
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[rate]}"), TimeRemainingColumn(), transient=False)


def extract_features(manifest: Manifest, backbone: FeatureExtractor, cache_dir: str | Path | None = None,
                     batch_size: int = 64, num_workers: int | None = None, device: str | None = None,
                     skip_bad_images: bool = False, shard_size: int = 2048, flush_seconds: float = 30.0,
                     show_progress: bool = True, runtime: str | CompiledBackbone = "auto") -> FeatureResult:
    """Pooled backbone features for every row of ``manifest``.

    Args:
        manifest: Images to embed.
        backbone: A feature extractor from :func:`fashionlens.models.create_backbone`.
        cache_dir: Where to cache vectors; ``None`` disables caching.
        batch_size: Images per forward pass.
        num_workers: DataLoader decode workers (default: spare cores).
        device: ``"cpu"``, ``"cuda"`` or ``None``/``"auto"``.
        skip_bad_images: Leave unreadable images as NaN rows (listed in ``failed``) instead of raising.
        shard_size: Most images per cache shard.
        flush_seconds: Most seconds of work held in memory before it is written as a shard: with ``shard_size``,
            the bound on what a killed run loses (an exception or Ctrl-C loses nothing already computed).
        show_progress: Draw a rich progress bar.
        runtime: ``auto``, ``torch`` or ``onnx`` (see :func:`~fashionlens.runtime.compiled.compile_backbone`), or
            a backbone already compiled with the settings wanted.
    """
    if len(manifest) == 0:
        raise DataError(f"manifest '{manifest.name}' has no rows to extract features from")
    if shard_size < 1 or flush_seconds < 0:
        raise ConfigError(f"invalid feature cache options: shard_size={shard_size} (>= 1), "
                          f"flush_seconds={flush_seconds} (>= 0)")
    transform = eval_transform(backbone.preprocess)
    cache = FeatureCache(cache_dir, backbone.name, backbone.weights_id, describe(transform)) if cache_dir else None
    keys = image_keys(manifest)
    vectors = np.full((len(manifest), backbone.num_features), np.nan, dtype=np.float32)
    todo = []
    for row, key in enumerate(keys):
        hit = cache.get(key) if cache else None
        if hit is None:
            todo.append(row)
        else:
            vectors[row] = hit
    start = time.perf_counter()
    failed: list[str] = []
    if todo:
        compiled = runtime if isinstance(runtime, CompiledBackbone) else compile_backbone(backbone, runtime, device)
        torch_device = resolve_device(device)
        subset = manifest.subset(np.isin(np.arange(len(manifest)), todo))
        # Decode workers run the CPU side of the transform and ship uint8 images (a quarter of float32's bytes);
        # the model side (scale, normalise) runs on each batch here, which gives the very tensor of the whole transform.
        cpu_side, model_side = eval_transform(backbone.preprocess, separate=True)
        dataset = ManifestImageDataset(subset, cpu_side, skip_bad_images=skip_bad_images)
        workers = default_workers() if num_workers is None else num_workers
        loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers, collate_fn=collate_skipping,
                            pin_memory=torch_device.type == "cuda", persistent_workers=False,
                            prefetch_factor=4 if workers else None)
        pending_keys: list[str] = []
        pending_vectors: list[np.ndarray] = []
        flushed_at = time.monotonic()
        done = 0
        local_rows = np.asarray(todo)

        def store(rows: np.ndarray, outputs: dict[str, np.ndarray]) -> None:
            nonlocal pending_keys, pending_vectors, flushed_at, done
            output = outputs[SINGLE_OUTPUT]
            pending_keys += [keys[r] for r in rows]
            pending_vectors.append(output)
            if cache and (len(pending_keys) >= shard_size or time.monotonic() - flushed_at >= flush_seconds):
                cache.put(pending_keys, np.concatenate(pending_vectors))
                pending_keys, pending_vectors = [], []
                flushed_at = time.monotonic()
            done += len(rows)
            rate = done / (time.perf_counter() - start)
            progress.update(task, completed=done, rate=f"{rate:.1f} img/s {compiled.runtime}")

        # Batches carry dataset-local indices: map them to manifest rows before the forward loop places them (a batch
        # whose images all failed is empty and skipped there).
        batches = ((model_side(images) if len(local) else images, local_rows[local.numpy()])
                   for images, local in loader)
        try:
            with progress_bar(f"features {backbone.name}") as progress:
                task = progress.add_task(f"features {backbone.name}", total=len(todo), rate="",
                                         visible=show_progress)
                outputs, _ = forward_batches(compiled, batches, len(manifest), on_batch=store)
        finally:  # also on an error or Ctrl-C: what was computed is kept for the rerun
            if cache and pending_keys:
                cache.put(pending_keys, np.concatenate(pending_vectors))
        if SINGLE_OUTPUT in outputs:
            computed = ~np.isnan(outputs[SINGLE_OUTPUT]).all(axis=1)
            vectors[computed] = outputs[SINGLE_OUTPUT][computed]
        failed = [manifest.frame["path"].iloc[r] for r in todo if np.isnan(vectors[r]).all()]
    seconds = time.perf_counter() - start
    return FeatureResult(vectors=vectors, computed=len(todo) - len(failed), cached=len(manifest) - len(todo),
                         failed=failed, seconds=seconds)
