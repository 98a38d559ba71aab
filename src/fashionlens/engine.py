"""The one training loop every task uses.

A task supplies a model, a loss function ``loss_fn(model, batch) -> loss`` and an ``evaluate(model) -> metrics``
callback; :class:`Trainer` does the rest: optimiser and LR schedule, seeded runs, CUDA + AMP when present,
per-epoch validation with a monitored metric, best-checkpoint selection, early stopping, a live rich progress
bar, and resumable checkpoints written atomically (an interrupted run picks up at the next epoch).

``last.pt`` holds the epoch, model, optimiser, scheduler and AMP-scaler state dicts, the history, the config, the
best weights and every random generator's state (Python's as a tuple of ints, NumPy's Mersenne-Twister keys as an
int64 tensor, torch's and CUDA's as byte tensors): tensors and plain values only, read back with
``weights_only=True`` (:func:`fashionlens.io.load_torch`), so resuming cannot run code planted in the file.
Checkpoints of earlier versions (NumPy arrays in the RNG state) are refused with a one-line error; delete the run
directory's ``last.pt`` to start that run over.

Under ``torchrun`` the same loop trains data-parallel (see :mod:`fashionlens.distributed`): the model is wrapped in
``DistributedDataParallel``, each epoch is sharded over the processes, rank 0 evaluates and its metrics drive every
process's decisions (best epoch, LR plateau, early stop), and only rank 0 writes checkpoints. Checkpoints hold the
unwrapped weights, so a run resumes on any number of processes.

On the CPU a convolutional model trains channels-last (``TrainConfig.channels_last``, on by default there): the
weights are converted for the run, which makes oneDNN's convolutions run in NHWC for default-format inputs too, and
the caller gets the model back in the default layout. Checkpoints hold channels-last strided tensors, which load
into either layout (``load_state_dict`` copies values into each parameter's own layout).
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import time
from collections.abc import Callable, Iterable, Sized
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler

from fashionlens import distributed
from fashionlens.errors import ConfigError, ModelError
from fashionlens.io import load_torch, plain_values, run_dir, save_torch, write_json
from fashionlens.runtime import resolve_device, seed_everything

HISTORY_FILE = "history.json"
"""Per-epoch metrics of a run, written into its run folder after every epoch."""


def training_history(model_dir: str | Path) -> list[dict[str, Any]] | None:
    """The per-epoch metrics of the run that trained ``model_dir`` (in :func:`fashionlens.io.run_dir`), or ``None``
    when that run folder is gone (deleted after training, or the model was copied without it).

    Raises:
        ModelError: The history file exists but is not a JSON list.
    """
    path = run_dir(model_dir) / HISTORY_FILE
    if not path.is_file():
        return None
    try:
        history = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise ModelError(f"cannot read the training history {path}: {error}") from error
    if not isinstance(history, list):
        raise ModelError(f"cannot read the training history {path}: not a list of epochs")
    return history

LossFn = Callable[[torch.nn.Module, Any, torch.device], torch.Tensor]
EvaluateFn = Callable[[torch.nn.Module], dict[str, float]]


@dataclass
class TrainConfig:
    """Optimisation settings shared by all tasks (loadable from YAML via :mod:`fashionlens.config`)."""

    epochs: int = 20
    batch_size: int = 64
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.9
    scheduler: Literal["none", "step", "plateau", "cosine"] = "plateau"
    step_size: int = 10
    gamma: float = 0.1
    plateau_patience: int = 2
    early_stop_patience: int | None = 5
    monitor: str = "val_loss"
    mode: Literal["min", "max"] = "min"
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    grad_clip: float | None = None
    num_workers: int | None = None
    channels_last: bool | None = None  # None: on for a conv model on the CPU (see _use_channels_last)

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ConfigError(f"epochs must be >= 1, got {self.epochs}")
        if self.lr <= 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")
        if self.optimizer not in ("adam", "adamw", "sgd"):
            raise ConfigError(f"unknown optimizer '{self.optimizer}' (use adam, adamw or sgd)")
        if self.scheduler not in ("none", "step", "plateau", "cosine"):
            raise ConfigError(f"unknown scheduler '{self.scheduler}' (use none, step, plateau or cosine)")
        if self.mode not in ("min", "max"):
            raise ConfigError(f"mode must be 'min' or 'max', got '{self.mode}'")


@dataclass
class TrainResult:
    """What :meth:`Trainer.fit` returns: the per-epoch history and the best epoch."""

    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = -1
    best_value: float = math.nan
    seconds: float = 0.0
    resumed_from: int | None = None


def build_optimizer(parameters: Iterable[torch.nn.Parameter], config: TrainConfig) -> torch.optim.Optimizer:
    """The optimiser named in ``config`` over the trainable ``parameters``."""
    trainable = [p for p in parameters if p.requires_grad]
    if not trainable:
        raise ModelError("the model has no trainable parameters (is everything frozen?)")
    if config.optimizer == "sgd":
        return torch.optim.SGD(trainable, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    optimizer_class = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    return optimizer_class(trainable, lr=config.lr, weight_decay=config.weight_decay)


def build_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig) -> Any:
    """The LR schedule named in ``config`` (``None`` for a constant LR)."""
    if config.scheduler == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=config.step_size, gamma=config.gamma)
    if config.scheduler == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode=config.mode, factor=config.gamma,
                                                          patience=config.plateau_patience)
    if config.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)
    return None


def _use_channels_last(model: torch.nn.Module, device: torch.device, setting: bool | None) -> bool:
    """Whether :class:`Trainer` trains ``model`` channels-last: ``setting`` when given, else ``auto``.

    ``auto`` is on for a model with 4-D (convolution) weights trained on the CPU, where oneDNN's NHWC convolutions
    make fine-tuning epochs faster (measured in ``benchmarks/results/training_speed.md``); a head on feature vectors
    has nothing to convert. Converting the weights is enough: a convolution runs NHWC when its weight is, whatever
    the layout of its input (measured: channels-last inputs on top gained nothing). On CUDA it stays off unless
    asked for: there AMP is the lever, and the NHWC gain depends on the GPU generation and was not measured here.
    """
    if setting is not None:
        return setting
    return device.type == "cpu" and any(p.dim() == 4 for p in model.parameters())


def _rng_state() -> dict[str, Any]:
    """Every random generator's state as tensors and plain values (a checkpoint must load with weights_only)."""
    name, keys, position, has_gauss, cached = np.random.get_state(legacy=True)
    cuda = list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else []
    return {"python": random.getstate(),
            "numpy": [str(name), torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(position), int(has_gauss),
                      float(cached)],
            "torch": torch.get_rng_state(), "cuda": cuda}


