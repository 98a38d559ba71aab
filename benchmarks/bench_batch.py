"""Batch inference throughput: the ``local`` and ``ray`` engines on the same real catalogue photos, same machine.

For tag prediction (a tagger on EfficientNet-Lite0 features) and embedding (the untrained ImageNet embedder), each
engine runs ``--images`` real Fashion Product Images from scratch into a fresh shard folder (decode and resize
included, model loading included, no feature cache). Ray runs on a local in-process instance of ``--cpus`` CPUs
started once beforehand (its start-up time is reported apart). The per-core rates of the two stages, decode/resize
and model forward, are measured alone on one core, and the cluster paragraph argues the scaling from them.

    OMP_NUM_THREADS=1 python benchmarks/bench_batch.py --data ../shared/data --images 512
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from fashionlens.data.readers import read_fashion_product_images
from fashionlens.data.records import BBOX_COLUMNS, Manifest
from fashionlens.data.transforms import eval_transform
from fashionlens.inference import Engine, LocalEngine, ModelSpec, ShardPlan, read_arrays, run_job
from fashionlens.inference.ray_engine import RayEngine, decode_images, import_ray
from fashionlens.models.heads import TaggingHead
from fashionlens.runtime import compiled
from fashionlens.tasks.labels import LabelSpace
from fashionlens.tasks.tagging import Tagger, TaggingConfig

RESULTS = Path(__file__).parent / "results" / "batch.md"


def _tagger(directory: Path) -> Path:
    """A tagger with 10 tags and a 4-class head (random weights: throughput does not depend on them)."""
    torch.manual_seed(0)
    labels = LabelSpace(tags=[f"tag{i}" for i in range(10)], heads={"colour": ["a", "b", "c", "d"]})
    Tagger(TaggingConfig(), labels, TaggingHead(1280, 10, {"colour": 4}), np.full(10, 0.5, np.float32)).save(directory)
    return directory


def _rows(manifest: Manifest, n: int) -> pd.DataFrame:
    rows = manifest.frame.iloc[:n][["path", *BBOX_COLUMNS]].reset_index(drop=True)
    rows.insert(0, "row", np.arange(len(rows)))
    return rows


def _decode_rate(manifest: Manifest, preprocess: Any) -> float:
    """Images/s of the Ray engine's decode task (load, crop, resize to uint8) on one thread."""
    start = time.perf_counter()
    decode_images(_rows(manifest, len(manifest)), preprocess)
    return len(manifest) / (time.perf_counter() - start)


def _stage_rates(manifest: Manifest, spec: ModelSpec, n: int) -> tuple[float, float]:
    """Images/s of decode+resize and of the model forward (backbone + head), each alone on one thread."""
    model = spec.load()
    start = time.perf_counter()
    batch = decode_images(_rows(manifest, n), model.preprocess)
    decode_rate = n / (time.perf_counter() - start)
    _, finish = eval_transform(model.preprocess, separate=True)
    images = finish(torch.from_numpy(batch["image"]))
    start = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, n, 32):
            model.outputs(model.backbone(images[i:i + 32]).numpy())
    return decode_rate, n / (time.perf_counter() - start)


def _write_rate(rows: int = 4096, dim: int = 1280) -> float:
    """Rows/s the driver writes embedding shards at (assembling arrays + parquet, atomically)."""
    folder = Path(tempfile.mkdtemp(prefix="bench-batch-write-"))
    try:
        plan = ShardPlan(folder, {"rows": rows, "shard_size": rows})
        vectors = np.random.default_rng(0).normal(size=(rows, dim)).astype(np.float32)
        paths = np.array([f"/catalogue/{i:07d}.jpg" for i in range(rows)])
        start = time.perf_counter()
        plan.write(0, np.arange(rows)[::-1], paths, np.ones(rows, bool), {"embedding": vectors})
        return rows / (time.perf_counter() - start)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


EAGER, TORCH, LOCAL, RAY = ("local, PyTorch eager (before)", "local, --runtime torch", "local, --runtime auto",
                             "ray, --runtime auto")
