"""Frozen backbone features through the shared disk cache, and the identity of fine-tuned weights."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fashionlens.data.records import Manifest
from fashionlens.distributed import is_main_process, main_process_first
from fashionlens.errors import DataError
from fashionlens.features import extract_features
from fashionlens.io import default_cache_dir
from fashionlens.models.backbones import BackboneConfig, build_backbone


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
