"""The Ray Data engine: decode/resize in CPU tasks, the model in an actor pool, shards assembled by the driver.

Pipeline (streaming: every stage runs at once, bounded by Ray Data's backpressure)::

    manifest rows of the pending shards (one block per shard)
      -> map_batches(decode_images)  CPU tasks: the project's load_image + the resize half of the eval transform,
                                     uint8 out (a quarter of float32's bytes between machines)
      -> map_batches(ModelActor)     actor pool: loads the model once per actor, finishes the transform, runs
                                     backbone + head on its GPU (or CPU); returns only the small output columns
      -> driver                      gathers rows per shard and writes each shard atomically once complete

Why the driver writes: Ray Data does not keep a block aligned with a shard (blocks are split when large and batches
bundle several blocks), so only a place that sees every row can tell when a shard is complete; the outputs are small
(a 1280-d embedding is 5 KB per image), so one writer keeps up with a cluster, and only the driver needs the shard
folder. Workers need the images (shared storage, see ``benchmarks/results/batch.md``).

A local instance (no cluster address) is bound to loopback: its GCS, raylet and object-manager ports are reachable
from this machine only (see :func:`init_local_ray`). A cluster address given by the user is joined as it is.

``ray`` is an optional dependency (``pip install fashionlens[ray]``), imported only when this engine runs.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd
import torch

from fashionlens.data.dataset import ManifestImageDataset
from fashionlens.data.records import BBOX_COLUMNS, Manifest
from fashionlens.data.transforms import eval_transform
from fashionlens.errors import ConfigError, DataError
from fashionlens.inference.models import BatchModel, ModelSpec
from fashionlens.inference.shards import ShardPlan
from fashionlens.runtime import resolve_device
from fashionlens.runtime.compiled import compile_backbone


def import_ray() -> ModuleType:
    """The ``ray`` module, or a one-line error saying how to install it."""
    try:
        import ray
        import ray.data
    except ImportError as error:
        raise ConfigError("the ray engine needs Ray Data: pip install fashionlens[ray]") from error
    return ray


#: Address of a local Ray instance: loopback, so that nothing off this machine can reach its ports.
LOOPBACK = "127.0.0.1"
#: Ray's switch for multi-node clusters; with it off, Ray keeps a loopback node address (its Windows/macOS mode).
_RAY_CLUSTER_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def local_init_kwargs(num_cpus: int | None) -> dict[str, Any]:
    """The ``ray.init`` arguments of a local, loopback-only instance with ``num_cpus`` CPUs (``None``: all)."""
    return {"num_cpus": num_cpus, "include_dashboard": False, "log_to_driver": False,
            "_node_ip_address": LOOPBACK}


def init_local_ray(ray: ModuleType, num_cpus: int | None = None) -> str:
    """Start a local Ray instance whose servers listen on loopback only; returns its node address.

    Ray binds its gRPC servers (GCS, raylet, object manager) to the node address, but on Linux it rewrites a loopback
    ``_node_ip_address`` to the machine's routable address unless multi-node clusters are switched off. They are
    switched off while the instance starts (this process, and the processes it spawns, which inherit the setting),
    and restored afterwards. A warning says when the node still came up on another address.
    """
    with _single_machine(ray):
        ray.init(**local_init_kwargs(num_cpus))
    address = str(ray.util.get_node_ip_address())
    if address != LOOPBACK:
        warnings.warn(f"the local Ray instance listens on {address}, not only on loopback ({LOOPBACK}); this Ray "
                      f"version ignores the loopback node address", RuntimeWarning, stacklevel=2)
    return address


@contextmanager
def _single_machine(ray: ModuleType) -> Iterator[None]:
    # Read by this process when ray.init resolves the node address (absent in another Ray layout: then only the
    # environment variable and the loopback _node_ip_address remain).
    constants: Any = getattr(getattr(ray, "_private", None), "ray_constants", None)
    saved_env = os.environ.get(_RAY_CLUSTER_ENV)
    saved = getattr(constants, "ENABLE_RAY_CLUSTER", None)
    os.environ[_RAY_CLUSTER_ENV] = "0"
    if saved is not None:
        constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        if saved is not None:
            constants.ENABLE_RAY_CLUSTER = saved
        if saved_env is None:
            os.environ.pop(_RAY_CLUSTER_ENV, None)
        else:
            os.environ[_RAY_CLUSTER_ENV] = saved_env


def decode_images(batch: pd.DataFrame, preprocess: Any) -> dict[str, np.ndarray]:
    """Ray task: decode, crop, resize a batch of manifest rows to uint8 ``(n, 3, size, size)``; bad files: ok=False.

    Uses the same :class:`~fashionlens.data.dataset.ManifestImageDataset` as the local engine, with the first half
    of the same evaluation transform, so both engines feed the model identical pixels.
    """
    to_uint8, _ = eval_transform(preprocess, separate=True)
    size = int(preprocess.input_size)
    frame = batch[["path", *BBOX_COLUMNS]].reset_index(drop=True)
    dataset = ManifestImageDataset(Manifest(frame, name="batch"), to_uint8, skip_bad_images=True)
    images = np.zeros((len(frame), 3, size, size), dtype=np.uint8)
    ok = np.zeros(len(frame), dtype=bool)
    for i in range(len(frame)):
        item = dataset[i]
        if item is not None:
            images[i], ok[i] = item[0].numpy(), True
    return {"row": batch["row"].to_numpy(dtype=np.int64), "image": images, "ok": ok}


class ModelActor:
    """Ray actor: loads the model once, then maps batches of uint8 images to output columns."""

    def __init__(self, spec: ModelSpec, device: str | None = None):
        self.model = spec.load()
        self.backbone = compile_backbone(self.model.backbone, spec.runtime, resolve_device(device))
        _, self.finish = eval_transform(self.model.preprocess, separate=True)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Backbone features of the batch's readable images (NaN rows for the others), then the model's outputs."""
        ok = np.asarray(batch["ok"], dtype=bool)
        images = self.finish(torch.from_numpy(np.ascontiguousarray(batch["image"])))
        features = self.backbone(images)
        features[~ok] = np.nan
        return {"row": batch["row"], "ok": ok, **self.model.outputs(features)}