def _set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.int64).astype(np.uint32), position, has_gauss, cached))
    torch.set_rng_state(state["torch"].cpu())
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda])


class Trainer:
    """Fit a model with a task's loss and evaluation callbacks (one :meth:`fit` per trainer).

    Args:
        model: The network to train (moved to the configured device).
        config: Optimisation settings.
        loss_fn: ``loss_fn(model, batch, device)`` returns the scalar loss of one batch.
        evaluate: ``evaluate(model)`` returns validation metrics; must include ``config.monitor`` unless the
            monitor is ``train_loss``.
        run_dir: Where ``last.pt`` (resumable state), ``best.pt`` (best weights) and ``history.json`` go;
            ``None`` keeps everything in memory.
        console: Where to print; pass a quiet console to silence.
    """

    def __init__(self, model: torch.nn.Module, config: TrainConfig, loss_fn: LossFn, evaluate: EvaluateFn | None,
                 run_dir: str | Path | None = None, console: Console | None = None, show_progress: bool = True):
        distributed.init_distributed()
        self.config = config
        self.device = resolve_device(config.device)
        self.model = model.to(self.device)
        self.channels_last = _use_channels_last(self.model, self.device, config.channels_last)
        if self.channels_last:  # before DDP builds its gradient buckets and before the optimiser sees the weights
            self.model.to(memory_format=torch.channels_last)
        self.is_main = distributed.is_main_process()
        self.training_model: torch.nn.Module = self.model
        if distributed.world_size() > 1:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            self.training_model = DistributedDataParallel(self.model, device_ids=device_ids)
        self.loss_fn = loss_fn
        self.evaluate = evaluate
        self.run_dir = Path(run_dir) if run_dir and self.is_main else None
        self.resume_dir = Path(run_dir) if run_dir else None
        self.console = console if console is not None and self.is_main else Console(stderr=True, quiet=not self.is_main)
        self.show_progress = show_progress and self.is_main
        seed_everything(config.seed)
        self.optimizer = build_optimizer(self.model.parameters(), config)
        self.scheduler = build_scheduler(self.optimizer, config)
        self.use_amp = bool(config.amp and self.device.type == "cuda")
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        self.best_state: dict[str, torch.Tensor] | None = None

    # ------------------------------------------------------------------ checkpoints
    def _checkpoint(self, epoch: int, result: TrainResult) -> dict[str, Any]:
        """Everything a resumed run needs, as tensors and plain values only (``last.pt`` loads with weights_only)."""
        return plain_values({
            "epoch": epoch, "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "scaler": self.scaler.state_dict(), "result": asdict(result), "config": asdict(self.config),
            "rng": _rng_state(), "best_state": self.best_state,
        })

    def _resume(self, result: TrainResult) -> int:
        """Load ``last.pt`` when present; returns the first epoch still to run."""
        if self.resume_dir is None or not (self.resume_dir / "last.pt").is_file():
            return 0
        path = self.resume_dir / "last.pt"
        try:
            state = load_torch(path)  # on the CPU: RNG states must stay there; load_state_dict moves the rest
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            if self.scheduler is not None and state.get("scheduler") is not None:
                self.scheduler.load_state_dict(state["scheduler"])
            self.scaler.load_state_dict(state["scaler"])
            _set_rng_state(state["rng"])
            saved = state["result"]
            history, best_epoch, best_value = saved["history"], int(saved["best_epoch"]), saved["best_value"]
            epoch = int(state["epoch"])
        except ModelError as error:
            raise ModelError(f"{error} (delete it to start over)") from error
        except (RuntimeError, KeyError, ValueError, TypeError, IndexError) as error:
            raise ModelError(f"cannot resume from {path}: {type(error).__name__} {str(error).splitlines()[:1]} "
                             f"(delete it to start over)") from error
        self.best_state = state.get("best_state")
        result.history, result.best_epoch, result.best_value = history, best_epoch, best_value
        result.resumed_from = epoch + 1
        self.console.print(f"resuming from {path} at epoch {result.resumed_from + 1}")
        return result.resumed_from

    # ------------------------------------------------------------------ loop
    def _improved(self, value: float, best: float) -> bool:
        if math.isnan(value):
            return False
        if math.isnan(best):
            return True
        return value < best if self.config.mode == "min" else value > best

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.use_amp:
            return torch.autocast(device_type="cuda", dtype=torch.float16)
        return contextlib.nullcontext()

    def train_epoch(self, loader: Iterable[Any], progress: Progress, epoch: int) -> float:
        """One pass over ``loader``; returns the mean loss (over all processes)."""
        self.model.train()
        sampler = getattr(loader, "sampler", None)
        if isinstance(sampler, DistributedSampler):
            sampler.set_epoch(epoch)
        total, count = 0.0, 0
        length = len(loader) if isinstance(loader, Sized) else None
        task = progress.add_task(f"epoch {epoch + 1}/{self.config.epochs}", total=length, info="")
        for batch in loader:
            with self._autocast():
                loss = self.loss_fn(self.training_model, batch, self.device)
            if not torch.isfinite(loss):
                raise ModelError(f"training diverged at epoch {epoch + 1}: loss is {loss.item()} "
                                 f"(lower the learning rate, currently {self.config.lr})")
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            if self.config.grad_clip:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            total += float(loss.detach())
            count += 1
            progress.update(task, advance=1, info=f"loss {total / count:.4f}")
        progress.remove_task(task)
        return distributed.mean_over_processes(total / max(count, 1))

    def _validate(self) -> dict[str, float]:
        """Rank 0's validation metrics, shared with every process so that all take the same decisions."""
        metrics: dict[str, float] = {}
        if self.evaluate is not None and self.is_main:
            self.model.eval()
            with torch.no_grad():
                metrics = self.evaluate(self.model)
        return distributed.broadcast_from_main(metrics)

    def fit(self, train_loader: Iterable[Any]) -> TrainResult:
        """Train for ``config.epochs`` (or until early stopping), resuming when a checkpoint exists.

        A plain shuffled/sequential ``DataLoader`` is re-read through
        :func:`~fashionlens.distributed.shard_loader` (its ``batch_size`` is the global batch); other iterables
        are used as they are (single process only). The model is left holding the weights of the best epoch.
        """
        if isinstance(train_loader, DataLoader):
            train_loader = distributed.shard_loader(train_loader, seed=self.config.seed)
        elif distributed.world_size() > 1:
            raise ConfigError("distributed training needs a torch DataLoader to shard")
        result = TrainResult()
        first_epoch = self._resume(result)
        start = time.perf_counter()
        stale = len(result.history) - max(result.best_epoch, 0)  # epochs since the best one, across a resume
        patience = self.config.early_stop_patience
        if patience is not None and stale >= patience:
            first_epoch = self.config.epochs  # the resumed job had already stopped early: nothing left to train
        columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[info]}"), TimeElapsedColumn())
        with Progress(*columns, console=self.console, disable=not self.show_progress, transient=True) as progress:
            for epoch in range(first_epoch, self.config.epochs):
                train_loss = self.train_epoch(train_loader, progress, epoch)
                metrics = {"epoch": float(epoch + 1), "train_loss": train_loss,
                           "lr": float(self.optimizer.param_groups[0]["lr"])}
                metrics.update(self._validate())
                if self.config.monitor not in metrics:
                    raise ConfigError(f"monitored metric '{self.config.monitor}' is not among the validation "
                                      f"metrics {sorted(metrics)}")
                value = metrics[self.config.monitor]
                result.history.append(metrics)
                if self._improved(value, result.best_value):
                    result.best_epoch, result.best_value, stale = epoch + 1, value, 0
                    self.best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
                    if self.run_dir is not None:
                        save_torch(self.run_dir / "best.pt", self.best_state)
                else:
                    stale += 1
                if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                    self.scheduler.step(value)
                elif self.scheduler is not None:
                    self.scheduler.step()
                shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if k not in ("epoch", "lr"))
                self.console.print(f"epoch {epoch + 1}/{self.config.epochs}: {shown}")
                if self.run_dir is not None:
                    save_torch(self.run_dir / "last.pt", self._checkpoint(epoch, result))
                    write_json(self.run_dir / HISTORY_FILE, result.history)
                if patience is not None and stale >= patience:
                    self.console.print(f"early stop: no {self.config.monitor} improvement in {patience} epochs")
                    break
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)
        if self.channels_last:  # hand back the layout the caller gave (same values: a copy)
            self.model.to(memory_format=torch.contiguous_format)
        result.seconds = time.perf_counter() - start
        return result
