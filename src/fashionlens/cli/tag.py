"""``fashionlens tag``: train, evaluate, ensemble and run multi-label taggers."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from fashionlens.cli.common import (
    PREDICT_EPILOG,
    STRICT_OPTION,
    BatchJob,
    DefaultPredictGroup,
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

app = typer.Typer(help="Multi-label style / attribute tagging. `fashionlens tag PHOTO...` tags photos with the shipped "
                       "tagger (`tag predict`).", no_args_is_help=True, cls=DefaultPredictGroup)


@app.command("train")
def train(
    manifest_path: Path = typer.Option(..., "--manifest", "-m", help="Manifest with train/val splits."),
    out: Path = typer.Option(..., "--out", "-o", help="Model directory to write."),
    config_path: Path | None = typer.Option(None, "--config", "-c", help="YAML TaggingConfig."),
    mode: str | None = typer.Option(None, help="features | finetune | per_label."),
    loss: str | None = typer.Option(None, help="bce | weighted_bce."),
    backbone: str | None = typer.Option(None, help="timm model name (default efficientnet_lite0)."),
    weights: str | None = typer.Option(None, help="Local weights file for the backbone."),
    expand: list[str] | None = typer.Option(None, help="Multi-class head to learn as one-vs-rest tags."),
    epochs: int | None = typer.Option(None, help="Training epochs."),
    lr: float | None = typer.Option(None, help="Learning rate."),
    beta: float | None = typer.Option(None, help="F-beta used for threshold moving (default 2)."),
    thresholds: str | None = typer.Option(None, help="Threshold method: oof | val | plateau | fixed "
                                                     "(default: oof for frozen features, plateau for finetune)."),
    device: str | None = typer.Option(None, help="cpu | cuda | auto."),
    seed: int | None = typer.Option(None, help="Random seed."),
) -> None:
    """Train a tagger, tune per-label thresholds on val, and save the model directory."""
    from fashionlens.config import load_config
    from fashionlens.tasks.tagging import TaggingConfig, train_tagger

    overrides = {"mode": mode, "loss": loss, "backbone.name": backbone, "backbone.weights": weights,
                 "expand_heads": expand or None, "train.epochs": epochs, "train.lr": lr, "beta": beta,
                 "thresholds.method": thresholds,
                 "train.device": device, "train.seed": seed}
    config = load_config(TaggingConfig, config_path, overrides)
    manifest = load_manifest(manifest_path)
    tagger = train_tagger(manifest, config, out, console=err_console)
    console.print_json(json.dumps(tagger.metrics))


@app.command("evaluate")
def evaluate(
    model: str | None = model_option("tagger", "Tagger or ensemble"),
    manifest_path: Path = typer.Option(..., "--manifest", "-m", help="Labelled manifest."),
    split: list[str] = typer.Option(["val", "test"], help="Splits to score (those present)."),
    report: Path | None = typer.Option(None, help="Report directory (default: <model>/report; ./<name>-report for a "
                                                  "shipped model)."),
    focus: str | None = typer.Option(None, help="Comma-separated labels to also average over."),
    beta: float = typer.Option(2.0, help="F-beta of the summary."),
) -> None:
    """Score a tagger and write a markdown report with per-label table and plots."""
    from fashionlens.tasks.tagging import evaluate_tagger, load_tagger, write_report

    model_dir = resolve_model_option(model, "tagger")
    tagger = load_tagger(model_dir)
    manifest = load_manifest(manifest_path)
    present = [s for s in split if (manifest.frame["split"] == s).any()]
    if not present:
        from fashionlens.errors import DataError
        raise DataError(f"none of the splits {split} exist in manifest '{manifest.name}'")
    focus_labels = [f.strip() for f in focus.split(",")] if focus else None
    evaluations, predictions, subsets = [], {}, {}
    for name in present:
        evaluation, predicted = evaluate_tagger(tagger, manifest, name, beta=beta, focus=focus_labels)
        evaluations.append(evaluation)
        predictions[name], subsets[name] = predicted, manifest.split_subset(name)
    history = training_history(model_dir)
    path = write_report(report_dir(report, model_dir), tagger, evaluations, subsets, predictions, beta, history)
    for evaluation in evaluations:
        console.print(f"[bold]{evaluation.split}[/bold]: " +
                      ", ".join(f"{k} {v:.3f}" for k, v in evaluation.summary.items()))
    if evaluations and len(evaluations[0].per_label):
        console.print(evaluations[0].per_label.round(3).to_string(index=False))
    console.print(f"report: {path}")


@app.command("predict", epilog=PREDICT_EPILOG)
@batch_job_options
def predict(
    images: list[Path] | None = typer.Argument(None, help="Image files."),
    model: str | None = model_option("tagger", "Tagger or ensemble"),
    manifest_path: Path | None = typer.Option(None, "--manifest", "-m", help="Predict every row of a manifest."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Write .csv or .jsonl (default: print)."),
    *,
    job: BatchJob,
    strict: bool = STRICT_OPTION,
    beta: float | None = typer.Option(None, help="Decide with the threshold set tuned for F-beta (default: F1; "
                                                 "2 for the JD paper's recall-weighted F2)."),
) -> None:
    """Tag images: each decided tag with its probability (F1 thresholds unless --beta), and every probability."""
    from fashionlens.tasks.tagging import load_tagger, predictions_table

    manifest = prediction_manifest(images, manifest_path, out)
    model_dir = resolve_model_option(model, "tagger")
    tagger = use_runtime(load_tagger(model_dir), job.runtime)
    if job.sharded:
        from fashionlens.inference import ModelSpec, predictions_from_shards

        folder = job.run(manifest, ModelSpec("tag", str(model_dir)), out)
        predictions = predictions_from_shards(folder, skip_bad_images=True)
    else:
        predictions = tagger.predict(manifest, skip_bad_images=True)
    failed = unpredicted_rows([predictions.tags, *predictions.heads.values()], len(manifest))
    table = predictions_table(manifest.frame["path"][~failed].tolist(), tagger, predictions.subset(~failed),
                              beta=beta)
    finish_predictions(table, manifest, failed, out, strict,
                       ["path", "tag_probs", *[c for c in table.columns if c.startswith("class:")]])


@app.command("ensemble")
def ensemble(
    models: list[Path] = typer.Argument(..., help="Tagger directories to average."),
    manifest_path: Path = typer.Option(..., "--manifest", "-m", help="Manifest whose val split tunes thresholds."),
    out: Path = typer.Option(..., "--out", "-o", help="Ensemble directory to write."),
    weights: str | None = typer.Option(None, help="Comma-separated member weights."),
    beta: float = typer.Option(2.0, help="F-beta for threshold moving."),
) -> None:
    """Average members' probabilities, tune thresholds on val, save the ensemble."""
    from fashionlens.tasks.tagging import Tagger, TaggerEnsemble

    members = [Tagger.load(m) for m in models]
    weight_values = [float(w) for w in weights.split(",")] if weights else None
    result = TaggerEnsemble(members, weight_values, member_dirs=[str(m.resolve()) for m in models])
    result.fit_thresholds(load_manifest(manifest_path), beta=beta)
    result.save(out)
    console.print(f"saved ensemble of {len(members)} to {out}")
