"""Service throughput and latency on each runtime: ``fashionlens serve --runtime torch`` against ``--runtime auto``
(onnxruntime on CPU) over loopback HTTP, and the same pipeline called in-process.

For ``POST /v1/tag`` (tagger + hierarchy) and ``POST /v1/search`` (embedder + catalogue index), at 1, 4 and 16
concurrent clients for a fixed time each, it measures requests/s and p50/p99 latency of both servers (``N`` asyncio
clients against each server in its own process) and in-process on ``auto`` (``N`` threads calling
:class:`~fashionlens.service.pipeline.Pipeline` directly on the photo bytes: decode, forward, heads, search).
Service / in-process throughput is the service's overhead (HTTP, multipart, JSON), less what micro-batching wins back.

Models come from ``--models`` (``tagger/``, ``hierarchy/``, ``index/`` subfolders, e.g. the demo's); missing ones are
trained there first on the shared data (frozen-feature mode; the index uses the untrained baseline embedder).

    python benchmarks/bench_service.py --data ../shared/data --models /tmp/fashionlens-service-models
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import torch
from rich.console import Console

from fashionlens.data.readers import read_clothing_attributes, read_fashion_product_images
from fashionlens.data.splits import split_manifest
from fashionlens.index import CatalogueIndex
from fashionlens.models.backbones import BackboneConfig
from fashionlens.service.batching import plan_threads
from fashionlens.service.pipeline import Pipeline
from fashionlens.tasks.common import frozen_features
from fashionlens.tasks.hierarchy import HierarchyConfig, train_hierarchy
from fashionlens.tasks.retrieval import Embedder, catalogue_metadata
from fashionlens.tasks.tagging import TaggingConfig, train_tagger

ENDPOINTS = ("/v1/tag", "/v1/search")
QUIET = Console(quiet=True)


@dataclass
class Cell:
    """One measurement: latencies of the requests completed in ``seconds``, and failures."""

    latencies: list[float] = field(default_factory=list)
    failures: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0

    @property
    def cpu_ms(self) -> float:
        """CPU time per answered request (all threads; for the service, server and client processes together)."""
        return self.cpu_seconds / len(self.latencies) * 1000 if self.latencies else float("nan")

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies, q) * 1000) if self.latencies else float("nan")

    def __add__(self, other: Cell) -> Cell:
        """Pool two runs of the same measurement."""
        return Cell(self.latencies + other.latencies, self.failures + other.failures, self.seconds + other.seconds,
                    self.cpu_seconds + other.cpu_seconds)


def build_models(data: Path, out: Path) -> None:
    """Train whatever of tagger / hierarchy / index is missing under ``out`` (as the demo does, quicker)."""
    backbone = BackboneConfig()
    if not (out / "tagger").is_dir():
        clothing = split_manifest(read_clothing_attributes(data / "clothing-attributes"), seed=0, stratify="category")
        train_tagger(clothing, TaggingConfig(backbone=backbone), console=QUIET, show_progress=False,
                     features=frozen_features(clothing, backbone)).save(out / "tagger")
    if (out / "hierarchy").is_dir() and (out / "index").is_dir():
        return
    products = split_manifest(read_fashion_product_images(data / "fashion-product-images"), seed=0,
                              stratify="articleType")
    features = frozen_features(products, backbone)
    if not (out / "hierarchy").is_dir():
        train_hierarchy(products, HierarchyConfig(backbone=backbone), features=features, console=QUIET,
                        show_progress=False).save(out / "hierarchy")
    if not (out / "index").is_dir():
        embedder = Embedder.untrained(backbone)
        CatalogueIndex.build(embedder.embed_features(features), catalogue_metadata(products), embedder.model_id,
                             embedder.metric).save(out / "index")


def query_photos(data: Path, count: int) -> list[tuple[str, bytes]]:
    """Street photos and product photos, alternating, held in memory."""
    street = sorted((data / "clothing-attributes" / "images").glob("*.jpg"))[-count // 2:]
    products = sorted((data / "fashion-product-images" / "images").glob("*.jpg"))[-count // 2:]
    return [(p.name, p.read_bytes()) for pair in zip(street, products, strict=False) for p in pair]


def in_process(call: Callable[[bytes, str], object], photos: list[tuple[str, bytes]], clients: int,
               seconds: float) -> Cell:
    """``clients`` threads calling the pipeline back to back for ``seconds``."""
    cell, lock = Cell(), threading.Lock()
    deadline = time.perf_counter() + seconds

    def worker(number: int) -> None:
        sent = 0
        while time.perf_counter() < deadline:
            name, data = photos[(number * 7 + sent) % len(photos)]
            start = time.perf_counter()
            call(data, name)
            with lock:
                cell.latencies.append(time.perf_counter() - start)
            sent += 1

    start, cpu = time.perf_counter(), time.process_time()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(worker, range(clients)))
    cell.seconds, cell.cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
    return cell


async def over_http(url: str, endpoint: str, photos: list[tuple[str, bytes]], clients: int, seconds: float) -> Cell:
    """``clients`` concurrent HTTP clients posting photos back to back for ``seconds``."""
    cell = Cell()
    deadline = time.perf_counter() + seconds

    async def client(number: int, http: httpx.AsyncClient) -> None:
        sent = 0
        while time.perf_counter() < deadline:
            name, data = photos[(number * 7 + sent) % len(photos)]
            start = time.perf_counter()
            try:
                response = await http.post(endpoint, files={"image": (name, data, "image/jpeg")})
                ok = response.status_code == 200
            except httpx.TransportError:
                ok = False
            if ok:
                cell.latencies.append(time.perf_counter() - start)
            else:
                cell.failures += 1
            sent += 1

    start = time.perf_counter()
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=httpx.Limits(max_connections=clients)) as http:
        await asyncio.gather(*(client(i, http) for i in range(clients)))
    cell.seconds = time.perf_counter() - start
    return cell


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of another process (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def served(url: str, server_pid: int, endpoint: str, photos: list[tuple[str, bytes]], clients: int,
           seconds: float) -> Cell:
    """:func:`over_http`, with the CPU time the server and this (client) process spent on it."""
    cpu = time.process_time() + process_cpu_seconds(server_pid)
    cell = asyncio.run(over_http(url, endpoint, photos, clients, seconds))
    cell.cpu_seconds = time.process_time() + process_cpu_seconds(server_pid) - cpu
    return cell


def start_server(models: Path, threads: int, max_batch: int, workers: int,
                 runtime: str) -> tuple[subprocess.Popen[bytes], str]:
    """``fashionlens serve`` in its own process on a free loopback port; returns it once it answers."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [str(Path(sys.executable).with_name("fashionlens")), "serve", "--tagger", str(models / "tagger"),
               "--hierarchy", str(models / "hierarchy"), "--index", str(models / "index"), "--port", str(port),
               "--max-batch", str(max_batch), "--workers", str(workers), "--threads", str(threads),
               "--runtime", runtime, "--log-level", "warning"]
    server = subprocess.Popen(command)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"server exited with status {server.returncode}")
        try:
            if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                return server, url
        except httpx.TransportError:
            time.sleep(0.5)
    server.kill()
    raise RuntimeError("server did not start within 300 s")


