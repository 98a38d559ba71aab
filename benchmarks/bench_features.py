"""Feature-extraction throughput on each runtime (today's PyTorch eager NCHW, PyTorch channels-last, onnxruntime):
the full pipeline (decode, resize, DataLoader workers, forward) against the bare forward on the same, already-decoded
batches, measured side by side in one run on the same images; and decoding the
full-size catalogue originals (1800x2400 JPEGs) with JPEG draft mode against a full decode + shrink.

    python benchmarks/bench_features.py --data ../shared/data --images 1024
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fashionlens.data.images import decode_for_model, decode_image, load_image
from fashionlens.data.readers import read_clothing_attributes, read_fashion_product_images
from fashionlens.data.transforms import eval_transform
from fashionlens.features import extract_features
from fashionlens.models import create_backbone
from fashionlens.runtime import default_workers
from fashionlens.runtime.compiled import compile_backbone


def full_decode(path: Path, max_side: int) -> Image.Image:
    """Decoding without draft mode: every pixel of the original, then a shrink."""
    image = decode_image(path)
    image.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
    return image


def decode_rows(originals: list[Path], repeats: int) -> list[str]:
    """Median seconds per image of the two decoders at the sizes the pipeline asks for."""
    rows = ["| long side wanted | full decode + shrink, ms/image | draft-mode decode + shrink, ms/image | speed-up |",
            "|---|---|---|---|"]
    for max_side in (1024, 256):
        timings = {}
        for name, decode in (("full", full_decode), ("draft", lambda p, s: load_image(p, max_side=s))):
            runs = []
            for _ in range(repeats):
                start = time.perf_counter()
                for path in originals:
                    decode(path, max_side)
                runs.append((time.perf_counter() - start) / len(originals))
            timings[name] = float(np.median(runs))
        rows.append(f"| {max_side} | {timings['full'] * 1e3:.1f} | {timings['draft'] * 1e3:.1f} | "
                    f"{timings['full'] / timings['draft']:.2f}x |")
    return rows


def _bare(forward: Callable[[torch.Tensor], object], batches: list[torch.Tensor]) -> float:
    """Seconds for ``forward`` over already-decoded batches (after one warm-up batch)."""
    forward(batches[0])
    start = time.perf_counter()
    for batch in batches:
        forward(batch)
    return time.perf_counter() - start


def demo_step_rows(data: Path, backbone_name: str, batch_size: int) -> list[str]:
    """``make demo``'s feature step (both shared datasets, no cache) on each runtime, one after another."""
    manifests = [read_fashion_product_images(data / "fashion-product-images"),
                 read_clothing_attributes(data / "clothing-attributes")]
    images = sum(len(m) for m in manifests)
    settings = {"PyTorch eager (NCHW), as before": ("torch", False),
                "`--runtime torch` (channels-last)": ("torch", None),
                "`--runtime auto` (onnxruntime)": ("auto", None)}
    seconds = {}
    for name, (runtime, channels_last) in settings.items():
        backbone = create_backbone(backbone_name)
        compiled = compile_backbone(backbone, runtime, channels_last=channels_last)
        start = time.perf_counter()
        for manifest in manifests:
            extract_features(manifest, backbone, cache_dir=None, batch_size=batch_size, show_progress=False,
                             runtime=compiled)
        seconds[name] = time.perf_counter() - start
    slowest, fastest = seconds["PyTorch eager (NCHW), as before"], seconds["`--runtime auto` (onnxruntime)"]
    rows = ["| runtime | seconds | images/s | auto is faster by |", "|---|---|---|---|"]
    rows += [f"| {name} | {value:.0f} | {images / value:.1f} | {value / fastest:.2f}x |"
             for name, value in seconds.items()]
    return [f"`make demo` feature step: the {images} images of both shared datasets, no cache, each runtime in turn "
            f"(the demo runs `auto`):", "", *rows, "",
            f"auto / PyTorch eager = **{slowest / fastest:.2f}x**, auto / `--runtime torch` = "
            f"**{seconds['`--runtime torch` (channels-last)'] / fastest:.2f}x** (target >= 1.7x)."]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--images", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--skip-demo-step", action="store_true", help="Skip the full demo feature step (minutes).")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/features.md"))
    args = parser.parse_args()
    manifest = read_fashion_product_images(args.data / "fashion-product-images")
    manifest = manifest.subset(np.arange(len(manifest)) < args.images)
    backbone = create_backbone(args.backbone).eval()
    transform = eval_transform(backbone.preprocess)
    images = torch.stack([transform(decode_for_model(p).image) for p in manifest.frame["path"]])
    batches = list(images.split(args.batch_size))
    runtimes = {  # the same backbone object on three runtimes: today's PyTorch eager, channels-last, onnxruntime
        "PyTorch eager (NCHW)": compile_backbone(backbone, "torch", channels_last=False),
        "PyTorch channels-last": compile_backbone(create_backbone(args.backbone), "torch"),
        "onnxruntime": compile_backbone(backbone, "onnx"),
    }
    runtimes["onnxruntime"](batches[0])  # its one-time check against PyTorch, outside the timings
    bare: dict[str, list[float]] = {name: [] for name in runtimes}
    pipeline: dict[str, list[float]] = {name: [] for name in runtimes}
    for _ in range(args.repeats):  # interleaved, so that a change in machine load hits every row alike
        for name, compiled in runtimes.items():
            bare[name].append(len(manifest) / _bare(compiled, batches))
            result = extract_features(manifest, compiled.backbone, cache_dir=None, batch_size=args.batch_size,
                                      show_progress=False, runtime=compiled)
            pipeline[name].append(result.images_per_second)
    rows = ["| runtime | bare forward, img/s | pipeline (decode + resize + workers + forward), img/s | "
            "pipeline / bare |", "|---|---|---|---|"]
    for name in runtimes:
        b, p = np.array(bare[name]), np.array(pipeline[name])
        rows.append(f"| {name} | {b.mean():.1f} ± {b.std():.1f} | {p.mean():.1f} ± {p.std():.1f} | "
                    f"{p.mean() / b.mean():.2f}x |")
    onnx_pipe, onnx_bare = np.mean(pipeline["onnxruntime"]), np.mean(bare["onnxruntime"])
    eager_pipe = np.mean(pipeline["PyTorch eager (NCHW)"])
    originals = sorted((args.data / "fashion-product-images-hires" / "images").glob("*.jpg"))
    load = os.getloadavg()[0]
    text = (f"Command: `python benchmarks/bench_features.py --data {args.data} --images {args.images}`  \n"
            f"Machine: {platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, "
            f"{args.backbone}, batch {args.batch_size}, {default_workers()} decode worker(s), no GPU, load average "
            f"{load:.1f} at the end; mean ± std of {args.repeats} interleaved passes over the same "
            f"{len(manifest)} images.\n\n" + "\n".join(rows) +
            f"\n\nPipeline on onnxruntime (the `auto` runtime on CPU) / bare onnxruntime forward = "
            f"**{onnx_pipe / onnx_bare:.2f}x** (target >= 0.8x); / today's PyTorch-eager pipeline = "
            f"**{onnx_pipe / eager_pipe:.2f}x** (target >= 1.7x).\n\n"
            f"Decoding the {len(originals)} full-size originals of `fashion-product-images-hires` (one process, median "
            f"of 3 passes; the pipeline asks for 1024 px, the service thumbnails for 256 px):\n\n"
            + "\n".join(decode_rows(originals, repeats=3)) + "\n")
    if not args.skip_demo_step:
        text += "\n" + "\n".join(demo_step_rows(args.data, args.backbone, args.batch_size)) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