class _ShardAssembler:
    """Collects output rows per shard and writes a shard as soon as all its rows have arrived."""

    def __init__(self, plan: ShardPlan, paths: np.ndarray, shards: list[int]):
        self.plan = plan
        self.paths = paths
        self.expected = {shard: len(plan.rows(shard)) for shard in shards}
        self.parts: dict[int, list[dict[str, np.ndarray]]] = {shard: [] for shard in shards}
        self.seen = dict.fromkeys(shards, 0)
        self.written: list[int] = []

    def add(self, batch: dict[str, np.ndarray]) -> None:
        shard_of_row = np.asarray(batch["row"]) // self.plan.shard_size
        for shard in np.unique(shard_of_row).tolist():
            if shard not in self.parts:
                raise DataError(f"the ray engine returned rows of shard {shard}, which was not asked for")
            mask = shard_of_row == shard
            self.parts[shard].append({name: np.asarray(values)[mask] for name, values in batch.items()})
            self.seen[shard] += int(mask.sum())
            if self.seen[shard] == self.expected[shard]:
                self._write(shard)

    def _write(self, shard: int) -> None:
        parts = self.parts.pop(shard)
        merged = {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}
        rows, ok = merged.pop("row"), merged.pop("ok")
        self.plan.write(shard, rows, self.paths[rows], ok, merged)
        self.written.append(shard)

    def check_complete(self) -> None:
        if self.parts:
            missing = sorted(self.parts)
            raise DataError(f"the ray engine finished without shard(s) {missing[:5]} of {self.plan.directory}")