RUNS = ((EAGER, "local", "torch"), (TORCH, "local", "torch"), (LOCAL, "local", "auto"), (RAY, "ray", "auto"))
"""(row name, engine, runtime): the engines and runtimes compared, in the order they run."""


@contextmanager
def _channels_last(on: bool) -> Iterator[None]:
    """The ``torch`` runtime's CPU memory format for this block (off: the eager NCHW pipeline of before)."""
    saved = compiled.CHANNELS_LAST_ON_CPU
    compiled.CHANNELS_LAST_ON_CPU = on
    try:
        yield
    finally:
        compiled.CHANNELS_LAST_ON_CPU = saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--shard-size", type=int, default=128)
    parser.add_argument("--cpus", type=int, default=os.cpu_count() or 2, help="CPUs of the local Ray instance.")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    products = read_fashion_product_images(args.data / "fashion-product-images")
    manifest = Manifest(products.frame.iloc[:args.images].reset_index(drop=True), name=f"bench-{args.images}")
    work = Path(tempfile.mkdtemp(prefix="bench-batch-"))
    load_before = os.getloadavg()
    try:
        specs = {"tag predict": ModelSpec("tag", str(_tagger(work / "tagger"))), "embed (index build)":
                 ModelSpec("embed")}
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        decode_rate, model_rates = 0.0, {}
        for task, spec in specs.items():
            decode_rate, model_rates[task] = _stage_rates(manifest, spec, min(64, args.images))
        specs_preprocess = specs["embed (index build)"].load().preprocess
        torch.set_num_threads(threads)

        ray = import_ray()
        start = time.perf_counter()
        ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
        ray_start = time.perf_counter() - start
        engine = RayEngine()
        actors, _ = engine.actor_pool(ray)
        rows = []
        for task, spec in specs.items():
            results = {}
            for name, engine_name, runtime in RUNS:
                folder = work / f"{name}-{spec.task}".replace(" ", "_").replace(",", "")
                runner: Engine = engine if engine_name == "ray" else LocalEngine()
                with _channels_last(name != EAGER):
                    result = run_job(manifest, dataclasses.replace(spec, runtime=runtime), folder, runner,
                                     args.shard_size, show_progress=False)
                results[name] = read_arrays(folder).columns
                rate = args.images / result.seconds
                rows.append({"task": task, "engine": name, "images": args.images, "seconds": result.seconds,
                             "images/s": rate, "images/s per core": rate / args.cpus})
                print(rows[-1], file=sys.stderr)
            for name, columns in results.items():
                for column, values in columns.items():
                    if values.dtype != bool:
                        difference = float(np.nanmax(np.abs(values - results[EAGER][column])))
                        assert difference < 1e-4, f"{task} {column}: {name} differs from {EAGER} by {difference}"
        ray.shutdown()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    load_after = os.getloadavg()
    jpeg_kb = float(np.mean([os.path.getsize(p) for p in manifest.frame["path"]])) / 1000
    hires = read_fashion_product_images(args.data / "fashion-product-images-hires")
    hires_rate = _decode_rate(hires, specs_preprocess)
    _write(args, rows, ray_start, actors, decode_rate, model_rates, load_before, load_after, jpeg_kb,
           _write_rate(), hires_rate, len(hires))


def _local_remark(rows: list[dict[str, object]], cpus: int) -> str:
    """What the single-machine comparison says (written from the measurement, whichever way it went)."""
    rate = {(r["engine"], r["task"]): float(r["images/s"]) for r in rows}  # type: ignore[arg-type]
    ratio = rate[(RAY, "embed (index build)")] / rate[(LOCAL, "embed (index build)")]
    return (f"A single {cpus}-core machine cannot show the scaling: both engines run the model on one core while "
            f"the other decodes, so Ray can only add its own costs -- starting the actor (a process that imports "
            f"torch and loads the model) and its extra processes (raylet, object store, decode workers) competing "
            f"for the {cpus} cores; here it ran at {ratio:.2f}x the local engine. On one small machine use the "
            f"local engine.")


