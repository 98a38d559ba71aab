"""Data-parallel training across processes (``torchrun``): process group, ranks, and sharded loaders.

Launch any training command under ``torchrun`` (``torchrun --nproc_per_node 4 -m fashionlens tag train ...``): the
CLI joins the process group that torchrun's environment describes (NCCL on GPUs, gloo on CPU), the shared
:class:`~fashionlens.engine.Trainer` wraps the model in ``DistributedDataParallel`` and shards every epoch with a
``DistributedSampler``, and only rank 0 logs, evaluates and writes checkpoints and model directories.

Outside torchrun every query below answers as a single process (world size 1, rank 0), so task code calls them
unconditionally. The batch size in the configs is the *global* batch: each of ``W`` processes takes ``batch/W``
rows, so a run gives the same updates whatever the number of processes.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, SequentialSampler

from fashionlens.errors import ConfigError

T = TypeVar("T")


def launched_distributed() -> bool:
    """Whether the environment (set by ``torchrun``) asks for more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_distributed(backend: str | None = None) -> bool:
    """Join the process group described by torchrun's environment; a no-op for a single process.

    Args:
        backend: ``nccl`` or ``gloo``; default NCCL when CUDA is present, else gloo.

    Returns:
        Whether this process is part of an initialised multi-process group.
    """
    if dist.is_available() and dist.is_initialized():
        return True
    if not launched_distributed():
        return False
    if not dist.is_available():
        raise ConfigError("WORLD_SIZE > 1 but this torch build has no torch.distributed support")
    for name in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
        if name not in os.environ:
            raise ConfigError(f"WORLD_SIZE is set but {name} is not: launch with torchrun, which sets both")
    use_cuda = torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(local_rank())
    dist.init_process_group(backend=backend or ("nccl" if use_cuda else "gloo"))
    return True


def world_size() -> int:
    """Number of training processes (1 outside a process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This process's global rank (0 outside a process group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def local_rank() -> int:
    """This process's rank on its machine: the GPU it uses."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main_process() -> bool:
    """Rank 0: the process that logs, evaluates and writes files."""
    return rank() == 0


def barrier() -> None:
    """Wait for every process (a no-op for one)."""
    if world_size() > 1:
        dist.barrier()


@contextmanager
def main_process_first() -> Iterator[None]:
    """Let rank 0 run the block first (e.g. fill a disk cache), then the others (which then only read)."""
    if not is_main_process():
        barrier()
    try:
        yield
    finally:
        if is_main_process():
            barrier()


def broadcast_from_main(value: T) -> T:
    """Rank 0's ``value`` on every process (any picklable object)."""
    if world_size() == 1:
        return value
    box: list[Any] = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]  # type: ignore[no-any-return]


def mean_over_processes(value: float) -> float:
    """The mean of a scalar over all processes."""
    if world_size() == 1:
        return value
    tensor = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(tensor)
    return float(tensor.item()) / world_size()


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The network inside a ``DistributedDataParallel`` wrapper (the model itself otherwise).

    Loss callbacks receive the wrapper under torchrun; one that needs the network's own methods (e.g. a head's
    loss) reaches them through this.
    """
    return model.module if isinstance(model, DistributedDataParallel) else model


def shard_loader(loader: DataLoader[Any], seed: int, replicas: int | None = None,
                 shard: int | None = None) -> DataLoader[Any]:
    """``loader`` re-built to read this process's shard, with the epoch order owned by a ``DistributedSampler``.

    The order of an epoch is a seeded permutation of the whole dataset (fixed by ``seed`` and the epoch number,
    which the engine sets), and global batch ``k`` holds the same rows whatever the number of processes: each of
    ``W`` processes reads every ``W``-th row of the permutation, ``batch_size / W`` at a time. A resumed run
    therefore continues with the order it would have had, even on a different number of processes.

    Args:
        loader: A loader over a map-style dataset with a plain shuffled or sequential sampler; its
            ``batch_size`` is the global batch.
        seed: Seed of the epoch permutations.
        replicas: Number of processes (default: the world size).
        shard: This process's index (default: the rank).

    Raises:
        ConfigError: The loader uses a custom sampler (with more than one process), or the global batch does
            not divide by the number of processes.
    """
    replicas = world_size() if replicas is None else replicas
    shard = rank() if shard is None else shard
    plain = isinstance(loader.sampler, RandomSampler | SequentialSampler) and loader.batch_size is not None
    if not plain:
        if replicas > 1:
            raise ConfigError(f"distributed training needs a loader with a plain shuffled or sequential sampler, "
                              f"got {type(loader.sampler).__name__}")
        return loader
    batch_size = int(loader.batch_size or 1)
    if batch_size % replicas:
        raise ConfigError(f"batch_size {batch_size} (the global batch) does not divide by the {replicas} "
                          f"training processes")
    shuffle = isinstance(loader.sampler, RandomSampler)
    sampler: DistributedSampler[Any] = DistributedSampler(loader.dataset, num_replicas=replicas, rank=shard,
                                                          shuffle=shuffle, seed=seed)
    return DataLoader(loader.dataset, batch_size=batch_size // replicas, sampler=sampler,
                      num_workers=loader.num_workers, collate_fn=loader.collate_fn, pin_memory=loader.pin_memory,
                      drop_last=loader.drop_last, persistent_workers=loader.persistent_workers)
