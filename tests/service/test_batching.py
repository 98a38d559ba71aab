"""Micro-batching: concurrent submissions share calls, results and errors reach only their own callers, and a full
queue refuses at once.

Synchronisation is by events and barriers only (no sleeps, no timing windows), so the tests give the same answer on
an idle machine and on a loaded 2-core one.
"""

from __future__ import annotations

import asyncio
import threading

import pytest

from fashionlens.service.batching import MicroBatcher, QueueFullError, plan_threads

WAIT_S = 10.0
"""Upper bound on any wait: only reached when the code under test is broken (then the test fails, not hangs)."""


def test_queued_items_share_one_call_and_keep_their_order() -> None:
    entered, gate = threading.Event(), threading.Event()
    calls: list[list[int]] = []

    def run(items: list[int]) -> list[int | Exception]:
        entered.set()
        assert gate.wait(WAIT_S)  # the first call holds the worker while the others queue up
        calls.append(items)
        return [ValueError(f"bad {i}") if i == 3 else i * 10 for i in items]

    batcher: MicroBatcher[int, int] = MicroBatcher(run, max_batch=4)

    async def main() -> list[int | BaseException]:
        tasks = [asyncio.create_task(batcher.submit(i)) for i in range(7)]
        await asyncio.sleep(0)  # one loop turn: every task has queued its item (submit queues before awaiting)
        assert await asyncio.to_thread(entered.wait, WAIT_S)
        assert not calls and batcher.waiting >= 7 - batcher.max_batch  # the rest wait behind the first call
        gate.set()
        return await asyncio.gather(*tasks, return_exceptions=True)

    results = asyncio.run(main())
    batcher.stop()
    assert results[:3] == [0, 10, 20] and results[4:] == [40, 50, 60]
    assert isinstance(results[3], ValueError) and str(results[3]) == "bad 3"
    assert sorted(i for call in calls for i in call) == list(range(7))
    assert max(len(call) for call in calls) == 4 and len(calls) <= 3  # batched, never beyond max_batch
    assert (batcher.batches, batcher.items, batcher.waiting) == (len(calls), 7, 0)


def test_a_failing_run_fails_its_batch_without_killing_the_worker() -> None:
    def run(items: list[str]) -> list[str | Exception]:
        if "boom" in items:
            raise RuntimeError("model crashed")
        return [item.upper() for item in items]

    batcher: MicroBatcher[str, str] = MicroBatcher(run)

    async def main() -> str:
        with pytest.raises(RuntimeError, match="model crashed"):
            await batcher.submit("boom")
        return await batcher.submit("fine")

    assert asyncio.run(main()) == "FINE"
    batcher.stop()


def test_workers_share_the_queue_and_restart_after_stop() -> None:
    together = threading.Barrier(3, timeout=WAIT_S)  # passes only when three calls are in flight at once
    inside, peak, lock = [0], [0], threading.Lock()

    def run(items: list[int]) -> list[int | Exception]:
        with lock:
            inside[0] += 1
            peak[0] = max(peak[0], inside[0])
        together.wait()
        with lock:
            inside[0] -= 1
        return list(items)

    batcher: MicroBatcher[int, int] = MicroBatcher(run, max_batch=1, workers=3)

    async def main() -> list[int]:
        return list(await asyncio.gather(*(batcher.submit(i) for i in range(9))))

    assert asyncio.run(main()) == list(range(9))
    assert peak[0] == 3  # three batches in flight at once
    batcher.stop()
    assert asyncio.run(main()) == list(range(9))  # submit starts fresh workers
    batcher.stop()


def test_a_full_queue_refuses_at_once_and_accepts_again_once_drained() -> None:
    entered, gate = threading.Event(), threading.Event()

    def run(items: list[int]) -> list[int | Exception]:
        entered.set()
        assert gate.wait(WAIT_S)
        return [i + 100 for i in items]

    batcher: MicroBatcher[int, int] = MicroBatcher(run, max_batch=1, workers=1, max_queue=2, name="test")

    async def main() -> list[int]:
        running = asyncio.create_task(batcher.submit(0))
        assert await asyncio.to_thread(entered.wait, WAIT_S)  # item 0 is being answered: the queue is empty
        waiting = [asyncio.create_task(batcher.submit(i)) for i in (1, 2)]
        await asyncio.sleep(0)  # both have queued
        assert batcher.waiting == 2
        with pytest.raises(QueueFullError, match=r"server busy: 2 requests are already waiting in the test queue"):
            await batcher.submit(3)
        with pytest.raises(QueueFullError):
            batcher.check_room()
        assert batcher.refused == 2
        gate.set()
        answered = [await running, *await asyncio.gather(*waiting)]
        batcher.check_room()  # drained: room again
        return [*answered, await batcher.submit(4)]

    assert asyncio.run(main()) == [100, 101, 102, 104]
    assert batcher.waiting == 0
    batcher.stop()


@pytest.mark.parametrize("settings", [{"max_batch": 0}, {"workers": 0}, {"max_queue": 0}])
def test_sizes_must_be_positive(settings: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="must be >= 1"):
        MicroBatcher(lambda items: items, settings.get("max_batch", 4), settings.get("workers", 1),
                     settings.get("max_queue", 32))


@pytest.mark.parametrize(("given", "expected"), [
    ((None, None), (4, 1)), ((1, None), (1, 4)), ((3, None), (3, 1)), ((2, 3), (2, 3)), ((8, None), (8, 1)),
])
def test_thread_plan_spends_each_core_once_by_default(given: tuple[int | None, int | None],
                                                       expected: tuple[int, int]) -> None:
    assert plan_threads(*given, cores=4) == expected  # torch: a worker per core, one thread each


@pytest.mark.parametrize(("given", "expected"), [((None, None), (1, 4)), ((2, None), (2, 2)), ((1, 2), (1, 2))])
def test_onnxruntime_gets_one_worker_on_every_core_by_default(given: tuple[int | None, int | None],
                                                               expected: tuple[int, int]) -> None:
    assert plan_threads(*given, cores=4, runtime="onnx") == expected
