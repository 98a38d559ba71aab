"""The training plumbing of every task: one engine run (:func:`fit`), the one fine-tuning driver (:func:`finetune`),
and batched raw outputs (:func:`predict_outputs`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from torch import nn
from torch.utils.data import DataLoader

from fashionlens.data.records import Manifest
from fashionlens.data.transforms import eval_transform, train_transform
from fashionlens.engine import TrainConfig, Trainer, TrainResult
from fashionlens.models.backbones import Backbone, BackboneConfig, build_backbone
from fashionlens.models.network import TaskNetwork
from fashionlens.runtime import default_workers, forward_batches
from fashionlens.tasks.common.features import state_fingerprint
from fashionlens.tasks.common.loaders import image_row_loader

Evaluate = Callable[[nn.Module], dict[str, float]]
"""Engine callback: validation figures of a model (see :class:`~fashionlens.engine.Trainer`)."""


def predict_outputs(model: nn.Module, loader: DataLoader[Any] | Sequence[Any], n_rows: int,
                    device: torch.device) -> tuple[dict[str, np.ndarray], list[int]]:
    """Raw outputs (logits) per output name of ``model`` in eval mode over ``(inputs, rows)`` batches, aligned to
    rows, and the rows seen (:func:`~fashionlens.runtime.forward_batches`)."""
    model.eval()
    return forward_batches(model, loader, n_rows, device)


def fit(model: nn.Module, loss: Callable[..., torch.Tensor], evaluate: Evaluate | None, train_loader: Any,
        train_config: TrainConfig, run_dir: Path | None, console: Console,
        show_progress: bool) -> tuple[nn.Module, TrainResult]:
    """Train ``model`` with the engine (resumable from ``run_dir``; the monitor's best epoch restored).

    Returns:
        The trained model, on the CPU in eval mode, and the run's result.
    """
    trainer = Trainer(model, train_config, loss, evaluate, run_dir=run_dir, console=console,
                      show_progress=show_progress)
    result = trainer.fit(train_loader)
    return trainer.model.cpu().eval(), result


def finetune_network(backbone_config: BackboneConfig, make_head: Callable[[int], nn.Module]) -> TaskNetwork:
    """Backbone (stem and first ``backbone_config.freeze`` stages frozen) + the task's head for its feature width:
    what every task fine-tunes end to end."""
    backbone = build_backbone(backbone_config, finetune=True)
    return TaskNetwork(backbone, make_head(backbone.num_features))


def tuned_parts(network: nn.Module) -> tuple[Backbone, nn.Module]:
    """The backbone (its ``weights_id`` now the fingerprint of its tuned weights) and head of a fine-tuned
    :func:`finetune_network`."""
    assert isinstance(network, TaskNetwork)
    backbone: Any = network.backbone
    backbone.weights_id = state_fingerprint(backbone)
    return backbone, network.head


def finetune(manifest: Manifest, backbone_config: BackboneConfig, train_config: TrainConfig,
             make_head: Callable[[int], nn.Module], loss: Callable[..., torch.Tensor],
             make_evaluate: Callable[[DataLoader[Any]], Evaluate], train_rows: np.ndarray, val_rows: np.ndarray,
             run_dir: Path | None, console: Console, show_progress: bool) -> tuple[Backbone, nn.Module, TrainResult]:
    """Fine-tune backbone + head end to end on images (stem and first ``backbone.freeze`` stages frozen): the
    fine-tuning driver of every task.

    Batches are ``(images, manifest_rows)`` (:func:`~fashionlens.tasks.common.loaders.image_row_loader`): the task's
    ``loss`` and evaluation look their targets up by row.

    Args:
        manifest: The rows ``train_rows`` and ``val_rows`` index.
        backbone_config: The backbone to fine-tune (its ``freeze``, ``batch_size`` for validation, ``num_workers``).
        train_config: Training settings (batch size, epochs, monitor, seed, device).
        make_head: The task's head for backbone features of the given width.
        loss: Engine loss callback of the task.
        make_evaluate: The task's engine evaluate callback over the given validation loader.
        train_rows: Manifest rows to train on.
        val_rows: Manifest rows to select the epoch on.
        run_dir: Where the run keeps resumable checkpoints (``None``: none).
        console: Where progress messages go.
        show_progress: Draw progress bars.

    Returns:
        The backbone of the monitor's best epoch (its ``weights_id`` the fingerprint of its weights), the head of that
        epoch, and the run's result.
    """
    net = finetune_network(backbone_config, make_head)
    backbone: Any = net.backbone
    workers = default_workers() if backbone_config.num_workers is None else backbone_config.num_workers
    train_loader = image_row_loader(manifest, train_rows, train_transform(backbone.preprocess),
                                    train_config.batch_size, True, workers, train_config.seed)
    val_loader = image_row_loader(manifest, val_rows, eval_transform(backbone.preprocess), backbone_config.batch_size,
                                  False, workers, train_config.seed)
    tuned, result = fit(net, loss, make_evaluate(val_loader), train_loader, train_config, run_dir, console,
                        show_progress)
    return (*tuned_parts(tuned), result)
