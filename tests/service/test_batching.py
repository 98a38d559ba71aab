"""Micro-batching: concurrent submissions share calls, results and errors reach only their own callers."""

from __future__ import annotations

import asyncio
import threading

import pytest

from fashionlens.service.batching import MicroBatcher, plan_threads


def test_queued_items_share_one_call_and_keep_their_order() -> None:
    gate = threading.Event()
    calls: list[list[int]] = []

    def run(items: list[int]) -> list[int | Exception]:
        gate.wait(5)  # the first call holds the worker while the others queue up
        calls.append(items)
        return [ValueError(f"bad {i}") if i == 3 else i * 10 for i in items]

    batcher: MicroBatcher[int, int] = MicroBatcher(run, max_batch=4)

    async def main() -> list[int | BaseException]:
        tasks = [asyncio.create_task(batcher.submit(i)) for i in range(7)]
        await asyncio.sleep(0.2)
        gate.set()
        return await asyncio.gather(*tasks, return_exceptions=True)

    results = asyncio.run(main())
    batcher.stop()
    assert results[:3] == [0, 10, 20] and results[4:] == [40, 50, 60]
    assert isinstance(results[3], ValueError) and str(results[3]) == "bad 3"
    assert sorted(i for call in calls for i in call) == list(range(7))
    assert max(len(call) for call in calls) == 4 and len(calls) <= 3  # batched, never beyond max_batch
    assert (batcher.batches, batcher.items) == (len(calls), 7)


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
    inside, peak, lock = [0], [0], threading.Lock()

    def run(items: list[int]) -> list[int | Exception]:
        with lock:
            inside[0] += 1
            peak[0] = max(peak[0], inside[0])
        threading.Event().wait(0.05)
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


@pytest.mark.parametrize("settings", [{"max_batch": 0}, {"workers": 0}])
def test_sizes_must_be_positive(settings: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="must be >= 1"):
        MicroBatcher(lambda items: items, **settings)


@pytest.mark.parametrize(("given", "expected"), [
    ((None, None), (4, 1)), ((1, None), (1, 4)), ((3, None), (3, 1)), ((2, 3), (2, 3)), ((8, None), (8, 1)),
])
def test_thread_plan_spends_each_core_once_by_default(given: tuple[int | None, int | None],
                                                       expected: tuple[int, int]) -> None:
    assert plan_threads(*given, cores=4) == expected
