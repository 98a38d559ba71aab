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
   plateau centre and shrinkage towards 0.5 -- all on one model;
4b. row 4's config and seed with ``select_epoch: per_label`` (each tag reads the head snapshot of the epoch where its
   val F2 peaked).

Variants 5 and 5b (Clothing Attributes only, ``--finetune-config``; about 13 min per split seed on 2 idle CPU
cores) fine-tune the backbone end to end, once, with ``select_epoch: per_label``, and compare flat 0.5 with the val,
plateau and shrunk thresholds of each model. Row 5 is the plain fine-tuned model (``select_epoch: best``): the
run's snapshot 0, the head of the monitor's best epoch on the shipped backbone -- bit-identical to a run without
epoch tracking (tests/tasks/test_tagging.py checks it). Row 5b reads each tag from its own best epoch's head.

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
from fashionlens.tasks.tagging import (
    EpochSelectedHead,
    Tagger,
    TaggingConfig,
    ThresholdConfig,
    train_tagger,
    tune_thresholds,
)
from fashionlens.tasks.tagging.thresholds import apply_thresholds

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
              finetune: TaggingConfig | None, frozen: bool, console: Console, **label_options: object) -> list[Row]:
    """Every variant's test rows on one split (the frozen-feature ones when ``frozen``)."""
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

    if frozen:
        frozen_rows(manifest, features, backbone, truth, train, val, test, focus, timed, **label_options)
    if finetune is not None:
        timed("fine-tuned", lambda: finetune_rows(manifest, finetune, truth, val, test, focus, console))
    return rows


def frozen_rows(manifest: Manifest, features: np.ndarray, backbone: str, truth: np.ndarray, train: np.ndarray,
                val: np.ndarray, test: np.ndarray, focus: list[int] | None,
                timed: Callable[[str, Callable[[], list[Row]]], None], **label_options: object) -> None:
    """Variants 0-4b, on cached frozen features."""
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

    def per_label_head() -> list[Row]:
        tagger = fit(replace(base, thresholds=ThresholdConfig(method="val"), select_epoch="per_label"))
        return threshold_rows("4b. weighted BCE head (train only), per-label best epoch", tagger, truth[test],
                              tagger.predict_features(features[test]).tags, truth[val],
                              tagger.predict_features(features[val]).tags, focus)

    timed("per-label epochs head", per_label_head)


