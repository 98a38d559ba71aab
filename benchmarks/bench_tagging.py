"""Tagging ablation on the shared data, over repeated splits: every figure is the test-split mean ± std over
``--split-seeds`` (≥ 3) seeded, stratified train/val/test splits, since 237 test photos are too few for
single-split differences of 0.01-0.03 to mean anything.

Variants on frozen, cached ImageNet features (seconds per fit):

0. a linear probe: scikit-learn ``LogisticRegression(class_weight="balanced")`` per label, decided at 0.5 -- the
   floor every learned head must clear;
1. the head with plain BCE at 0.5;
2. the street-fashion paper's loss (eq. 1, K = 2 on positives, 1 on negatives) at 0.5;
3. the default head (weighted BCE, ``thresholds.method: oof``): the shipped model is refit on train+val, so its
   flat-0.5 row and its tuned rows compare the same model;
4. the same config with ``thresholds.method: val`` (trained on train only): flat 0.5 vs the val optimum, the
   plateau centre and shrinkage towards 0.5 -- all on one model.

Variant 5 (Clothing Attributes only, ``--finetune-config``; about 13 min per split seed on 2 idle CPU cores)
fine-tunes the backbone end to end and compares flat 0.5 with the val, plateau and shrunk thresholds of that model.

    python benchmarks/bench_tagging.py --data ../shared/data --split-seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
import warnings
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from fashionlens import metrics
from fashionlens.config import load_config
from fashionlens.data.readers import read_clothing_attributes, read_fashion_product_images
from fashionlens.data.readers.clothing_attributes import PAPER_LABELS
from fashionlens.data.records import Manifest
from fashionlens.data.splits import split_manifest
from fashionlens.models.backbones import BackboneConfig
from fashionlens.reports import markdown
from fashionlens.tasks.common import frozen_features
from fashionlens.tasks.labels import LabelSpace
from fashionlens.tasks.tagging import Tagger, TaggingConfig, ThresholdConfig, train_tagger, tune_thresholds
from fashionlens.thresholds import apply_thresholds

QUIET = Console(quiet=True)
Row = dict[str, object]
SHRINK = 0.5


def linear_probe(features: np.ndarray, truth: np.ndarray, train: np.ndarray, test: np.ndarray) -> np.ndarray:
    """Test probabilities of one class-balanced logistic regression per label, fit on the ``train`` rows."""
    probs = np.full((len(test), truth.shape[1]), 0.5, dtype=np.float32)
    for j in range(truth.shape[1]):
        rows = train[~np.isnan(truth[train, j])]
        if len(np.unique(truth[rows, j])) < 2:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model = LogisticRegression(class_weight="balanced", max_iter=1000).fit(features[rows], truth[rows, j])
        probs[:, j] = model.predict_proba(features[test])[:, 1]
    return probs


def figures(variant: str, truth: np.ndarray, probs: np.ndarray, thresholds: np.ndarray | float,
            focus: list[int] | None) -> Row:
    """Test figures of ``probs`` decided at ``thresholds``."""
    decided = apply_thresholds(probs, np.broadcast_to(thresholds, probs.shape[1]))
    row: Row = {"variant": variant, "macro-F2": metrics.macro_fbeta(truth, decided, beta=2.0),
                "macro-F1": metrics.macro_fbeta(truth, decided, beta=1.0)}
    if focus:
        row["macro-F1 (20 paper labels)"] = metrics.macro_fbeta(truth[:, focus], decided[:, focus], beta=1.0)
    row["micro-F1"] = metrics.micro_fbeta(truth, decided)
    row["sample-F1"] = metrics.sample_f1(truth, decided)
    row["mAP"] = metrics.mean_average_precision(truth, probs)
    return row


def threshold_rows(name: str, tagger: Tagger, truth: np.ndarray, probs: np.ndarray, val_truth: np.ndarray | None,
                   val_probs: np.ndarray | None, focus: list[int] | None) -> list[Row]:
    """Flat 0.5 and, without validation predictions, the tagger's saved sets; with them, for F2 and F1, the val
    optimum, the plateau centre and the val optimum shrunk halfway to 0.5 (all on the same model)."""
    rows = [figures(f"{name} @ 0.5", truth, probs, 0.5, focus)]
    if val_truth is None or val_probs is None:
        for beta in sorted(tagger.threshold_sets, reverse=True):
            rows.append(figures(f"{name} @ F{beta:g} {tagger.metrics.get('threshold_method')}", truth, probs,
                                tagger.thresholds_for(beta), focus))
        return rows
    for beta in (2.0, 1.0):
        for label, options in (("val", {}), ("plateau", {"rule": "plateau"}),
                               (f"val shrunk {SHRINK:g}", {"shrink": SHRINK})):
            thresholds = tune_thresholds(val_truth, val_probs, tagger.labels, beta, **options)  # type: ignore[arg-type]
            rows.append(figures(f"{name} @ F{beta:g} {label}", truth, probs, thresholds, focus))
    return rows


def one_split(manifest: Manifest, features: np.ndarray, backbone: str, focus_names: list[str] | None,
              finetune: TaggingConfig | None, console: Console, **label_options: object) -> list[Row]:
    """Every variant's test rows on one split."""
    split = manifest.frame["split"].to_numpy()
    train, val, test = (np.flatnonzero(split == s) for s in ("train", "val", "test"))
    space = LabelSpace.from_manifest(manifest.subset(split == "train"), heads=[], **label_options)  # type: ignore[arg-type]
    truth = space.tag_targets(manifest)
    focus = [space.tags.index(f) for f in focus_names] if focus_names else None
    rows: list[Row] = []

    def timed(name: str, make: Callable[[], list[Row]]) -> None:
        start = time.perf_counter()
        made = make()
        for row in made:
            row["train s"] = time.perf_counter() - start
        rows.extend(made)
        console.print(f"  {name}: {time.perf_counter() - start:.0f} s")

    base = TaggingConfig(backbone=BackboneConfig(name=backbone), heads=[], **label_options)  # type: ignore[arg-type]

    def fit(config: TaggingConfig) -> Tagger:
        return train_tagger(manifest, config, console=QUIET, show_progress=False, features=features)

    timed("linear probe", lambda: [figures("0. linear probe (LogisticRegression balanced) @ 0.5", truth[test],
                                           linear_probe(features, truth, np.concatenate([train, val]), test),
                                           0.5, focus)])
    fixed = ThresholdConfig(method="fixed")
    timed("BCE", lambda: [figures("1. head, plain BCE @ 0.5", truth[test],
                                  fit(replace(base, loss="bce", thresholds=fixed)).predict_features(
                                      features[test]).tags, 0.5, focus)])
    timed("K=2", lambda: [figures("2. head, street-fashion eq. 1 (BCE, K = 2) @ 0.5", truth[test],
                                  fit(replace(base, loss="bce", positive_weight=2.0, thresholds=fixed))
                                  .predict_features(features[test]).tags, 0.5, focus)])

    def default_head() -> list[Row]:
        tagger = fit(base)
        return threshold_rows("3. default head (weighted BCE, refit on train+val)", tagger, truth[test],
                              tagger.predict_features(features[test]).tags, None, None, focus)

    timed("default head (oof)", default_head)

    def val_head() -> list[Row]:
        tagger = fit(replace(base, thresholds=ThresholdConfig(method="val")))
        return threshold_rows("4. weighted BCE head (train only)", tagger, truth[test],
                              tagger.predict_features(features[test]).tags, truth[val],
                              tagger.predict_features(features[val]).tags, focus)

    timed("val head", val_head)
    if finetune is not None:
        def finetuned() -> list[Row]:
            tagger = train_tagger(manifest, finetune, console=QUIET, show_progress=False)
            probs = {s: tagger.predict(manifest.split_subset(s), show_progress=False).tags for s in ("val", "test")}
            return threshold_rows(f"5. {finetune.backbone.name} fine-tuned ({finetune.train.epochs} epochs)", tagger,
                                  truth[test], probs["test"], truth[val], probs["val"], focus)

        timed("fine-tuned", finetuned)
    return rows


