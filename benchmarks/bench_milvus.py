"""Benchmark the ``milvus`` catalogue backend (Milvus Lite) against ``faiss``, side by side in one run.

For each data set, every (backend, kind) pair is built from the same vectors and metadata through
:meth:`CatalogueIndex.build` and queried one query at a time through :meth:`CatalogueIndex.search` (the public
path, metadata of the hits included), unfiltered and with a filter. The reference is the FAISS ``flat`` index
(exact): "overlap@10" is the mean fraction of its top-10 that a configuration returns, i.e. parity for ``flat``
(expected >= 0.99: only ties may differ) and recall@10 against exact search for the approximate kinds.

Data:

* ``demo``: the 8,080-item demo catalogue (Fashion Product Images), embedded by ``Embedder.untrained()`` (1280-d,
  cached features), with its real metadata; queries are catalogue items' own vectors, the filter
  ``gender=Women`` (~30 % of items).
* ``synthetic``: ``--sizes`` clustered unit vectors of ``--dim`` dimensions (as in ``bench_index.py``), the filter
  one category of ten (10 %).

Build time includes Milvus's insert, flush and index build: Milvus Lite builds segment indexes in a background
thread after ``build`` returns, so the benchmark waits for that thread (``wait_for_lite_indexes``) before it stops
the clock and before any search. "ΔRSS GB" is the growth of this process's resident memory during the build
(Milvus Lite runs in-process, so its memtables, segments and FAISS-based indexes are all counted); "disk MB" is
the size of the Milvus Lite database (FAISS: the saved index directory). Both filters keep more than
``EXACT_SUBSET_MAX`` (2048) items (demo: 2,570), so the filtered columns measure the filtered search inside each
backend (Milvus: the boolean expression; FAISS: the ID selector), not the exact small-subset path.
Latencies are wall time of one ``search`` call.

Milvus Lite 3.2 is Milvus's API over a pure-Python engine that uses FAISS for its HNSW and IVF indexes; it has no
IVF_PQ, so ``ivfpq`` is not run on it here. A Milvus server is a different engine (C++/Go, distributed); its
figures are not these.

Usage::

    .venv/bin/python benchmarks/bench_milvus.py                             # demo + 10^5 synthetic
    .venv/bin/python benchmarks/bench_milvus.py --sections synthetic --sizes 100000 1000000
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import faiss
import numpy as np
import pandas as pd

from bench_index import item_table, omp_threads, recall_at_k, rss_gb, timed_search, unit_vectors
from fashionlens.index import CatalogueIndex
from fashionlens.io import write_text

K = 10
CONFIGS = [("faiss", "flat"), ("milvus", "flat"), ("faiss", "ivf"), ("milvus", "ivf"), ("faiss", "hnsw"),
           ("milvus", "hnsw")]


@dataclass
class Result:
    """One row of the results table."""

    data: str
    n: int
    dim: int
    backend: str
    kind: str
    params: str
    build_s: float
    grown_gb: float
    disk_mb: float
    p50_ms: float
    p99_ms: float
    overlap: float
    filtered_p50_ms: float
    filtered_p99_ms: float
    filtered_overlap: float
    queries: int


@dataclass
class DataSet:
    """Vectors, metadata, queries and the filter of one benchmark data set."""

    name: str
    vectors: np.ndarray
    items: pd.DataFrame
    queries: np.ndarray
    filters: dict[str, str]


def demo_data(data_root: Path, queries: int, seed: int) -> DataSet:
    """The demo catalogue embedded by the untrained baseline (features are cached after the first run)."""
    from fashionlens.data.readers import read_fashion_product_images
    from fashionlens.tasks.retrieval import Embedder, catalogue_metadata

    manifest = read_fashion_product_images(data_root / "fashion-product-images")
    vectors = Embedder.untrained().embed(manifest)
    rows = np.random.default_rng(seed).choice(len(vectors), size=min(queries, len(vectors)), replace=False)
    return DataSet("demo", vectors, catalogue_metadata(manifest), vectors[rows], {"gender": "Women"})


def synthetic_data(n: int, dim: int, queries: int, seed: int, clusters: int = 1000) -> DataSet:
    rng = np.random.default_rng(seed)
    centres = unit_vectors(rng, clusters, dim, None)
    vectors = unit_vectors(rng, n, dim, centres)
    return DataSet(f"synthetic-{n}", vectors, item_table(n, rng), unit_vectors(rng, queries, dim, centres),
                   {"category": "c0"})


def wait_for_lite_indexes(uri: str) -> None:
    """Block until Milvus Lite has built the segment indexes of every collection in the database at ``uri``.

    Milvus Lite builds them in a background thread after a flush and reports them finished at once, searching
    unindexed segments by brute force meanwhile, and has no API to wait for them; so this reaches into its
    in-process engine (benchmark only) to time the build to the end and the searches against the built index.
    """
    from milvus_lite.server_manager import server_manager_instance

    _server, database, _port = server_manager_instance._servers[str(Path(uri).resolve())]
    for collection in database._collections.values():
        collection._wait_for_bg()


def disk_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def bench(data: DataSet, configs: list[tuple[str, str]], threads: int, log: Callable[[str], None]) -> Iterator[Result]:
    truth: dict[str, list[list[str]]] = {}
    n, dim = data.vectors.shape
    for backend, kind in configs:
        work = Path(tempfile.mkdtemp(prefix="bench-milvus-"))
        storage = {"uri": str(work / "lite.db")} if backend == "milvus" else None
        try:
            gc.collect()
            before = rss_gb()
            start = time.perf_counter()
            with omp_threads(threads):
                catalogue = CatalogueIndex.build(data.vectors, data.items, model_id="bench", kind=kind,
                                                 backend=backend, storage=storage)
                if storage is not None:
                    wait_for_lite_indexes(storage["uri"])
            build_s, grown = time.perf_counter() - start, rss_gb() - before
            if backend == "faiss":
                catalogue.save(work / "index")
            size = disk_mb(work)
            log(f"{data.name} {backend} {kind}: built in {build_s:.1f} s, RSS +{grown:.2f} GB, {size:.0f} MB on disk")
            plain, found = timed_search(catalogue, data.queries)
            filtered, found_filtered = timed_search(catalogue, data.queries, filters=data.filters)
            if (backend, kind) == ("faiss", "flat"):
                truth = {"plain": found, "filtered": found_filtered}
            params = ", ".join(f"{k}={v}" for k, v in catalogue.params.items()) or "-"
            row = Result(data.name, n, dim, backend, kind, params, build_s, grown, size,
                         float(np.percentile(plain, 50)), float(np.percentile(plain, 99)),
                         recall_at_k(found, truth["plain"]),
                         float(np.percentile(filtered, 50)), float(np.percentile(filtered, 99)),
                         recall_at_k(found_filtered, truth["filtered"]), len(data.queries))
            log(f"  p50 {row.p50_ms:.2f} ms, p99 {row.p99_ms:.2f} ms, overlap {row.overlap:.3f}; filtered p50 "
                f"{row.filtered_p50_ms:.2f} ms, overlap {row.filtered_overlap:.3f}")
            yield row
            del catalogue
        finally:
            shutil.rmtree(work, ignore_errors=True)


def markdown(header: str, results: list[Result]) -> str:
    lines = [header, "",
             "| data | n | dim | backend | index | params | build s | ΔRSS GB | disk MB | p50 ms | p99 ms | overlap@10 "
             "| filtered p50 ms | filtered p99 ms | filtered overlap@10 | queries |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    lines += [
        f"| {r.data} | {r.n} | {r.dim} | {r.backend} | {r.kind} | {r.params} | {r.build_s:.1f} | {r.grown_gb:.2f} | "
        f"{r.disk_mb:.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | {r.overlap:.3f} | {r.filtered_p50_ms:.2f} | "
        f"{r.filtered_p99_ms:.2f} | {r.filtered_overlap:.3f} | {r.queries} |"
        for r in results
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sections", nargs="+", choices=["demo", "synthetic"], default=["demo", "synthetic"])
    parser.add_argument("--data", type=Path, default=Path("/work/shared/data"), help="root of the shared data")
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000], help="synthetic catalogue sizes")
    parser.add_argument("--dim", type=int, default=256, help="synthetic vector dimension")
    parser.add_argument("--kinds", nargs="+", default=["flat", "ivf", "hnsw"], help="index kinds (flat always runs)")
    parser.add_argument("--queries", type=int, default=100, help="single queries per configuration and filter")
    parser.add_argument("--max-build-s", type=float, default=60.0,
                        help="run the next synthetic size only if every build of the previous one took less")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="FAISS threads for builds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "index_milvus.md")
    args = parser.parse_args()
    faiss.omp_set_num_threads(1)  # single queries: see bench_index.omp_threads
    configs = [(backend, kind) for backend, kind in CONFIGS if kind == "flat" or kind in args.kinds]

    header = (
        f"# Catalogue index: Milvus Lite vs FAISS\n\nCommand: `{shlex.join(['python', *sys.argv])}`  \n"
        f"k={K}, metric=ip, queries={args.queries} per configuration and filter, one at a time; build threads="
        f"{args.threads}, search threads=1; faiss {faiss.__version__}, pymilvus {version('pymilvus')}, milvus-lite "
        f"{version('milvus-lite')}; {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs (shared "
        f"with other work; load average at start {os.getloadavg()[0]:.1f}), {time.strftime('%Y-%m-%d')}. "
        "overlap@10: mean fraction of the FAISS flat (exact) top-10 returned."
    )
    results: list[Result] = []
    started = time.perf_counter()

    def log(message: str) -> None:
        print(f"{time.perf_counter() - started:7.0f} s  {message}", flush=True)

    def run(data: DataSet) -> list[Result]:
        rows = []
        for row in bench(data, configs, args.threads, log):
            rows.append(row)
            results.append(row)
            write_text(args.out, markdown(header, results))
        return rows

    if "demo" in args.sections:
        run(demo_data(args.data, args.queries, args.seed))
    if "synthetic" in args.sections:
        for n in sorted(args.sizes):
            rows = run(synthetic_data(n, args.dim, args.queries, args.seed))
            slowest = max(row.build_s for row in rows)
            if slowest >= args.max_build_s and n != max(args.sizes):
                log(f"stopping: a build at n={n} took {slowest:.0f} s (>= --max-build-s {args.max_build_s:.0f})")
                break
            gc.collect()
    footer = f"\nLoad average at the end: {os.getloadavg()[0]:.1f}; total {time.perf_counter() - started:.0f} s.\n"
    write_text(args.out, markdown(header, results) + footer)
    print(markdown(header, results) + footer)
    log(f"done; written to {args.out}")


if __name__ == "__main__":
    main()
