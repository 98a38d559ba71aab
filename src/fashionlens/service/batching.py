"""Micro-batching: requests that arrive while the model is busy share its next forward pass.

On a CPU, running one forward pass per request in as many threads as there are requests makes them fight over the
same cores, so every request gets slower. :class:`MicroBatcher` instead owns a fixed number of worker threads, each
taking *what is queued* (up to ``max_batch``) as one batch: with one client there is no waiting at all, and with many
clients the queue drains in small batches. The event loop only awaits a future, so slow inference never blocks other
requests (health checks, item images).

How to spend the cores (:func:`plan_threads`) depends on the runtime. PyTorch: one worker per core, each on one
thread; measured on the 2-core development machine (EfficientNet-Lite0, shared with other jobs), torch's two
intra-op threads per pass cost up to 8x more CPU per image than one (its OpenMP threads spin while waiting for each
other). onnxruntime (whose threads fashionlens lets sleep instead of spin): one worker running every core, so that a
lone request's forward pass uses all of them (p50 15 vs 19 ms at one client) while micro-batching absorbs concurrent
requests (the same req/s at 4 clients; ``benchmarks/results/service.md``). Batches beyond 2-4 images cost more per
image than single ones, hence the small default ``max_batch``.

Overload: the queue is bounded (``max_queue``). A submission finding it full raises :class:`QueueFullError` at once
(the service answers 503 with ``Retry-After``), so a burst beyond capacity costs its excess requests a quick refusal
instead of making every request wait longer and longer. With ``max_batch=1`` the same class is a bounded thread
pool: the service runs its decodes on one, so that only a few full-size images are in memory at any time.
"""

from __future__ import annotations

import asyncio
import os
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Generic, TypeVar

import torch

from fashionlens.errors import FashionlensError

T = TypeVar("T")
R = TypeVar("R")

_STOP = object()
DEFAULT_MAX_QUEUE = 32
"""Items allowed to wait: with batches of 4 at ~0.1-0.2 s on a CPU, the last one waits about a second."""
DEFAULT_DECODERS = 2
"""Decodes the service runs at once: each may hold ~7 bytes per pixel of the pixel cap (~280 MB at 40 MP)."""
RETRY_AFTER_S = 1
"""Seconds a refused client is told to wait (``Retry-After``): about the time a full queue takes to drain."""


class QueueFullError(FashionlensError):
    """Too many items are already waiting; the caller should retry after :data:`RETRY_AFTER_S` seconds."""


def plan_threads(workers: int | None = None, threads: int | None = None, cores: int | None = None,
                 runtime: str = "torch") -> tuple[int, int]:
    """``(workers, runtime threads per worker)``: unless given, one worker per core for the ``torch`` runtime and one
    worker for onnxruntime (``onnx``, and ``auto`` on a machine without CUDA), with ``cores // workers`` threads."""
    cores = cores or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    onnx = runtime == "onnx" or (runtime == "auto" and not torch.cuda.is_available())
    workers = workers or (1 if onnx else cores)
    return workers, threads or max(1, cores // workers)


class MicroBatcher(Generic[T, R]):
    """Run ``run(batch)`` on one worker thread for batches of submitted items.

    Args:
        run: Answers a batch: one result per item, in order; an ``Exception`` in place of a result is raised to
            that item's caller only.
        max_batch: Most items per call of ``run``.
        workers: Worker threads calling ``run`` concurrently (``run`` must then be thread-safe).
        max_queue: Most items waiting for a worker; one more is refused with :class:`QueueFullError`.
        name: Worker thread name prefix (shows up in stack dumps); also names the queue in errors.
    """

    def __init__(self, run: Callable[[list[T]], Sequence[R | Exception]], max_batch: int = 4, workers: int = 1,
                 max_queue: int = DEFAULT_MAX_QUEUE, name: str = "fashionlens-inference"):
        if max_batch < 1 or workers < 1 or max_queue < 1:
            raise ValueError(f"max_batch, workers and max_queue must be >= 1, got {max_batch}, {workers} and "
                             f"{max_queue}")
        self._run = run
        self.max_batch = max_batch
        self.workers = workers
        self.max_queue = max_queue
        self._name = name
        self._queue: queue.SimpleQueue[tuple[T, Future[R]] | object] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._count_lock = threading.Lock()
        self.batches = 0
        self.items = 0
        self.refused = 0
        self._waiting = 0

    @property
    def waiting(self) -> int:
        """Items queued and not yet taken by a worker."""
        return self._waiting

    def check_room(self) -> None:
        """Raise :class:`QueueFullError` when a submission now would be refused, e.g. before reading an upload.

        A hint only: another caller may take the last place before this one submits.
        """
        with self._count_lock:
            self._refuse_if_full()

    def _refuse_if_full(self) -> None:
        if self._waiting >= self.max_queue:
            self.refused += 1
            raise QueueFullError(f"server busy: {self._waiting} requests are already waiting in the {self._name} "
                                 f"queue; retry in {RETRY_AFTER_S} s")

    def start(self) -> None:
        """Start the worker threads (idempotent; :meth:`submit` also starts them)."""
        with self._lock:
            if not self._threads:
                self._threads = [threading.Thread(target=self._work, name=f"{self._name}-{i}", daemon=True)
                                 for i in range(self.workers)]
                for thread in self._threads:
                    thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Finish the items queued so far, then end the workers (a later :meth:`submit` starts new ones)."""
        with self._lock:  # held until the workers are gone, so new workers cannot take the old ones' stop signals
            for _ in self._threads:
                self._queue.put(_STOP)
            for thread in self._threads:
                thread.join(timeout)
            self._threads = []

    async def submit(self, item: T) -> R:
        """Queue ``item`` and wait (without blocking the event loop) for its result.

        Raises:
            QueueFullError: ``max_queue`` items are already waiting.
        """
        self.start()
        with self._count_lock:
            self._refuse_if_full()
            self._waiting += 1
        future: Future[R] = Future()
        self._queue.put((item, future))
        return await asyncio.wrap_future(future)

    def _work(self) -> None:
        stopping = False
        while not stopping:
            entry = self._queue.get()
            if entry is _STOP:
                return
            batch = [entry]
            while len(batch) < self.max_batch:
                try:
                    entry = self._queue.get_nowait()
                except queue.Empty:
                    break
                if entry is _STOP:
                    stopping = True
                    break
                batch.append(entry)
            with self._count_lock:
                self._waiting -= len(batch)
            self._answer(batch)  # type: ignore[arg-type]

    def _answer(self, batch: list[tuple[T, Future[R]]]) -> None:
        live = [(item, future) for item, future in batch if future.set_running_or_notify_cancel()]
        if not live:
            return  # every caller went away (client disconnected)
        try:
            results: Sequence[R | Exception] = self._run([item for item, _ in live])
        except Exception as error:  # a bug in run(): each caller sees it rather than hanging forever
            results = [error] * len(live)
        with self._count_lock:
            self.batches += 1
            self.items += len(live)
        for (_, future), result in zip(live, results, strict=True):
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)
