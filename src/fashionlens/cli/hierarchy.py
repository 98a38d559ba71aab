"""``fashionlens hierarchy``: train, evaluate and run hierarchical category classifiers (HMCN-F)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from fashionlens.cli.common import (
    PREDICT_EPILOG,
    STRICT_OPTION,
    BatchJob,
    batch_job_options,
    console,
    err_console,
    finish_predictions,
    load_manifest,
    model_option,
    prediction_manifest,
    report_dir,
    resolve_model_option,
    unpredicted_rows,
    use_runtime,
)
from fashionlens.engine import training_history

app = typer.Typer(help="Hierarchical category classification (e.g. masterCategory > subCategory > articleType).",
                  no_args_is_help=True)


@app.command("train")
def train(
    manifest_path: Path = typer.Option(..., "--manifest", "-m", help="Manifest with train/val splits."),
    out: Path = typer.Option(..., "--out", "-o", help="Model directory to write."),
    config_path: Path | None = typer.Option(None, "--config", "-c", help="YAML HierarchyConfig."),
    variant: str | None = typer.Option(None, help="flat | hmcn | hmcn_mtl."),
    taxonomy: Path | None = typer.Option(None, help="YAML taxonomy tree (default: the manifest's level columns)."),
    levels: str | None = typer.Option(None, help="Comma-separated class heads, top level first."),
    conflicts: str | None = typer.Option(None, help="Child under two parents: majority | split | error."),
    min_count: int | None = typer.Option(None, help="Classes with fewer training rows are merged or dropped."),
    rare: str | None = typer.Option(None, help="Rare classes: other | drop."),
    mode: str | None = typer.Option(None, help="features | finetune."),
    init_head: Path | None = typer.Option(None, help="finetune: start from this features-mode model's head (LP-FT)."),
    backbone: str | None = typer.Option(None, help="timm model name (default efficientnet_lite0)."),
    beta: float | None = typer.Option(None, help="Weight of the local last-level prediction in the fusion."),
    epochs: int | None = typer.Option(None, help="Training epochs."),
    lr: float | None = typer.Option(None, help="Learning rate."),
    device: str | None = typer.Option(None, help="cpu | cuda | auto."),
    seed: int | None = typer.Option(None, help="Random seed."),
) -> None:
    """Build the taxonomy, train a hierarchy classifier, and save the model directory."""
    from fashionlens.config import load_config
    from fashionlens.tasks.hierarchy import HierarchyConfig, train_hierarchy

    overrides = {"variant": variant, "taxonomy.file": str(taxonomy) if taxonomy else None,
                 "taxonomy.levels": [v.strip() for v in levels.split(",")] if levels else None,
                 "taxonomy.conflicts": conflicts, "taxonomy.min_count": min_count, "taxonomy.rare": rare,
                 "mode": mode, "init_head": str(init_head) if init_head else None, "backbone.name": backbone,
                 "beta": beta, "train.epochs": epochs, "train.lr": lr,
                 "train.device": device, "train.seed": seed}
    config = load_config(HierarchyConfig, config_path, overrides)
    classifier = train_hierarchy(load_manifest(manifest_path), config, out, console=err_console)
    console.print_json(json.dumps(classifier.metrics, default=str))


@app.command("evaluate")
def evaluate(
    model: str | None = model_option("hierarchy classifier", "Hierarchy classifier"),
    manifest_path: Path = typer.Option(..., "--manifest", "-m", help="Labelled manifest."),
    split: list[str] = typer.Option(["val", "test"], help="Splits to score (those present)."),
    report: Path | None = typer.Option(None, help="Report directory (default: <model>/report; ./<name>-report for a "
                                                  "shipped model)."),
) -> None:
    """Score a hierarchy classifier: top-1/3/5, per-level accuracy, consistency; write a markdown report."""
    from fashionlens.errors import DataError
    from fashionlens.tasks.hierarchy import HierarchyClassifier, evaluate_hierarchy, write_hierarchy_report

    model_dir = resolve_model_option(model, "hierarchy")
    classifier = HierarchyClassifier.load(model_dir)
    manifest = load_manifest(manifest_path)
    present = [s for s in split if (manifest.frame["split"] == s).any()]
    if not present:
        raise DataError(f"none of the splits {split} exist in manifest '{manifest.name}'")
    evaluations = [evaluate_hierarchy(classifier, manifest, name)[0] for name in present]
    history = training_history(model_dir)
    path = write_hierarchy_report(report_dir(report, model_dir), classifier, evaluations, history)
    for evaluation in evaluations:
        console.print(f"[bold]{evaluation.split}[/bold]: " +
                      ", ".join(f"{k} {v:.3f}" for k, v in evaluation.summary.items()))
    console.print(f"report: {path}")


@app.command("predict", epilog=PREDICT_EPILOG)
@batch_job_options
def predict(
    images: list[Path] | None = typer.Argument(None, help="Image files."),
    model: str | None = model_option("hierarchy classifier", "Hierarchy classifier"),
    manifest_path: Path | None = typer.Option(None, "--manifest", "-m", help="Predict every row of a manifest."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Write .csv or .jsonl (default: print)."),
    top_k: int = typer.Option(3, help="Alternatives listed for the last level."),
    strict: bool = STRICT_OPTION,
    *,
    job: BatchJob,
) -> None:
    """Classify images into a path through the taxonomy, with per-level probabilities."""
    from fashionlens.tasks.hierarchy import HierarchyClassifier

    manifest = prediction_manifest(images, manifest_path, out)
    model_dir = resolve_model_option(model, "hierarchy")
    classifier = use_runtime(HierarchyClassifier.load(model_dir), job.runtime)
    if job.sharded:
        from fashionlens.inference import ModelSpec, hierarchy_from_shards

        folder = job.run(manifest, ModelSpec("hierarchy", str(model_dir)), out)
        predictions = hierarchy_from_shards(folder, classifier, skip_bad_images=True)
    else:
        predictions = classifier.predict(manifest, skip_bad_images=True)
    failed = unpredicted_rows(predictions.probabilities, len(manifest))
    table = predictions.table(manifest.frame["path"].tolist(), top_k=top_k)[~failed]  # a failed row has NaN outputs
    finish_predictions(table, manifest, failed, out, strict,
                       ["path", "category", *[c for c in table.columns if c.startswith("p:")]])
