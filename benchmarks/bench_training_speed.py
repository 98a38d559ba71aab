"""Fine-tuning epochs on the CPU, default memory format vs channels-last, side by side in one run (issue 12).

Each task's own training entry point in ``finetune`` mode (backbone and head end to end on augmented images) on a
bounded subset of the real data, ``train.channels_last`` false vs true:

* tagging: ``train_tagger`` on Clothing Attributes (config ``tagging_clothing_attributes_finetune``);
* hierarchy: ``train_hierarchy`` on Fashion Product Images (config ``hierarchy_fashion_products``, HMCN-F + MTL);
* retrieval: ``train_embedder`` triplet fine-tune for similar items on Fashion Product Images
  (config ``retrieval_triplet``, identity ``articleType``).

The two formats alternate (which goes first flips every repeat) so that load from other processes hits both alike.
An epoch is timed inside :meth:`fashionlens.engine.Trainer.train_epoch` (data loading, forward, backward, optimiser
step; validation, setup and threshold selection excluded) and its images are counted from the batches the task's
loss receives. Both formats start from the same seed, so their train losses differ by floating-point rounding only.

    OMP_NUM_THREADS=2 python benchmarks/bench_training_speed.py --data ../shared/data
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from rich.console import Console

from fashionlens.config import SHIPPED_CONFIGS, load_config
from fashionlens.data.readers import read_clothing_attributes, read_fashion_product_images
from fashionlens.data.records import Manifest
from fashionlens.data.splits import split_manifest
from fashionlens.engine import Trainer
from fashionlens.io import write_text
from fashionlens.reports import markdown
from fashionlens.tasks.hierarchy import HierarchyConfig, train_hierarchy
from fashionlens.tasks.retrieval import RetrievalConfig, train_embedder
from fashionlens.tasks.tagging import TaggingConfig, train_tagger

ROOT = Path(__file__).resolve().parents[1]
QUIET = Console(quiet=True)
FORMATS = {"default": False, "channels-last": True}


@dataclass
class _Epochs:
    """What the timed epochs of one training run measured."""

    seconds: list[float] = field(default_factory=list)
    images: list[int] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)


@contextlib.contextmanager
def _timed_epochs() -> Iterator[_Epochs]:
    """Time every :meth:`Trainer.train_epoch` run inside the block, counting the images its batches carry."""
    original = Trainer.train_epoch
    record = _Epochs()

    def timed(self: Trainer, loader: Any, progress: Any, epoch: int) -> float:
        loss_fn, images = self.loss_fn, [0]

        def counting(model: torch.nn.Module, batch: Any, device: torch.device) -> torch.Tensor:
            images[0] += len(batch[0])  # every task's batch starts with its image tensor
            return loss_fn(model, batch, device)

        self.loss_fn = counting
        try:
            start = time.perf_counter()
            loss = original(self, loader, progress, epoch)
            record.seconds.append(time.perf_counter() - start)
        finally:
            self.loss_fn = loss_fn
        record.images.append(images[0])
        record.losses.append(loss)
        return loss

    Trainer.train_epoch = timed  # type: ignore[method-assign]
    try:
        yield record
    finally:
        Trainer.train_epoch = original  # type: ignore[method-assign]


def _bounded(manifest: Manifest, stratify: str, n_train: int, n_val: int) -> Manifest:
    """The seeded 70/15/15 split of the whole manifest, cut to ``n_train`` train and ``n_val`` val rows."""
    manifest = split_manifest(manifest, (0.7, 0.15, 0.15), seed=0, stratify=stratify)
    split = manifest.frame["split"].to_numpy()
    rng = np.random.default_rng(0)
    keep = np.zeros(len(manifest), dtype=bool)
    for name, count in (("train", n_train), ("val", n_val)):
        keep[rng.choice(np.flatnonzero(split == name), size=count, replace=False)] = True
    manifest = manifest.subset(keep)
    for path in manifest.frame["path"]:  # into the page cache: the format that runs first must not pay the disk
        Path(path).read_bytes()
    return manifest


def _tasks(data: Path, n_train: int, n_val: int, epochs: int, batch_size: int, workers: int
           ) -> dict[str, Callable[[bool], object]]:
    """Each task's fine-tune as a function of the channels-last setting."""
    train = {"train.epochs": epochs, "train.batch_size": batch_size, "train.device": "cpu",
             "train.early_stop_patience": None, "train.seed": 0, "backbone.num_workers": workers}
    clothing = _bounded(read_clothing_attributes(data / "clothing-attributes"), "category", n_train, n_val)
    products = _bounded(read_fashion_product_images(data / "fashion-product-images"), "articleType", n_train, n_val)

    def tagging(channels_last: bool) -> object:
        config = load_config(TaggingConfig, SHIPPED_CONFIGS / "tagging_clothing_attributes_finetune.yaml",
                             {**train, "train.channels_last": channels_last})
        return train_tagger(clothing, config, console=QUIET, show_progress=False)

    def hierarchy(channels_last: bool) -> object:
        config = load_config(HierarchyConfig, SHIPPED_CONFIGS / "hierarchy_fashion_products.yaml",
                             {**train, "mode": "finetune", "train.scheduler": "cosine", "train.lr": 5e-4,
                              "train.channels_last": channels_last})
        return train_hierarchy(products, config, console=QUIET, show_progress=False)

    def retrieval(channels_last: bool) -> object:
        # batch_size counts (anchor, positive) pairs, each with its negatives: ~batch_size * 6 images a batch
        config = load_config(RetrievalConfig, SHIPPED_CONFIGS / "retrieval_triplet.yaml",
                             {**train, "mode": "finetune", "identity": "articleType",
                              "categories": ["subCategory", "masterCategory"], "train.batch_size": 8,
                              "max_pairs": n_train // 6, "train.channels_last": channels_last})
        return train_embedder(products, config, console=QUIET, show_progress=False)

    return {"tagging (Clothing Attributes)": tagging, "hierarchy (Fashion Product Images)": hierarchy,
            "retrieval triplets (Fashion Product Images)": retrieval}


def _mean_std(values: list[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.2f} ± {spread:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "training_speed.md")
    parser.add_argument("--train-images", type=int, default=128)
    parser.add_argument("--val-images", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--workers", type=int, default=1, help="Data-loading worker processes.")
    parser.add_argument("--tasks", nargs="*", help="Only the tasks whose name starts with one of these.")
    args = parser.parse_args()
    console = Console(stderr=True)
    tasks = _tasks(args.data, args.train_images, args.val_images, args.epochs, args.batch_size, args.workers)
    if args.tasks:
        tasks = {name: run for name, run in tasks.items() if any(name.startswith(t) for t in args.tasks)}
    loads = [os.getloadavg()[0]]
    records: dict[tuple[str, str], list[_Epochs]] = {}
    start = time.perf_counter()
    for repeat in range(args.repeats):
        order = list(FORMATS) if repeat % 2 == 0 else list(FORMATS)[::-1]
        for name, run in tasks.items():
            for fmt in order:
                with _timed_epochs() as record:
                    run(FORMATS[fmt])
                records.setdefault((name, fmt), []).append(record)
                loads.append(os.getloadavg()[0])
                console.print(f"repeat {repeat + 1}/{args.repeats} {name} {fmt}: "
                              f"{[f'{s:.1f}' for s in record.seconds]} s/epoch, losses "
                              f"{[f'{v:.5f}' for v in record.losses]}, load {loads[-1]:.1f}")
        # after every repeat, so that an interrupted run still leaves its figures
        report = _report(args, list(tasks), records, repeat + 1, loads, (time.perf_counter() - start) / 60)
        write_text(args.out, report)
    console.print(report)


def _report(args: argparse.Namespace, tasks: list[str], records: dict[tuple[str, str], list[_Epochs]], done: int,
            loads: list[float], minutes: float) -> str:
    """The markdown section from the ``done`` repeats recorded so far."""
    rows, ratios = [], {}
    for name in tasks:
        seconds = {fmt: [s for r in records[(name, fmt)] for s in r.seconds] for fmt in FORMATS}
        rates = {fmt: [i / s for r in records[(name, fmt)] for i, s in zip(r.images, r.seconds, strict=True)]
                 for fmt in FORMATS}
        losses = {fmt: records[(name, fmt)][0].losses for fmt in FORMATS}  # per epoch, first repeat
        pairs = zip(records[(name, "default")], records[(name, "channels-last")], strict=True)
        gap = max(abs(a - b) for one, other in pairs for a, b in zip(one.losses, other.losses, strict=True))
        ratios[name] = statistics.mean(seconds["default"]) / statistics.mean(seconds["channels-last"])
        paired = statistics.median(d / c for d, c in zip(seconds["default"], seconds["channels-last"], strict=True))
        rows.append({"task": name, "images/epoch": str(records[(name, "default")][0].images[0]),
                     "s/epoch default": _mean_std(seconds["default"]),
                     "s/epoch channels-last": _mean_std(seconds["channels-last"]),
                     "img/s default": _mean_std(rates["default"]),
                     "img/s channels-last": _mean_std(rates["channels-last"]),
                     "speed-up": f"{ratios[name]:.2f}×", "paired speed-up": f"{paired:.2f}×",
                     "train loss per epoch, default": " / ".join(f"{v:.4f}" for v in losses["default"]),
                     "channels-last": " / ".join(f"{v:.4f}" for v in losses["channels-last"]),
                     "max loss gap": f"{gap:.1e}"})
    met = all(r >= 1.5 for r in ratios.values())
    partial = f" (interrupted after {done} of them)" if done < args.repeats else ""
    lines = [
        "# Fine-tuning speed on the CPU: default memory format vs channels-last", "",
        f"Command: `OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '')} python benchmarks/bench_training_speed.py "
        f"--train-images {args.train_images} --val-images {args.val_images} --epochs {args.epochs} "
        f"--batch-size {args.batch_size} --repeats {args.repeats} --workers {args.workers}`. "
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} thread(s), {args.workers} data-loading worker(s); 1-minute load average "
        f"{min(loads):.1f}-{max(loads):.1f} during the run (a shared machine: the absolute figures move with the "
        f"load, the ratio measured side by side is what matters); {minutes:.0f} min in all.", "",
        f"Each task's own entry point in `finetune` mode, EfficientNet-Lite0 with its first stages frozen as the "
        f"task's config sets them, on {args.train_images} train and {args.val_images} val images (seeded subsets of "
        f"the 70/15/15 split), {args.epochs} epochs, batch {args.batch_size} (retrieval: 8 pairs with their "
        f"negatives); `train.channels_last` false vs true, alternating, {args.repeats} repeats{partial}. An epoch is "
        "timed in `Trainer.train_epoch` (loading, forward, backward, step; not validation); mean ± std over every "
        "epoch of every repeat. Speed-up: ratio of the mean epoch times; paired: the median over (repeat, epoch) of "
        "default / channels-last of the two runs made back to back, less swayed by a load spike. Losses: the mean "
        "train loss of each epoch of the first repeat; the gap is the largest |default − channels-last| over all "
        "epochs and repeats (same seed, so only rounding separates them).", "",
        markdown.table(pd.DataFrame(rows)), "",
        f"Target (issue 12): fine-tuning epochs ≥ 1.5× faster channels-last for every task: "
        f"{'met' if met else 'MISSED'} (" + ", ".join(f"{n.split(' ')[0]} {r:.2f}×" for n, r in ratios.items()) + ").",
        ""]
    return "\n".join(lines)

if __name__ == "__main__":
    main()
