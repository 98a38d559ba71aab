"""Catalogue audit on Fashion Product Images: planted label flips with known truth, the real catalogue's findings,
and whether cleaning the training labels helps HMCN-F on the untouched test split.

1. Synthetic check: flip 5 % of the train split's articleType labels (half to a confusable sibling under the same
   subCategory, half to a random other type), find label issues from out-of-fold heads + confident learning, and
   report precision@N (N = flips) and recall of the flipped rows against chance, over several flip seeds.
2. Real catalogue: the audit of all 8,080 products (three hierarchy levels, taxonomy breaks, duplicates, photos);
   the report lands in ``--audit-out`` with the top-24 grid.
3. Cleaning: label issues found on train+val only (test never looked at), then HMCN-F+MTL trained on all train rows
   vs with the flagged train+val rows removed; test top-1 over training seeds.

    OMP_NUM_THREADS=2 python benchmarks/bench_audit.py --data ../shared/data
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from rich.console import Console

from fashionlens.audit import AuditConfig, audit_catalogue, label_issue_table, write_audit
from fashionlens.config import SHIPPED_CONFIGS, load_config
from fashionlens.data.readers.fashion_product import read_fashion_product_images
from fashionlens.data.records import Manifest
from fashionlens.data.splits import split_manifest
from fashionlens.io import write_text
from fashionlens.models.backbones import BackboneConfig
from fashionlens.reports import markdown
from fashionlens.tasks.common import frozen_features
from fashionlens.tasks.hierarchy import HierarchyConfig, evaluate_hierarchy, train_hierarchy

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
CONFIG = SHIPPED_CONFIGS / "hierarchy_fashion_products.yaml"
QUIET = Console(quiet=True)


def mean_std(values: list[float]) -> str:
    return f"{np.mean(values):.3f} ± {np.std(values):.3f}" if len(values) > 1 else f"{values[0]:.3f}"


def flip_labels(articles: pd.Series, parents: pd.Series, rate: float, seed: int) -> tuple[pd.Series, np.ndarray,
                                                                                          np.ndarray]:
    """``(noisy labels, flipped rows, of which sibling flips)``: half to a sibling under the same parent."""
    rng = np.random.default_rng(seed)
    noisy = articles.copy()
    flipped = rng.choice(len(articles), int(round(rate * len(articles))), replace=False)
    types = np.array(sorted(articles.unique()))
    siblings = articles.groupby(parents).unique()
    sibling_flips = []
    for i, row in enumerate(flipped):
        given = articles.iloc[row]
        options = [t for t in siblings[parents.iloc[row]] if t != given]
        if i % 2 == 0 and options:
            noisy.iloc[row] = rng.choice(options)
            sibling_flips.append(row)
        else:
            noisy.iloc[row] = rng.choice(types[types != given])
    return noisy, flipped, np.array(sibling_flips, dtype=np.int64)


def synthetic(train: Manifest, features: np.ndarray, seeds: list[int], rate: float, console: Console
              ) -> tuple[pd.DataFrame, str]:
    rows = []
    articles = train.class_column("articleType").reset_index(drop=True)
    parents = train.class_column("subCategory").reset_index(drop=True)
    for seed in seeds:
        noisy, flipped, sibling = flip_labels(articles, parents, rate, seed)
        start = time.perf_counter()
        issues = label_issue_table("articleType", noisy, features, seed=seed, min_class_size=2)
        seconds = time.perf_counter() - start
        found = set(issues["row"].tolist())
        truth = set(flipped.tolist())
        n = len(truth)
        top_n = set(issues["row"].head(n).tolist())
        rows.append({"flip seed": seed, "train rows": len(articles), "flipped": n, "flagged": len(found),
                     "precision@N": len(top_n & truth) / n,
                     "precision (all flagged)": len(found & truth) / max(1, len(found)),
                     "recall": len(found & truth) / n,
                     "recall, sibling flips": len(found & set(sibling.tolist())) / max(1, len(sibling)),
                     "recall, random flips": len(found & (truth - set(sibling.tolist()))) / max(1, n - len(sibling)),
                     "seconds": round(seconds, 1)})
        console.print(f"synthetic seed {seed}: {rows[-1]}")
    table = pd.DataFrame(rows)
    stat = {name: mean_std(table[name].tolist()) for name in ("precision@N", "recall", "recall, sibling flips",
                                                              "recall, random flips", "precision (all flagged)")}
    summary = (f"Mean over {len(seeds)} flip seeds: precision@N {stat['precision@N']} "
               f"(chance {rate:.3f}: a random ranking's precision equals the flip rate), recall "
               f"{stat['recall']} (sibling flips {stat['recall, sibling flips']}, "
               f"random flips {stat['recall, random flips']}); precision over all flagged rows "
               f"{stat['precision (all flagged)']}. Flagged rows that were not planted include "
               f"the catalogue's own label noise, so precision is a lower bound.")
    return table, summary


def cleaning(manifest: Manifest, features: np.ndarray, seeds: list[int], console: Console) -> tuple[pd.DataFrame,
                                                                                                   str]:
    seen = manifest.frame["split"].isin(["train", "val"]).to_numpy()
    rows_seen = np.flatnonzero(seen)
    issues = label_issue_table("articleType", manifest.class_column("articleType").iloc[rows_seen]
                               .reset_index(drop=True), features[rows_seen], min_class_size=2)
    flagged = rows_seen[issues["row"].to_numpy()]
    keep = np.ones(len(manifest), dtype=bool)
    keep[flagged] = False
    cleaned = manifest.subset(keep)
    results = []
    for seed in seeds:
        config = load_config(HierarchyConfig, CONFIG, {"train.seed": seed})
        for name, data, vectors in (("all labels", manifest, features), ("flagged removed", cleaned, features[keep])):
            start = time.perf_counter()
            model = train_hierarchy(data, config, features=vectors, console=QUIET, show_progress=False)
            # test rows are identical in both: the flagged rows come from train+val only
            score = evaluate_hierarchy(model, manifest, "test", features=features)[0].summary
            results.append({"training labels": name, "seed": seed, "test top-1": score["top1"],
                            "test top-5": score["top5"], "seconds": time.perf_counter() - start})
            console.print(f"cleaning seed {seed} {name}: test top-1 {score['top1']:.4f}")
    frame = pd.DataFrame(results)
    table = frame.groupby("training labels", sort=False).agg(
        **{"test top-1": ("test top-1", lambda v: mean_std(list(v))),
           "test top-5": ("test top-5", lambda v: mean_std(list(v))),
           "train s": ("seconds", lambda v: f"{np.mean(v):.0f}")}).reset_index()
    pivot = frame.pivot(index="seed", columns="training labels", values="test top-1")
    gains = (pivot["flagged removed"] - pivot["all labels"]).tolist()
    removed = manifest.frame["split"].iloc[flagged].value_counts().to_dict()
    text = (f"{len(flagged)} train+val rows flagged ({removed}) of {len(rows_seen)}; removed before training. "
            f"Paired by training seed, flagged removed − all labels, test top-1: "
            f"{', '.join(f'{g * 100:+.1f}' for g in gains)} points (mean {np.mean(gains) * 100:+.2f}).")
    return table, text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "audit.md")
    parser.add_argument("--audit-out", type=Path, default=ROOT / "runs" / "audit",
                        help="Where the full audit report goes (its grids are copied into benchmarks/results).")
    parser.add_argument("--flip-seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--flip-rate", type=float, default=0.05)
    parser.add_argument("--train-seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--skip-cleaning", action="store_true")
    args = parser.parse_args()
    console = Console(stderr=True)

    manifest = split_manifest(read_fashion_product_images(args.data / "fashion-product-images"), (0.7, 0.15, 0.15),
                              seed=0, stratify="articleType")
    features = frozen_features(manifest, BackboneConfig(), show_progress=False)
    train_rows = np.flatnonzero(manifest.frame["split"].to_numpy() == "train")
    command = (f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '')} python benchmarks/bench_audit.py "
               f"--flip-seeds {' '.join(map(str, args.flip_seeds))} --train-seeds "
               f"{' '.join(map(str, args.train_seeds))}")
    lines = ["# Catalogue audit (Fashion Product Images)", "",
             f"Command: `{command}`. Machine: {platform.machine()}, {os.cpu_count()} CPU cores, torch "
             f"{torch.__version__}. Label heads: 5-fold logistic regression on cached frozen EfficientNet-Lite0 "
             "features; issues: cleanlab `find_label_issues`, ranked by self-confidence.", ""]

    table, summary = synthetic(manifest.subset(manifest.frame["split"] == "train"), features[train_rows],
                               args.flip_seeds, args.flip_rate, console)
    lines += [f"## Planted flips: {args.flip_rate:.0%} of the train split's articleType labels", "",
              markdown.table(table), "", summary, ""]

    start = time.perf_counter()
    audit = audit_catalogue(manifest, AuditConfig(levels=["masterCategory", "subCategory", "articleType"]),
                            console=console, show_progress=False)
    write_audit(audit, args.audit_out)
    seconds = time.perf_counter() - start
    for grid in ("label_issues", "duplicates"):  # the report's thumbnails stay out of the repository
        shutil.copy(args.audit_out / f"{grid}.png", RESULTS / f"audit_{grid}.png")
    counts = [{"check": f"label issues: {name}", "flagged": v["issues"], "labelled rows": v["labelled"]}
              for name, v in audit.summary["fields"].items()]
    counts += [{"check": "taxonomy breaks", "flagged": audit.summary["taxonomy_breaks"],
                "labelled rows": len(manifest)},
               {"check": f"near-duplicate pairs ({audit.summary['duplicate_clusters']} clusters, "
                         f"{audit.summary['exact_duplicate_pairs']} exact)",
                "flagged": audit.summary["duplicate_pairs"], "labelled rows": len(manifest)}]
    counts += [{"check": f"photos: {k}", "flagged": v, "labelled rows": len(manifest)}
               for k, v in audit.summary["photos"].items()]
    top = audit.label_issues[audit.label_issues["field"] == "articleType"].head(24)
    lines += ["## The real catalogue: all 8,080 products", "",
              f"`fashionlens audit -m fpi.parquet --levels masterCategory,subCategory,articleType -o audit/` "
              f"({seconds:.0f} s with cached features).", "", markdown.records_table(counts), "",
              "Top 24 articleType issues (the grid `benchmarks/results/audit_label_issues.png` shows the 24 most "
              "suspicious labels of any level; `audit_duplicates.png` the closest duplicate pairs):", "",
              markdown.table(top[["item_id", "given", "suggested", "quality", "suggested_probability"]]), ""]

    if not args.skip_cleaning:
        table, text = cleaning(manifest, features, args.train_seeds, console)
        lines += ["## Does cleaning the training labels help? (HMCN-F+MTL, test split untouched)", "",
                  markdown.table(table), "", text, ""]
    write_text(args.out, "\n".join(lines))
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
