"""Feature-extraction throughput: the full pipeline (decode, resize, DataLoader workers, forward) against the bare
timm forward on the same, already-decoded batches, measured in one run on the same images; and decoding the
full-size catalogue originals (1800x2400 JPEGs) with JPEG draft mode against a full decode + shrink.

    python benchmarks/bench_features.py --data ../shared/data --images 1024
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fashionlens.data.images import decode_image, load_image
from fashionlens.data.readers import read_fashion_product_images
from fashionlens.data.transforms import eval_transform
from fashionlens.features import extract_features
from fashionlens.models import create_backbone


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--images", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/features.md"))
    args = parser.parse_args()
    manifest = read_fashion_product_images(args.data / "fashion-product-images")
    manifest = manifest.subset(np.arange(len(manifest)) < args.images)
    backbone = create_backbone(args.backbone).eval()
    transform = eval_transform(backbone.preprocess)
    images = torch.stack([transform(load_image(p)) for p in manifest.frame["path"]])
    batches = list(images.split(args.batch_size))
    with torch.inference_mode():
        backbone(batches[0])  # warm-up
        start = time.perf_counter()
        for batch in batches:
            backbone(batch)
        bare = time.perf_counter() - start
    pipeline = extract_features(manifest, backbone, cache_dir=None, batch_size=args.batch_size, show_progress=False)
    bare_rate, pipe_rate = len(manifest) / bare, pipeline.images_per_second
    rows = [
        "| path | images | seconds | images/s |", "|---|---|---|---|",
        f"| bare timm forward (pre-decoded tensors) | {len(manifest)} | {bare:.1f} | {bare_rate:.1f} |",
        f"| fashionlens pipeline (decode + resize + workers + forward) | {len(manifest)} | {pipeline.seconds:.1f} "
        f"| {pipe_rate:.1f} |",
    ]
    originals = sorted((args.data / "fashion-product-images-hires" / "images").glob("*.jpg"))
    text = (f"Command: `python benchmarks/bench_features.py --data {args.data} --images {args.images}`  \n"
            f"Machine: {platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, "
            f"{args.backbone}, batch {args.batch_size}, no GPU.\n\n" + "\n".join(rows) +
            f"\n\nPipeline / bare forward = **{pipe_rate / bare_rate:.2f}x** (target >= 0.9x).\n\n"
            f"Decoding the {len(originals)} full-size originals of `fashion-product-images-hires` (one process, median "
            f"of 3 passes; the pipeline asks for 1024 px, the service thumbnails for 256 px):\n\n"
            + "\n".join(decode_rows(originals, repeats=3)) + "\n")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
