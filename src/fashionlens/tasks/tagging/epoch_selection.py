"""``select_epoch: per_label``: each tag read from the head snapshot of the epoch where it scored best."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from rich.console import Console
from torch import nn
from torch.utils.data import DataLoader

from fashionlens.engine import TrainResult
from fashionlens.models.network import TaskNetwork
from fashionlens.tasks.common.loaders import tensor_loader
from fashionlens.tasks.common.training import predict_outputs
from fashionlens.tasks.labels import LabelSpace
from fashionlens.tasks.tagging.config import TaggingConfig
from fashionlens.tasks.tagging.model import EpochSelectedHead, joint_head, logits_to_predictions
from fashionlens.tasks.tagging.thresholds import select_thresholds


class PerLabelEpochs:
    """Engine evaluate callback that keeps the head state of every epoch and, per tag, the epoch where its val
    F-beta (at its best threshold) peaked; :meth:`selected` assembles those heads into an :class:`EpochSelectedHead`.

    On frozen features (:meth:`bind` before training) each epoch is scored as it ends, and only the states some tag
    still peaks at are kept. When fine-tuning, the backbone moves between epochs, so every head state is kept and
    scored after training on the val features of the shipped backbone (the monitor's best epoch, given to
    :meth:`selected`): the features inference will see.
    """

    def __init__(self, val_truth: np.ndarray, beta: float, evaluate: Callable[[nn.Module], dict[str, float]]):
        self.val_truth, self.beta, self.evaluate = val_truth, beta, evaluate
        self.best = np.full(val_truth.shape[1], -np.inf)
        self.best_epoch = np.zeros(val_truth.shape[1], dtype=np.int64)
        self.states: dict[int, dict[str, torch.Tensor]] = {}
        self.scores: dict[int, np.ndarray] = {}
        self.epoch = 0
        self.scored_through = 0  # epochs up to this one are scored
        self._rows = np.arange(len(val_truth))
        self._loader: DataLoader[Any] | None = None

    def __call__(self, model: nn.Module) -> dict[str, float]:
        self.epoch += 1
        out = self.evaluate(model)
        head = model.head if isinstance(model, TaskNetwork) else model
        self.states[self.epoch] = {k: v.detach().cpu().clone() for k, v in head.state_dict().items()}
        if self._loader is not None:
            self._score(head, self.epoch)
        return out

    def _score(self, head: nn.Module, epoch: int) -> None:
        """Score ``head`` (of ``epoch``) on the bound val features; drop the states no tag peaks at any more."""
        assert self._loader is not None
        logits, _ = predict_outputs(head, self._loader, len(self._rows), next(head.parameters()).device)
        probs = logits_to_predictions(logits, LabelSpace(tags=[""] * self.val_truth.shape[1]), len(self._rows)).tags
        score = np.nan_to_num(select_thresholds(self.val_truth, probs, beta=self.beta).best_fbeta, nan=-1.0)
        self.scores[epoch] = score
        improved = score > self.best + 1e-12
        self.best[improved], self.best_epoch[improved] = score[improved], epoch
        self.scored_through = max(self.scored_through, epoch)
        peaks = set(self.best_epoch.tolist())
        self.states = {e: s for e, s in self.states.items() if e in peaks or e > self.scored_through}

    def bind(self, features: np.ndarray) -> PerLabelEpochs:
        """Attach the val features the heads are scored on (rows aligned with ``val_truth``)."""
        self._loader = tensor_loader([features.astype(np.float32), self._rows], batch_size=2048, shuffle=False)
        return self

    def selected(self, best_model: nn.Module, result: TrainResult, config: TaggingConfig, labels: LabelSpace,
                 in_features: int, console: Console, val_features: np.ndarray | None = None) -> EpochSelectedHead:
        """Snapshot 0: the monitor's best epoch (``best_model``); then one snapshot per other epoch some tag peaked
        at (strictly above its score at the monitor's epoch). Epochs not scored yet are scored first, on
        ``val_features`` when given (else the bound ones)."""
        if val_features is not None:
            self.bind(val_features)
        for epoch in sorted(e for e in self.states if e > self.scored_through):
            snapshot = joint_head(config, labels, in_features)
            snapshot.load_state_dict(self.states[epoch])
            self._score(snapshot, epoch)
        offset = result.resumed_from or 0  # this process counts epochs from its start
        best_epoch = result.best_epoch - offset
        if best_epoch < 1:  # the best epoch came before a resume: the shipped head is a candidate too
            self._score(best_model, best_epoch)
        if best_epoch in self.scores:  # a tie goes to the monitor's epoch (snapshot 0)
            self.best_epoch[self.scores[best_epoch] >= self.best - 1e-12] = best_epoch
        others = sorted(set(self.best_epoch.tolist()) - {best_epoch})
        snapshots: list[nn.Module] = [best_model]
        for epoch in others:
            snapshot = joint_head(config, labels, in_features)
            snapshot.load_state_dict(self.states[epoch])
            snapshots.append(snapshot)
        index = {epoch: i + 1 for i, epoch in enumerate(others)}
        console.print(f"per-label epochs: {dict(zip(labels.tags, (self.best_epoch + offset).tolist(), strict=True))}")
        return EpochSelectedHead(snapshots, [index.get(int(e), 0) for e in self.best_epoch]).eval()