@dataclass
class RayEngine:
    """Ray Data batch inference on a local Ray instance or a cluster.

    Attributes:
        address: Cluster to join (``ray://...`` or ``auto``; ``RAY_ADDRESS`` also works), used as it is; ``None``
            starts a local instance with ``local_cpus`` CPUs, listening on loopback only (:func:`init_local_ray`),
            unless Ray is already initialised in this process, which is reused.
        actors: Model actors; default: one per GPU when the cluster has GPUs, else all CPUs but an eighth (at least
            one) left to decode: on CPUs decoding a 224 px JPEG costs ~1 % of EfficientNet-Lite0's forward pass
            (``benchmarks/results/batch.md``), 2400 px originals much more.
        gpus_per_actor: GPUs per model actor; default 1 when the cluster has GPUs, else 0.
        cpus_per_actor: CPUs reserved per model actor (its torch threads).
        batch_size: Images per model forward pass.
        decode_batch_size: Images per decode task batch.
        decode_memory: Bytes of memory reserved per decode task: its worker process (torch imported) holds
            ~0.5 GB; a 2400 px original decodes to ~13 MB and a batch's uint8 output is ~5 MB at 224 px.
        local_cpus: CPUs of a local instance (``None``: all of this machine's).
    """

    address: str | None = None
    actors: int | None = None
    gpus_per_actor: float | None = None
    cpus_per_actor: float = 1.0
    batch_size: int = 64
    decode_batch_size: int = 32
    decode_memory: int = 640 * 1024**2
    local_cpus: int | None = None
    name: str = field(default="ray", init=False)

    def run(self, plan: ShardPlan, manifest: Manifest, model: BatchModel, shards: list[int],
            show_progress: bool) -> None:
        """Run the pending ``shards`` through Ray Data and write them as they complete."""
        ray = import_ray()
        started_here = not ray.is_initialized()
        address = self.address or os.environ.get("RAY_ADDRESS")
        if started_here:
            if address:
                ray.init(address=address, log_to_driver=False)
            else:
                init_local_ray(ray, self.local_cpus)
        try:
            self._run(ray, plan, manifest, model, shards, show_progress)
        finally:
            if started_here:
                ray.shutdown()

    def actor_pool(self, ray: ModuleType) -> tuple[int, float]:
        """Model actors and GPUs per actor for the connected cluster (see the class attributes)."""
        resources = ray.cluster_resources()
        gpus, cpus = float(resources.get("GPU", 0)), float(resources.get("CPU", 1))
        per_actor = self.gpus_per_actor if self.gpus_per_actor is not None else (1.0 if gpus else 0.0)
        if self.actors is not None:
            actors = self.actors
        elif per_actor:
            actors = max(1, int(gpus // per_actor))
        else:
            actors = max(1, int((cpus - max(1, cpus // 8)) // self.cpus_per_actor))
        if actors < 1:
            raise ConfigError(f"the ray engine needs at least 1 model actor, got {actors}")
        return actors, per_actor

    def _run(self, ray: ModuleType, plan: ShardPlan, manifest: Manifest, model: BatchModel, shards: list[int],
             show_progress: bool) -> None:
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = show_progress
        frame = manifest.frame
        blocks = []
        for shard in shards:
            rows = plan.rows(shard)
            block = frame.iloc[rows[0]:rows[-1] + 1][["path", *BBOX_COLUMNS]].reset_index(drop=True)
            block.insert(0, "row", rows)
            blocks.append(block)
        actors, gpus = self.actor_pool(ray)
        dataset = ray.data.from_pandas(blocks)
        # The memory request also keeps Ray from fusing the decode tasks into the model actors, which it does when
        # their resource requests match (CPU-only clusters): fused, each actor would decode and run the model in
        # turn instead of overlapping them, and decoding could not spread over more CPUs than there are actors.
        dataset = dataset.map_batches(decode_images, fn_kwargs={"preprocess": model.preprocess},
                                      batch_size=self.decode_batch_size, batch_format="pandas", num_cpus=1,
                                      memory=self.decode_memory)
        dataset = dataset.map_batches(ModelActor, fn_constructor_kwargs={"spec": model.spec},
                                      batch_size=self.batch_size, batch_format="numpy",
                                      compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=self.cpus_per_actor,
                                      num_gpus=gpus)
        assembler = _ShardAssembler(plan, frame["path"].to_numpy(), shards)
        for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
            assembler.add(batch)
        assembler.check_complete()