def _write(args: argparse.Namespace, rows: list[dict[str, object]], ray_start: float, actors: int,
           decode_rate: float, model_rates: dict[str, float], load_before: tuple[float, ...],
           load_after: tuple[float, ...], jpeg_kb: float, write_rate: float, hires_rate: float,
           hires_count: int) -> None:
    table = pd.DataFrame(rows)
    by = {(r["task"], r["engine"]): float(r["images/s"]) for r in rows}  # type: ignore[arg-type]
    tag_model, embed_model = model_rates["tag predict"], model_rates["embed (index build)"]
    per_image_cpu = 1 / decode_rate + 1 / embed_model  # CPU-seconds per image, decode + forward
    core_rate = 1 / per_image_cpu
    low_rate = by[("embed (index build)", RAY)] / args.cpus
    lines = [
        f"Command: `OMP_NUM_THREADS=1 python benchmarks/bench_batch.py --data {args.data} --images {args.images}`  ",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, no GPU, Python {platform.python_version()}, "
        f"torch {torch.__version__}; Ray local instance of {args.cpus} CPUs ({actors} model actor(s) of 1 CPU, "
        f"decode tasks on the rest), started in {ray_start:.1f} s (not counted below).  ",
        f"Load average (1/5/15 min) before: {' / '.join(f'{v:.2f}' for v in load_before)}; "
        f"after: {' / '.join(f'{v:.2f}' for v in load_after)}. The 2 cores are shared with other jobs, so "
        f"absolute rates move with their load (the one-core model rate below read 12 and 21 images/s in two runs "
        f"of this benchmark); compare rows of one run.",
        "",
        f"{args.images} real Fashion Product Images (224 px JPEGs), EfficientNet-Lite0, shards of "
        f"{args.shard_size}, each run from scratch into a fresh shard folder (model loading, decode and resize "
        f"included; no feature cache). Both engines' outputs were checked equal (max difference < 1e-4) in the run.",
        "",
        "| task | engine | images | seconds | images/s | images/s per core |",
        "|---|---|---|---|---|---|",
    ]
    for row in table.itertuples(index=False):
        lines.append(f"| {row[0]} | {row[1]} | {row[2]} | {row[3]:.1f} | {row[4]:.1f} | {row[5]:.1f} |")
    lines += [
        "",
        f"Local engine, `--runtime auto` / PyTorch eager as before: "
        f"**{by[('tag predict', LOCAL)] / by[('tag predict', EAGER)]:.2f}x** (tag predict), "
        f"**{by[('embed (index build)', LOCAL)] / by[('embed (index build)', EAGER)]:.2f}x** (embed) "
        f"(target >= 1.7x); `--runtime auto` / `--runtime torch` (channels-last): "
        f"{by[('tag predict', LOCAL)] / by[('tag predict', TORCH)]:.2f}x, "
        f"{by[('embed (index build)', LOCAL)] / by[('embed (index build)', TORCH)]:.2f}x.",
        "",
        f"Ray / local (both `auto`): **{by[('tag predict', RAY)] / by[('tag predict', LOCAL)]:.2f}x** (tag predict), "
        f"**{by[('embed (index build)', RAY)] / by[('embed (index build)', LOCAL)]:.2f}x** (embed).",
        "",
        "Per-core rates of the two stages, each measured alone on one thread (64 images):",
        "",
        "| stage | images/s on one core |",
        "|---|---|",
        f"| decode + resize (load_image, 224 px JPEG → uint8 224x224) | {decode_rate:.0f} |",
        f"| model: backbone + tagging head | {tag_model:.1f} |",
        f"| model: backbone + embedding (untrained baseline) | {embed_model:.1f} |",
        "",
        f"So one image costs about {1000 / decode_rate:.1f} ms of CPU to decode and {1000 / embed_model:.0f} ms to "
        f"run on a CPU core: a fully busy core does ~{core_rate:.1f} images/s end to end, and decode is "
        f"{100 * (1 / decode_rate) / per_image_cpu:.0f} % of the work.",
        "",
        "## Running on a Ray cluster",
        "",
        "Start Ray on every node (`ray start --head` on one, `ray start --address=HEAD:6379` on the others), install "
        "`fashionlens[ray]` (same version) on all of them, and run the command on the head node (or any node) with "
        "`--engine ray --ray-address auto` (or `RAY_ADDRESS=...`; `ray://HEAD:10001` from outside the cluster):",
        "",
        "    fashionlens index build -m /shared/catalogue.parquet -o /shared/index --engine ray \\",
        "        --ray-address auto --shards /shared/catalogue.shards --shard-size 4096",
        "",
        "What to set:",
        "",
        "- **Storage.** The manifest's image paths are opened by the decode tasks on whichever node they run, so "
        "they must resolve to the same files on every node (an NFS/Lustre mount or a FUSE-mounted bucket, same mount "
        "point everywhere). The shard folder is written only by the driver (the process running the command), so it "
        "only needs to be on the driver's disk -- put it on shared storage anyway if the job may be resumed from "
        "another machine.",
        "- **Actors and GPUs.** `--actors N` sets the model actor pool; by default it is one actor per GPU with "
        "`num_gpus=1` each when the cluster has GPUs, else one actor of one CPU per CPU, less an eighth of them "
        "(at least one) left to the decode tasks "
        "(`RayEngine(gpus_per_actor=..., cpus_per_actor=...)` in Python changes the shares; fractional GPUs, e.g. "
        "0.5, put two actors on one GPU). Every actor loads the model once.",
        "- **Shard size.** A shard is the unit of resumption and of the driver's writes: 1-4k images per "
        "shard keeps the number of files (and the resume check, one small read per shard) low at 10^6 images "
        "(250-1000 shards) while losing at most a few thousand images of work to a crash. The shard size is part "
        "of the job: change it only with a new `--shards` folder.",
        "",
        "How shards are placed: the driver makes one Ray block per pending shard (row index, path, box); Ray Data "
        "streams the blocks through decode tasks, spread over the cluster's free CPUs, into the actor pool, with "
        "backpressure bounding what is in flight. Results (a few KB per image: a 1280-d float32 embedding is 5 KB) "
        "flow back to the driver, which writes a shard atomically the moment its last row arrives. No node owns a "
        "shard, so a lost node only costs its in-flight batches (Ray retries them), and a rerun skips every shard "
        "already written.",
        "",
        f"Expected scaling, from the rates measured here: on CPUs an image costs ~{1000 * per_image_cpu:.0f} ms "
        f"of one core, so a cluster of C busy cores embeds about {core_rate:.1f} x C images/s; the whole Ray job "
        f"above, start-up included and one of its two cores mostly idle in decode, got {low_rate:.1f} per core, "
        f"a floor. On 64 cores that is {low_rate * 64:.0f}-{core_rate * 64:.0f} images/s, 10^6 images in "
        f"{1e6 / (core_rate * 64) / 60:.0f}-{1e6 / (low_rate * 64) / 60:.0f} minutes, growing linearly with the "
        f"cores (no stage is shared but the driver's writes) as long as the network delivers the images (these "
        f"224 px JPEGs average {jpeg_kb:.0f} KB, so 100 MB/s feeds {100e3 / jpeg_kb:,.0f} images/s) and the "
        f"driver keeps up: writing 1280-d embedding shards ran at {write_rate:,.0f} rows/s on one core here, far "
        f"above what the actors produce. "
        f"{_local_remark(rows, args.cpus)} With GPU actors the model stops being the bottleneck and decode becomes "
        f"it: a decode core handles ~{decode_rate:.0f} images/s of 224 px JPEGs but only ~{hires_rate:.0f} of the "
        f"1800x2400 originals (measured on the {hires_count} hires photos), so a GPU that runs EfficientNet-Lite0 "
        f"at, say, 3000 images/s (an assumption, not measured here) needs ~{max(1, round(3000 / decode_rate))} "
        f"decode core(s) on a resized catalogue but ~{3000 / hires_rate:.0f} on originals: give GPU nodes CPUs "
        f"accordingly, or resize the catalogue once beforehand.",
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines), encoding="utf-8")
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
