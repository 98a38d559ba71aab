"""Run every benchmark (or only collect their results) and assemble ``docs/benchmarks.md``.

Each ``bench_*.py`` writes its own markdown section to ``benchmarks/results/<name>.md`` together with the command
that produced it and the machine it ran on; this script runs them in turn and stitches the sections together.

    python benchmarks/run_all.py --data ../shared/data            # run everything, then collect
    python benchmarks/run_all.py --collect-only                    # only rebuild docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
# (result file, title, the invocations that write it: a script and its arguments, run from the repository root)
SECTIONS: tuple[tuple[str, str, list[str]], ...] = (
    ("features", "Feature extraction throughput on each runtime (issues 2, 12)", ["bench_features.py"]),
    ("training_speed", "Fine-tuning speed: channels-last on the CPU (issue 12)", ["bench_training_speed.py"]),
    ("tagging_clothing", "Tagging ablation: Clothing Attributes (issue 14)", ["bench_tagging.py --split-seeds 0 1 2"]),
    ("tagging_clothing_finetune", "Tagging ablation: Clothing Attributes, fine-tuned backbone (issue 14)",
     ["bench_tagging.py --datasets clothing --split-seeds 0 1 2 --skip-frozen"]),
    ("tagging_products", "Tagging ablation: Fashion Product Images attributes (issue 3)", []),
    ("hierarchy", "Hierarchical classification (issue 4)", ["bench_hierarchy.py"]),
    ("hierarchy_finetune", "Hierarchical classification, backbone fine-tuned (issue 4)",
     ["bench_hierarchy_finetune.py --epochs 8"]),
    ("hierarchy_lpft", "Hierarchical classification, LP-FT: fine-tuned from the probed head (issue 4)",
     ["bench_hierarchy_finetune.py --epochs 5 --lr 0.0002 --lp-ft --run-dir runs/hierarchy_lpft/model "
      "--out benchmarks/results/hierarchy_lpft.md"]),
    ("retrieval", "Visual search: similar items and simulated street-to-shop (issue 5)",
     ["bench_retrieval.py --sections catalogue"]),
    ("retrieval_street", "Visual search on REAL street photos: street-to-shop (issue 13)",
     ["bench_retrieval.py --sections street"]),
    ("index", "Catalogue index at scale (issue 5)", ["bench_index.py"]),
    ("index_milvus", "Catalogue index on Milvus Lite vs FAISS: parity, build, latency, memory (issue 20)",
     ["bench_milvus.py"]),
    ("service", "HTTP service on each runtime (issues 6, 12)", ["bench_service.py --concurrency 1 4 16"]),
    ("distributed", "Data-parallel training with torchrun (issue 7)", ["bench_distributed.py"]),
    ("batch", "Batch inference engines and runtimes: local vs Ray, PyTorch vs onnxruntime (issues 7, 12)",
     ["bench_batch.py"]),
    ("export", "ONNX export: onnxruntime vs PyTorch (issue 7)", ["bench_export.py"]),
    ("audit", "Catalogue audit: label issues, duplicates, odd photos (issue 18)", ["bench_audit.py"]),
)


def _nested(section: str) -> str:
    """A result file's markdown with its headings moved so the shallowest is ``###``: they nest under the title."""
    lines, fenced, headings = section.splitlines(), False, []
    for number, line in enumerate(lines):
        if line.startswith("```"):
            fenced = not fenced
        elif line.startswith("#") and not fenced:
            headings.append(number)
    if not headings:
        return section
    shift = 3 - min(len(lines[n]) - len(lines[n].lstrip("#")) for n in headings)
    for number in headings:
        lines[number] = "#" * shift + lines[number] if shift >= 0 else lines[number][-shift:]
    return "\n".join(lines)


def collect(out: Path) -> None:
    """Write ``out`` from the sections present in ``benchmarks/results``."""
    parts = ["# Benchmarks", "",
             "Every figure below was produced by the script named in its section, on the machine it names; rerun "
             "with `python benchmarks/run_all.py --data ../shared/data`. Sections missing a result file were not run.",
             ""]
    for name, title, _ in SECTIONS:
        result = HERE / "results" / f"{name}.md"
        parts += [f"## {title}", "", _nested(result.read_text(encoding="utf-8").strip()) if result.is_file()
                  else "_not measured yet_", ""]
    out.write_text("\n".join(parts) + "\n", encoding="utf-8")
    print(f"wrote {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data")
    parser.add_argument("--collect-only", action="store_true")
    parser.add_argument("--out", type=Path, default=HERE.parent / "docs" / "benchmarks.md")
    args = parser.parse_args()
    if not args.collect_only:
        for _, _, scripts in SECTIONS:
            for invocation in scripts:
                script, *arguments = shlex.split(invocation)
                command = [sys.executable, str(HERE / script), *arguments]
                if script != "bench_index.py":
                    command += ["--data", args.data]
                print("+", " ".join(command), flush=True)
                subprocess.run(command, check=True)
    collect(args.out)


if __name__ == "__main__":
    main()
