"""CPU throughput of the exported ONNX graphs (onnxruntime) against the same PyTorch modules, tagger and embedder.

Both runtimes get the same preprocessed batches of real catalogue photos (decoding and resizing are left out: they
are the same code either way), at the default thread count and at 1 and 2 threads. Each repeat times PyTorch and
onnxruntime back to back, so load from other processes on a shared machine hits both alike; the ratio is from
this one run. The heads are the default shapes (tagger: FC(1024) on 23 Clothing Attributes tags + 3 heads; embedder:
linear projection to 256, L2-normalised) with random weights, which do not change the amount of work.

    python benchmarks/bench_export.py --data ../shared/data --images 128 --repeats 3
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from fashionlens.data.readers import read_clothing_attributes, read_fashion_product_images
from fashionlens.export import OnnxModel, export_onnx
from fashionlens.models import create_backbone
from fashionlens.models.embedding import EmbeddingHead
from fashionlens.models.heads import TaggingHead
from fashionlens.tasks.labels import LabelSpace
from fashionlens.tasks.retrieval import Embedder, RetrievalConfig
from fashionlens.tasks.tagging import Tagger, TaggingConfig


def build_models(folder: Path, data: Path, backbone_name: str) -> dict[str, tuple[Path, torch.nn.Module]]:
    """Save a tagger and an embedder, export both, and return each one's ONNX file and PyTorch graph."""
    backbone = create_backbone(backbone_name, freeze="all").eval()
    torch.manual_seed(0)
    clothing = read_clothing_attributes(data / "clothing-attributes")
    labels = LabelSpace.from_manifest(clothing)
    config = TaggingConfig()
    config.backbone.name = backbone_name
    head = TaggingHead(backbone.num_features, len(labels.tags), {h: len(c) for h, c in labels.heads.items()},
                       config.hidden, config.dropout)
    Tagger(config, labels, head, np.full(len(labels.tags), 0.5)).save(folder / "tagger")
    retrieval = RetrievalConfig()
    retrieval.backbone.name = backbone_name
    embedding_head = EmbeddingHead(backbone.num_features, retrieval.dim, retrieval.hidden, retrieval.normalize)
    Embedder(retrieval, embedding_head, backbone.weights_id).save(folder / "embedder")
    tagger_graph = Tagger.load(folder / "tagger").inference_graph()
    embedder_graph = Embedder.load(folder / "embedder").inference_graph()
    export_onnx(folder / "tagger", folder / "tagger.onnx")
    export_onnx(folder / "embedder", folder / "embedder.onnx")
    return {"tagger": (folder / "tagger.onnx", tagger_graph), "embedder": (folder / "embedder.onnx", embedder_graph)}


def timed(run: Callable[[np.ndarray], object], batches: list[np.ndarray]) -> float:
    """Seconds to run every batch once."""
    start = time.perf_counter()
    for batch in batches:
        run(batch)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/export.md"))
    args = parser.parse_args()
    load_before = os.getloadavg()
    default_threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory() as tmp:
        models = build_models(Path(tmp), args.data, args.backbone)
        runner = OnnxModel(models["tagger"][0])
        paths = read_fashion_product_images(args.data / "fashion-product-images").frame["path"].tolist()
        pixels = runner.preprocess_images([runner.load(p) for p in paths[:args.images]])
        batches = [pixels[i:i + args.batch_size] for i in range(0, len(pixels), args.batch_size)]
        rows, differences = [], {}
        for threads in dict.fromkeys([default_threads, 1, 2]):
            torch.set_num_threads(threads)
            for kind, (onnx_path, graph) in models.items():
                options = ort.SessionOptions()
                options.intra_op_num_threads = threads
                session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])

                def run_ort(batch: np.ndarray, session: ort.InferenceSession = session) -> list[np.ndarray]:
                    return [np.asarray(output) for output in session.run(None, {"images": batch})]

                def run_torch(batch: np.ndarray, graph: torch.nn.Module = graph) -> list[np.ndarray]:
                    with torch.inference_mode():
                        outputs = graph(torch.from_numpy(batch))
                    return [t.numpy() for t in (outputs if isinstance(outputs, tuple) else (outputs,))]

                first_ort, first_torch = run_ort(batches[0]), run_torch(batches[0])  # warm-up, and agreement
                run_ort(batches[0]), run_torch(batches[0])  # second warm-up: kernels for this shape are now built
                differences[kind] = max(float(np.abs(o - t).max()) for o, t in zip(first_ort, first_torch, strict=True))
                torch_times, ort_times = [], []
                for repeat in range(args.repeats):  # alternate which runtime goes first, against drifting load
                    for name in ("torch", "ort") if repeat % 2 == 0 else ("ort", "torch"):
                        if name == "torch":
                            torch_times.append(timed(run_torch, batches))
                        else:
                            ort_times.append(timed(run_ort, batches))
                torch_rate = len(pixels) / statistics.median(torch_times)
                ort_rate = len(pixels) / statistics.median(ort_times)
                label = f"{threads} (default)" if threads == default_threads else str(threads)
                rows.append(f"| {kind} | {label} | {torch_rate:.1f} | {ort_rate:.1f} | {ort_rate / torch_rate:.2f}x |")
                print(rows[-1], flush=True)
    load_after = os.getloadavg()
    table = ["| model | threads | PyTorch images/s | onnxruntime images/s | onnxruntime / PyTorch |",
             "|---|---|---|---|---|", *rows]
    command = (f"python benchmarks/bench_export.py --data {args.data} --images {args.images} "
               f"--batch-size {args.batch_size} --repeats {args.repeats}")
    text = (
        f"Command: `{command}`  \n"
        f"Machine: {platform.platform()}, {platform.machine()}, {os.cpu_count()} cores, no GPU; torch "
        f"{torch.__version__}, onnxruntime {ort.__version__}; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, "
        f"default torch threads {default_threads}.  \n"
        f"Load average (1/5/15 min) before: {' / '.join(f'{v:.2f}' for v in load_before)}, after: "
        f"{' / '.join(f'{v:.2f}' for v in load_after)} (shared machine: other processes compete for the cores).\n\n"
        f"{args.backbone}, {len(pixels)} real catalogue photos preprocessed once, batches of {args.batch_size}, "
        f"median of {args.repeats} repeats (alternating which runtime goes first); "
        f"forward only (no decoding). Both runtimes compute the exported graph "
        f"(backbone + head + sigmoid/softmax or L2 norm).\n\n" + "\n".join(table) +
        f"\n\nMax |onnxruntime - PyTorch| on the first batch: tagger {differences['tagger']:.2g}, "
        f"embedder {differences['embedder']:.2g}.\n"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
