"""Batch-inference engines: run a tagger or an embedder over a whole catalogue into a resumable shard folder.

Two engines share one job format (:mod:`fashionlens.inference.shards`), so their outputs are interchangeable and
either can resume the other's job:

* :class:`LocalEngine` -- shards one after another in this process, through the project's own feature extraction
  (:func:`fashionlens.features.extract_features`: DataLoader decode workers, one forward pass per batch);
* :class:`~fashionlens.inference.ray_engine.RayEngine` -- Ray Data: decode/resize in CPU tasks, the model in a pool
  of actors (on GPUs when the cluster has them), on one machine or a cluster.

:func:`run_job` is the entry point: it loads the model, opens (or resumes) the shard folder and hands the shards still
missing to the engine.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from fashionlens.data.records import Manifest
from fashionlens.errors import ConfigError
from fashionlens.features import extract_features, progress_bar
from fashionlens.inference.models import BatchModel, ModelSpec
from fashionlens.inference.shards import ShardPlan, plan_job

ENGINES = ("local", "ray")
DEFAULT_SHARD_SIZE = 1024


class Engine(Protocol):
    """Computes the given shards of a job and writes each one with :meth:`ShardPlan.write`."""

    name: str

    def run(self, plan: ShardPlan, manifest: Manifest, model: BatchModel, shards: list[int],
            show_progress: bool) -> None: ...


@dataclass
class LocalEngine:
    """Shards in sequence, in this process (the reference the Ray engine is tested against).

    Attributes:
        batch_size: Images per forward pass.
        num_workers: DataLoader decode workers (default: one per spare core).
        device: ``cpu``, ``cuda`` or ``None`` (auto).
    """

    batch_size: int = 64
    num_workers: int | None = None
    device: str | None = None
    name: str = field(default="local", init=False)

    def run(self, plan: ShardPlan, manifest: Manifest, model: BatchModel, shards: list[int],
            show_progress: bool) -> None:
        """Extract features shard by shard (no feature cache: the shard folder is this job's cache)."""
        paths = manifest.frame["path"].to_numpy()
        start = time.perf_counter()
        with progress_bar("shards") as progress:
            task = progress.add_task("shards", total=len(shards), rate="", visible=show_progress)
            images = 0
            for done, shard in enumerate(shards, start=1):
                rows = plan.rows(shard)
                subset = Manifest(manifest.frame.iloc[rows[0]:rows[-1] + 1], name=f"{manifest.name}-{shard}")
                result = extract_features(subset, model.backbone, cache_dir=None, batch_size=self.batch_size,
                                          num_workers=self.num_workers, device=self.device, skip_bad_images=True,
                                          show_progress=False, runtime=model.spec.runtime)
                ok = ~np.isnan(result.vectors).all(axis=1)
                plan.write(shard, rows, paths[rows], ok, model.outputs(result.vectors))
                images += len(rows)
                rate = images / (time.perf_counter() - start)
                progress.update(task, completed=done, rate=f"{rate:.1f} img/s")


@dataclass
class JobResult:
    """What :func:`run_job` did: the plan, the shards it computed (the others were already done), and how long."""

    plan: ShardPlan
    computed: list[int]
    seconds: float

    @property
    def directory(self) -> Path:
        """The shard folder."""
        return self.plan.directory


def make_engine(name: str, ray_address: str | None = None, actors: int | None = None,
                gpus_per_actor: float | None = None) -> Engine:
    """The engine called ``name`` (``local`` or ``ray``); Ray is imported only when its engine runs.

    Raises:
        ConfigError: Unknown engine name.
    """
    if name == "local":
        return LocalEngine()
    if name == "ray":
        from fashionlens.inference.ray_engine import RayEngine

        return RayEngine(address=ray_address, actors=actors, gpus_per_actor=gpus_per_actor)
    raise ConfigError(f"unknown engine '{name}'; use one of {ENGINES}")


def run_job(manifest: Manifest, spec: ModelSpec, directory: str | Path, engine: Engine | None = None,
            shard_size: int = DEFAULT_SHARD_SIZE, show_progress: bool = True) -> JobResult:
    """Run ``spec``'s model over every row of ``manifest`` into the shard folder ``directory``, resuming it.

    Args:
        manifest: The images, in order (row ``i`` of the results is row ``i`` here).
        spec: The model.
        directory: Shard folder (see :mod:`fashionlens.inference.shards`).
        engine: Where the work runs (default :class:`LocalEngine`).
        shard_size: Rows per shard: the unit of resumption, and of work handed out.
        show_progress: Draw progress bars.

    Raises:
        ConfigError: The folder holds another job.
        ModelError: The model cannot be loaded.
    """
    engine = engine or LocalEngine()
    model = spec.load()
    plan = plan_job(directory, manifest, spec.task, model.identity(), shard_size)
    pending = plan.pending()
    start = time.perf_counter()
    if pending:
        engine.run(plan, manifest, model, pending, show_progress)
    return JobResult(plan=plan, computed=pending, seconds=time.perf_counter() - start)


def shard_folder(shards: str | Path | None, out: str | Path | None) -> Path:
    """The shard folder of a CLI job: ``shards`` when given, else ``<out stem>.shards`` beside the output.

    Raises:
        ConfigError: Neither is given (a job needs a folder to resume from).
    """
    if shards is not None:
        return Path(shards)
    if out is None:
        raise ConfigError("a sharded job needs --shards DIR (or --out, beside which the shards go)")
    out = Path(out)
    return out.with_name(f"{out.stem}.shards")
