"""Server memory under hostile uploads: ``fashionlens serve`` in a subprocess on loopback, 8 concurrent decompression
bombs and worst-case images at a time (twice) with good photos interleaved, and the server's peak RSS (``VmHWM``).

Before bounded decoding one 1 MB 16000 x 16000 RGBA PNG took the server to 7.5 GB; now such files are refused from
their header, the worst accepted image (just under the 40 MP cap) costs about 7 bytes per pixel while it decodes, and
only ``--decoders`` (2) decode at once. Bounded: 24 requests, a 120 s start-up limit, a 60 s request timeout.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .badinputs import bad_files
from .conftest import ServiceModels

PEAK_LIMIT_BYTES = 3 * 1024**3
CONCURRENT_HOSTILE = 8


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _memory(pid: int) -> dict[str, int]:
    """``VmRSS`` and ``VmHWM`` (peak RSS) of a process, in bytes."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) * 1024
    return fields


@pytest.fixture(scope="module")
def server(service_models: ServiceModels) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``fashionlens serve`` (tagger + index, one inference thread) on a free loopback port; yields (URL, process)."""
    port = _free_port()
    command = [sys.executable, "-m", "fashionlens", "serve", "--tagger", str(service_models.tagger), "--index",
               str(service_models.index), "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
               "--threads", "1", "--log-level", "warning"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"server exited: {process.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the server did not start within 120 s")
            time.sleep(0.2)
        yield url, process
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()


async def _fire(url: str, uploads: list[tuple[str, bytes, str]]) -> list[tuple[str, str, int]]:
    """POST every upload at once; (name, endpoint, status) for each."""
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=httpx.Limits(max_connections=64)) as http:
        async def one(name: str, data: bytes, endpoint: str) -> tuple[str, str, int]:
            response = await http.post(endpoint, files={"image": (name, data, "application/octet-stream")})
            return name, endpoint, response.status_code

        return list(await asyncio.gather(*(one(*upload) for upload in uploads)))


@pytest.mark.slow
def test_peak_memory_under_concurrent_hostile_uploads(server: tuple[str, subprocess.Popen[bytes]],
                                                      service_models: ServiceModels,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    url, process = server
    hostile = [case for case in bad_files() if case.hostile]
    good = [(p.name, p.read_bytes()) for p in service_models.queries[:8]]
    idle = _memory(process.pid)
    uploads: list[tuple[str, bytes, str]] = []
    for round_ in range(2):  # two rounds of 8 hostile uploads, each with 4 good photos among them
        for i in range(CONCURRENT_HOSTILE):
            case = hostile[(round_ * CONCURRENT_HOSTILE + i) % len(hostile)]
            uploads.append((case.name, case.data, "/v1/tag" if i % 2 else "/v1/search"))
            if i % 2:
                name, data = good[(round_ * 4 + i // 2) % len(good)]
                uploads.append((name, data, "/v1/search" if i % 4 == 1 else "/v1/tag"))
    started = time.monotonic()
    answers = asyncio.run(_fire(url, uploads))
    seconds = time.monotonic() - started
    peak = _memory(process.pid)["VmHWM"]
    with capsys.disabled():
        mib = {name: value / 1024**2 for name, value in idle.items()}
        print(f"\nserver peak RSS {peak / 1024**2:.0f} MiB (after start-up: RSS {mib['VmRSS']:.0f} MiB, peak "
              f"{mib['VmHWM']:.0f} MiB) after {len(uploads)} concurrent uploads ({len(hostile)} hostile kinds) in "
              f"{seconds:.1f} s")
    expected = {case.name: case.statuses | {503} for case in hostile}
    for name, endpoint, status in answers:
        if name in expected:
            assert status in expected[name], (name, endpoint, status)
        else:
            assert status == 200, (name, endpoint, status)  # good photos among the bombs still succeed
    assert process.poll() is None
    assert peak < PEAK_LIMIT_BYTES, f"peak RSS {peak / 1024**3:.2f} GiB"
