"""A bounded load test over loopback: concurrent clients on /v1/tag and /v1/search for a few seconds.

Asserts that every request is answered (no 5xx, no dropped connection) and that health checks stay quick while
inference is busy, and prints throughput and p50/p99 latency. The server shares this process (and the machine's
2 cores) with the clients, so the figures here are a smoke check; ``benchmarks/bench_service.py`` measures properly.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import httpx
import numpy as np
import pytest

from .conftest import ServiceModels

CLIENTS = 8
SECONDS = 3.0


@dataclass
class Tally:
    """Latencies by endpoint, status codes, and transport failures."""

    seconds: dict[str, list[float]] = field(default_factory=dict)
    statuses: dict[int, int] = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)

    def add(self, endpoint: str, status: int, seconds: float) -> None:
        self.seconds.setdefault(endpoint, []).append(seconds)
        self.statuses[status] = self.statuses.get(status, 0) + 1

    def lines(self, wall: float) -> list[str]:
        lines = []
        for endpoint, values in sorted(self.seconds.items()):
            p50, p99 = np.percentile(values, [50, 99]) * 1000
            lines.append(f"{endpoint}: {len(values)} requests, {len(values) / wall:.1f}/s, "
                         f"p50 {p50:.0f} ms, p99 {p99:.0f} ms")
        return lines


async def _clients(base_url: str, photos: list[tuple[str, bytes]], tally: Tally) -> float:
    deadline = time.monotonic() + SECONDS
    limits = httpx.Limits(max_connections=CLIENTS + 1)

    async def client(number: int, http: httpx.AsyncClient) -> None:
        sent = 0
        while time.monotonic() < deadline:
            endpoint = "/v1/search" if (number + sent) % 2 else "/v1/tag"
            name, data = photos[(number * 7 + sent) % len(photos)]
            start = time.perf_counter()
            try:
                response = await http.post(endpoint, files={"image": (name, data, "image/jpeg")})
                tally.add(endpoint, response.status_code, time.perf_counter() - start)
            except httpx.TransportError as error:
                tally.dropped.append(f"{endpoint}: {error!r}")
            sent += 1

    async def health(http: httpx.AsyncClient) -> None:
        while time.monotonic() < deadline:
            start = time.perf_counter()
            response = await http.get("/healthz")
            tally.add("/healthz", response.status_code, time.perf_counter() - start)
            await asyncio.sleep(0.1)

    started = time.monotonic()
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=60) as http:
        await asyncio.gather(*(client(i, http) for i in range(CLIENTS)), health(http))
    return time.monotonic() - started


def test_concurrent_tag_and_search_are_all_answered(live_server: str, service_models: ServiceModels,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    photos = [(p.name, p.read_bytes()) for p in service_models.queries[:10] + service_models.street_photos[:10]]
    tally = Tally()
    wall = asyncio.run(_clients(live_server, photos, tally))
    with capsys.disabled():
        print(f"\nload test, {CLIENTS} clients for {SECONDS:.0f} s (server in the same process):")
        for line in tally.lines(wall):
            print("  " + line)
    assert tally.dropped == []
    assert set(tally.statuses) == {200}, tally.statuses
    assert len(tally.seconds["/v1/tag"]) >= CLIENTS // 2 and len(tally.seconds["/v1/search"]) >= CLIENTS // 2
    # health checks never wait for inference: they are answered on the event loop, inference is on its own thread
    assert np.median(tally.seconds["/healthz"]) < np.median(tally.seconds["/v1/tag"]) / 2