def summarise(per_seed: dict[int, list[Row]]) -> list[Row]:
    """Mean ± std over split seeds of each variant's figures."""
    variants = list(dict.fromkeys(str(r["variant"]) for rows in per_seed.values() for r in rows))
    table = []
    for variant in variants:
        found = [r for rows in per_seed.values() for r in rows if r["variant"] == variant]
        row: Row = {"variant": variant, "seeds": len(found)}
        for key in found[0]:
            if key == "variant":
                continue
            values = np.array([float(r[key]) for r in found])  # type: ignore[arg-type]
            row[key] = f"{values.mean():.3f} ± {values.std(ddof=1) if len(values) > 1 else 0.0:.3f}" \
                if key != "train s" else f"{values.mean():.0f}"
        table.append(row)
    return table


def target_lines(per_seed: dict[int, list[Row]], focus: bool) -> str:
    """Issue 14's targets, on the test split, as means over split seeds (with each seed's figure)."""

    def values(variant: str, key: str) -> np.ndarray:
        return np.array([float(next(r[key] for r in rows if r["variant"] == variant))  # type: ignore[arg-type]
                         for rows in per_seed.values()])

    def line(text: str, got: np.ndarray, target: float, signed: bool) -> str:
        seeds = ", ".join(f"{v:+.3f}" if signed else f"{v:.3f}" for v in got)
        mean = f"{got.mean():+.3f}" if signed else f"{got.mean():.3f}"
        return (f"- {text}: mean {mean} over {len(got)} split seeds ({seeds}); target ≥ {target:g}: "
                f"{'MET' if got.mean() >= target else 'MISSED'}")

    first = [str(r["variant"]) for r in next(iter(per_seed.values()))]
    head = next(v.split(" @ ")[0] for v in first if v.startswith("3."))
    lines = [line("default frozen head, oof F2 thresholds − flat 0.5, test macro-F2",
                  values(f"{head} @ F2 oof", "macro-F2") - values(f"{head} @ 0.5", "macro-F2"), 0.02, True)]
    finetuned = next((v.split(" @ ")[0] for v in first if v.startswith("5.")), None)
    if finetuned is not None:
        for method in ("val", "plateau", f"val shrunk {SHRINK:g}"):
            gain = values(f"{finetuned} @ F2 {method}", "macro-F2") - values(f"{finetuned} @ 0.5", "macro-F2")
            lines.append(line(f"fine-tuned model, F2 {method} thresholds − flat 0.5, test macro-F2", gain, 0.02,
                              True))
    if focus:
        key = "macro-F1 (20 paper labels)"
        probe = values(next(v for v in first if v.startswith("0.")), key)
        for decision in ("F1 oof", "0.5"):
            lines.append(line(f"default frozen head @ {decision} − linear probe @ 0.5, test {key}",
                              values(f"{head} @ {decision}", key) - probe, 0.0, True))
        if finetuned is not None:
            for method in ("plateau", "val", "0.5"):
                variant = f"{finetuned} @ {'F1 ' + method if method != '0.5' else method}"
                lines.append(line(f"fine-tuned model @ {variant.split(' @ ')[1]}, test {key}", values(variant, key),
                                  0.66, False))
    return "Targets (issue 14, test split, mean over split seeds):\n\n" + "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--split-seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--datasets", default="clothing,products", help="Which of clothing,products to run.")
    parser.add_argument("--finetune-config", type=Path,
                        default=Path("configs/tagging_clothing_attributes_finetune.yaml"),
                        help="Config of variant 5 (Clothing Attributes only).")
    parser.add_argument("--skip-finetune", action="store_true", help="Leave out variant 5 (~13 min per split seed).")
    parser.add_argument("--out-dir", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    console = Console()
    start = time.perf_counter()
    datasets = {
        "clothing": ("Clothing Attributes (23 binary attributes)",
                     lambda: read_clothing_attributes(args.data / "clothing-attributes"), "category",
                     list(PAPER_LABELS), {}),
        "products": ("Fashion Product Images attributes (gender, baseColour, season, usage as one-vs-rest tags)",
                     lambda: read_fashion_product_images(args.data / "fashion-product-images"), "articleType",
                     None, {"expand_heads": ["gender", "baseColour", "season", "usage"], "min_class_count": 5}),
    }
    for key in args.datasets.split(","):
        title, read, stratify, focus, options = datasets[key]
        console.print(f"[bold]{title}")
        full = read()
        features = frozen_features(full, BackboneConfig(name=args.backbone))
        finetune = (load_config(TaggingConfig, args.finetune_config, {"heads": []})
                    if key == "clothing" and not args.skip_finetune else None)
        per_seed: dict[int, list[Row]] = {}
        sizes = {}
        for seed in args.split_seeds:
            console.print(f"split seed {seed}")
            manifest = split_manifest(full, seed=seed, stratify=stratify)
            sizes[seed] = manifest.frame["split"].value_counts().to_dict()
            per_seed[seed] = one_split(manifest, features, args.backbone, focus, finetune, console, **options)
        command = (f"python benchmarks/bench_tagging.py --data {args.data} --backbone {args.backbone} --datasets {key} "
                   f"--split-seeds {' '.join(map(str, args.split_seeds))}"
                   f"{' --skip-finetune' if finetune is None and key == 'clothing' else ''}")
        text = (f"### {title}\n\nCommand: `{command}`  \n"
                f"Machine: {platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, "
                f"torch {torch.__version__}, no GPU; wall time {time.perf_counter() - start:.0f} s. "
                f"Splits: {sizes}. Test split only; mean ± sample std over split seeds.\n\n"
                f"{markdown.records_table(summarise(per_seed))}\n\n{target_lines(per_seed, focus is not None)}")
        out = args.out_dir / f"tagging_{key}.md"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8")
        (args.out_dir / f"tagging_{key}_rows.json").write_text(json.dumps(per_seed, indent=1), encoding="utf-8")
        console.print(text)
        console.print(f"wrote {out}")


if __name__ == "__main__":
    main()