RUNTIMES = ("torch", "auto")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--models", type=Path, default=Path("/tmp/fashionlens-service-models"))
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--seconds", type=float, default=6.0, help="Duration of each measurement.")
    parser.add_argument("--repeats", type=int, default=2, help="Rounds over all cells (pooled in the table).")
    parser.add_argument("--threads", type=int, default=None, help="Runtime threads, in-process and per server "
                                                                  "inference thread (default as fashionlens serve).")
    parser.add_argument("--max-batch", type=int, default=4, help="Server micro-batch limit (1: no batching).")
    parser.add_argument("--workers", type=int, default=None, help="Server inference threads (default: one per core).")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/service.md"))
    args = parser.parse_args()
    build_models(args.data, args.models)
    plans = {runtime: plan_threads(args.workers, args.threads, runtime=runtime) for runtime in RUNTIMES}
    threads = plans["auto"][1]
    torch.set_num_threads(threads)
    photos = query_photos(args.data, 64)
    pipeline = Pipeline.load(args.models / "tagger", args.models / "hierarchy", args.models / "index",
                             runtime="auto", threads=threads)
    pipeline.warm_up()
    calls: dict[str, Callable[[bytes, str], object]] = {"/v1/tag": pipeline.tag, "/v1/search": pipeline.search}
    catalogue = len(pipeline.index) if pipeline.index is not None else 0
    servers = {runtime: start_server(args.models, plans[runtime][1], args.max_batch, plans[runtime][0], runtime)
               for runtime in RUNTIMES}
    cells = [(e, c) for e in ENDPOINTS for c in args.concurrency]
    local = {cell: Cell() for cell in cells}
    remote = {runtime: {cell: Cell() for cell in cells} for runtime in RUNTIMES}
    load_before = os.getloadavg()
    try:
        for _, url in servers.values():
            for endpoint in ENDPOINTS:  # warm-up: first requests pay for lazy initialisation (and the ONNX check)
                asyncio.run(over_http(url, endpoint, photos, 1, 2.0))
        for _ in range(args.repeats):  # the three measurements of a cell back to back: same machine load
            for endpoint, clients in cells:
                local[endpoint, clients] += in_process(calls[endpoint], photos, clients, args.seconds)
                for runtime, (server, url) in servers.items():
                    remote[runtime][endpoint, clients] += served(url, server.pid, endpoint, photos, clients,
                                                                 args.seconds)
        batching = httpx.get(servers["auto"][1] + "/v1/info").json()["batching"]
        backbones = httpx.get(servers["auto"][1] + "/v1/info").json()["runtime"]["backbones"]
    finally:
        for server, _ in servers.values():
            server.terminate()
            server.wait(30)
    load_after = os.getloadavg()

    rows = ["| endpoint | clients | service torch req/s | p50 ms | p99 ms | CPU ms/req | service auto req/s | p50 ms | "
            "p99 ms | CPU ms/req | in-process auto req/s | p50 ms | **auto / torch req/s** | service / in-process "
            "(auto) | failed |", "|" + "---|" * 15]
    for (endpoint, clients), here in local.items():
        slow, fast = remote["torch"][endpoint, clients], remote["auto"][endpoint, clients]
        columns: list[object] = [f"`{endpoint}`", clients]
        for cell in (slow, fast):
            columns += [f"{cell.rate:.1f}", f"{cell.percentile(50):.0f}", f"{cell.percentile(99):.0f}",
                        f"{cell.cpu_ms:.0f}"]
        columns += [f"{here.rate:.1f}", f"{here.percentile(50):.0f}", f"**{fast.rate / slow.rate:.2f}**",
                    f"{fast.rate / here.rate:.2f}", slow.failures + fast.failures]
        rows.append("| " + " | ".join(map(str, columns)) + " |")
    text = (f"Command: `python benchmarks/bench_service.py --data {args.data} --models {args.models} "
            f"--seconds {args.seconds:g} --repeats {args.repeats} --max-batch {args.max_batch}"
            + (f" --workers {args.workers}" if args.workers else "") + (f" --threads {args.threads}" if args.threads
                                                                         else "") + "`  \n"
            f"Machine: {platform.machine()}, {os.cpu_count()} cores shared with other jobs (load average "
            f"{load_before[0]:.1f} before, {load_after[0]:.1f} after), no GPU; each server with its runtime's "
            f"default plan (`torch`: {plans['torch'][0]} inference thread(s) x {plans['torch'][1]} thread(s); `auto`: "
            f"{plans['auto'][0]} x {plans['auto'][1]}; in-process: {threads} thread(s) per calling thread) and "
            f"micro-batches of at most {args.max_batch}; EfficientNet-Lite0 backbone shared by tagger and hierarchy "
            f"(one forward per image), baseline embedder, flat index of {catalogue} catalogue items. Runtimes: "
            f"`torch` is PyTorch (channels-last), `auto` runs {backbones}.  \n"
            f"Each cell: {args.repeats} x {args.seconds:g} s of back-to-back requests (the in-process, `torch` and "
            f"`auto` measurements of a cell run one after another) on {len(photos)} real photos (street photos "
            f"up to 400 px, 224 px product photos). In-process: N threads calling the pipeline on the bytes; "
            f"service: N HTTP clients over loopback, server in its own process, clients in this one. CPU ms/req "
            f"counts every thread of the server and client processes. The `auto` service "
            f"answered {batching['requests']} inference requests in {batching['batches']} forward passes "
            f"(mean micro-batch {batching['requests'] / max(batching['batches'], 1):.1f}).\n\n" + "\n".join(rows)
            + "\n")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
