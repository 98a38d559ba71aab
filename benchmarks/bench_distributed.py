"""Data-parallel fine-tuning on CPU: one process vs ``torchrun`` with two (gloo), same cores, same global batch.

Runs ``fashionlens tag train --mode finetune`` on real Fashion Product Images for one and for two epochs with each
launcher; the difference of the two wall times is the time of one epoch (start-up, feature-free validation set-up
and saving cancel out). Both launchers get the same cores: one process with all threads, or one thread per process.

    python benchmarks/bench_distributed.py --data ../shared/data --images 256
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from fashionlens.data.readers import read_fashion_product_images
from fashionlens.data.splits import split_manifest

RESULTS = Path(__file__).resolve().parent / "results" / "distributed.md"


def _run(job: Path, out: str, processes: int, epochs: int, cores: int) -> float:
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1",
                 "--nproc_per_node", str(processes)] if processes > 1 else [sys.executable])
    command = [*launcher, "-m", "fashionlens", "tag", "train", "-m", str(job / "manifest.parquet"),
               "-c", str(job / "config.yaml"), "-o", str(job / out), "--epochs", str(epochs)]
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, cores // processes)), "FASHIONLENS_CACHE": str(job / "cache")}
    start = time.perf_counter()
    subprocess.run(command, env=env, check=True, capture_output=True, text=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--images", type=int, default=256, help="Training images (about 70 %% of the subset).")
    parser.add_argument("--batch-size", type=int, default=32, help="Global batch.")
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory() as folder:
        job = Path(folder)
        products = read_fashion_product_images(args.data / "fashion-product-images")
        subset = products.subset(np.arange(len(products)) < int(args.images / 0.7))
        manifest = split_manifest(subset, seed=0)
        manifest.save(job / "manifest.parquet")
        train_rows = int((manifest.frame["split"] == "train").sum())
        config = {"mode": "finetune", "heads": ["articleType"], "min_class_count": 2,
                  "backbone": {"freeze": 2, "batch_size": 64, "num_workers": 0},
                  "train": {"batch_size": args.batch_size, "scheduler": "none", "early_stop_patience": None,
                            "monitor": "train_loss", "mode": "min", "device": "cpu", "amp": False}}
        (job / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
        rows = []
        for processes in (1, 2):
            one = _run(job, f"p{processes}-e1", processes, 1, cores)
            two = _run(job, f"p{processes}-e2", processes, 2, cores)
            epoch = two - one
            rows.append((processes, one, two, epoch, train_rows / epoch))
    load = os.getloadavg()
    lines = [
        f"Measured with `python benchmarks/bench_distributed.py --data ../shared/data --images {args.images}` on "
        f"{platform.machine()}, {cores} cores, torch {torch.__version__}, CPU only (gloo); load average "
        f"{load[0]:.1f} at the end (the machine is shared). EfficientNet-Lite0 fine-tuned (first 2 stages frozen) "
        f"with an articleType head on {train_rows} real Fashion Product Images training photos, global batch "
        f"{args.batch_size}; one epoch = wall time of a 2-epoch run minus a 1-epoch run of the same launcher.",
        "",
        "| processes | threads each | 1-epoch run s | 2-epoch run s | one epoch s | train images/s |",
        "|---|---|---|---|---|---|",
    ]
    for processes, one, two, epoch, rate in rows:
        lines.append(f"| {processes} | {max(1, cores // processes)} | {one:.1f} | {two:.1f} | {epoch:.1f} | "
                     f"{rate:.1f} |")
    speedup = rows[0][3] / rows[1][3]
    lines += ["", f"Two processes vs one on the same {cores} cores: {speedup:.2f}x the epoch speed (one run). "
              "On one CPU both launchers share the same cores, so this compares gloo data parallelism with "
              "intra-op threading (and includes the start-up of a second process), not scaling: data parallelism "
              "pays where each process has its own device (a GPU, or a machine)."]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