def finetune_rows(manifest: Manifest, finetune: TaggingConfig, truth: np.ndarray, val: np.ndarray,
                  test: np.ndarray, focus: list[int] | None, console: Console) -> list[Row]:
    """Rows 5 (the plain fine-tuned model) and 5b (per-label best epoch), both from one fine-tuning run (its epochs
    printed to ``console``)."""
    tagger = train_tagger(manifest, replace(finetune, select_epoch="per_label"), console=console,
                          show_progress=False)
    assert isinstance(tagger.head, EpochSelectedHead)
    # the plain model: snapshot 0, the head of the monitor's best epoch (what select_epoch: best ships)
    plain = Tagger(replace(finetune, select_epoch="best"), tagger.labels, tagger.head.snapshots[0],
                   tagger.thresholds_for(finetune.beta), backbone=tagger.backbone)
    name = f"{finetune.backbone.name} fine-tuned ({finetune.train.epochs} epochs)"
    rows: list[Row] = []
    for label, model in ((f"5. {name}", plain), (f"5b. {name}, per-label best epoch", tagger)):
        probs = {s: model.predict(manifest.split_subset(s), show_progress=False).tags for s in ("val", "test")}
        rows += threshold_rows(label, model, truth[test], probs["test"], truth[val], probs["val"], focus)
    for row in rows[len(rows) // 2:]:
        row["snapshots"] = len(tagger.head.snapshots)
    return rows


def summarise(per_seed: dict[int, list[Row]]) -> list[Row]:
    """Mean ± std over split seeds of each variant's figures."""
    variants = list(dict.fromkeys(str(r["variant"]) for rows in per_seed.values() for r in rows))
    table = []
    for variant in variants:
        found = [r for rows in per_seed.values() for r in rows if r["variant"] == variant]
        row: Row = {"variant": variant, "seeds": len(found)}
        for key in found[0]:
            if key in ("variant", "snapshots"):
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
    head = next((v.split(" @ ")[0] for v in first if v.startswith("3.")), None)
    finetuned = list(dict.fromkeys(v.split(" @ ")[0] for v in first if v.startswith(("5.", "5b."))))
    key = "macro-F1 (20 paper labels)"
    lines = []
    if head is not None:
        lines.append(line("default frozen head, oof F2 thresholds − flat 0.5, test macro-F2",
                          values(f"{head} @ F2 oof", "macro-F2") - values(f"{head} @ 0.5", "macro-F2"), 0.02, True))
        if focus:
            probe = values(next(v for v in first if v.startswith("0.")), key)
            for decision in ("F1 oof", "0.5"):
                lines.append(line(f"default frozen head @ {decision} − linear probe @ 0.5, test {key}",
                                  values(f"{head} @ {decision}", key) - probe, 0.0, True))
    for model in finetuned:
        short = model.split(" ")[0] + " fine-tuned model" + (", per-label best epoch" if "per-label" in model else "")
        for method in ("plateau", "val", f"val shrunk {SHRINK:g}"):
            gain = values(f"{model} @ F2 {method}", "macro-F2") - values(f"{model} @ 0.5", "macro-F2")
            lines.append(line(f"{short}, F2 {method} thresholds − flat 0.5, test macro-F2", gain, 0.02, True))
        if focus:
            for decision in ("F1 plateau", "F1 val", "0.5"):
                lines.append(line(f"{short} @ {decision}, test {key}", values(f"{model} @ {decision}", key), 0.66,
                                  False))
    return "Targets (issue 14, test split, mean over split seeds):\n\n" + "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--split-seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--datasets", default="clothing,products", help="Which of clothing,products to run.")
    parser.add_argument("--finetune-config", type=Path,
                        default="tagging_clothing_attributes_finetune",
                        help="Config of variant 5 (Clothing Attributes only).")
    parser.add_argument("--skip-finetune", action="store_true",
                        help="Leave out variants 5/5b (one fine-tuning, ~13 min per split seed).")
    parser.add_argument("--skip-frozen", action="store_true",
                        help="Only variants 5/5b (Clothing Attributes), written to tagging_clothing_finetune.md.")
    parser.add_argument("--finetune-epochs", type=int, default=None,
                        help="Override the fine-tuning config's train.epochs (to bound the run; said in the result).")
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
        if finetune is not None and args.finetune_epochs is not None:
            finetune = replace(finetune, train=replace(finetune.train, epochs=args.finetune_epochs))
        if args.skip_frozen and finetune is None:
            continue
        per_seed: dict[int, list[Row]] = {}
        sizes = {}
        command = (f"python benchmarks/bench_tagging.py --data {args.data} --backbone {args.backbone} --datasets {key} "
                   f"--split-seeds {' '.join(map(str, args.split_seeds))}"
                   f"{' --skip-finetune' if finetune is None and key == 'clothing' else ''}"
                   f"{' --skip-frozen' if args.skip_frozen else ''}"
                   f"{f' --finetune-epochs {args.finetune_epochs}' if args.finetune_epochs is not None else ''}")
        name = f"tagging_{key}{'_finetune' if args.skip_frozen else ''}"
        for seed in args.split_seeds:  # the result is rewritten after every seed: a cut-short run keeps its seeds
            console.print(f"split seed {seed}")
            manifest = split_manifest(full, seed=seed, stratify=stratify)
            sizes[seed] = manifest.frame["split"].value_counts().to_dict()
            per_seed[seed] = one_split(manifest, features, args.backbone, focus, finetune, not args.skip_frozen,
                                       console, **options)
            snapshots = {s: next((r["snapshots"] for r in rows if "snapshots" in r), None)
                         for s, rows in per_seed.items()}
            text = (f"### {title}\n\nCommand: `{command}`  \n"
                    f"Machine: {platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, "
                    f"torch {torch.__version__}, no GPU; wall time {time.perf_counter() - start:.0f} s. "
                    f"Splits (seeds {list(per_seed)} of {args.split_seeds}): {sizes}. Test split only; mean ± sample "
                    f"std over split seeds.\n\n"
                    f"{markdown.records_table(summarise(per_seed))}\n\n{target_lines(per_seed, focus is not None)}"
                    + (f"\nHead snapshots of the per-label best-epoch model, by split seed: {snapshots}\n"
                       if finetune is not None else ""))
            out = args.out_dir / f"{name}.md"
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(text, encoding="utf-8")
            (args.out_dir / f"{name}_rows.json").write_text(json.dumps(per_seed, indent=1), encoding="utf-8")
            console.print(f"wrote {out} ({len(per_seed)} of {len(args.split_seeds)} split seeds)")
        console.print(text)


if __name__ == "__main__":
    main()
