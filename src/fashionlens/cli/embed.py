"""``fashionlens embed``: train and evaluate embedding models for visual search, and simulate street views."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from fashionlens.cli.common import EMBEDDER_HELP, console, err_console, load_embedder, load_manifest

app = typer.Typer(help="Train and evaluate embedding models for visual search.", no_args_is_help=True)


@app.command("train")
def train(
    manifest_path: Path = typer.Option(..., "--manifest", "-m", help="Manifest with train/val splits."),
    out: Path = typer.Option(..., "--out", "-o", help="Embedder directory to write."),
    config_path: Path | None = typer.Option(None, "--config", "-c", help="YAML RetrievalConfig."),
    identity: str | None = typer.Option(None, help="Field of positive pairs: item_id (street-to-shop) or a class "
                                                   "head such as articleType (similar items)."),
    categories: list[str] | None = typer.Option(None, "--category", help="Hard-negative field(s), finest first."),
    mode: str | None = typer.Option(None, help="features | finetune."),
    easy_fraction: float | None = typer.Option(None, help="Share of easy negatives (0.2 = easy:hard 1:4; 0 = hard "
                                                          "only)."),
    miner: str | None = typer.Option(None, help="PML online miner instead of the paper's triplets: semihard, hard, "
                                                "all, batch_hard."),
    margin: float | None = typer.Option(None, help="Triplet margin on squared L2 distances."),
    swap: bool | None = typer.Option(None, "--swap/--no-swap", help="PML distance swap (also compare the positive "
                                                                    "with the negative)."),
    epochs: int | None = typer.Option(None, help="Training epochs."),
    lr: float | None = typer.Option(None, help="Learning rate."),
    device: str | None = typer.Option(None, help="cpu | cuda | auto."),
    seed: int | None = typer.Option(None, help="Random seed."),
) -> None:
    """Triplet-train an embedder; the best epoch on val is saved."""
    from fashionlens.config import load_config
    from fashionlens.tasks.retrieval import RetrievalConfig, train_embedder

    overrides = {"identity": identity, "categories": categories or None, "mode": mode, "easy_fraction": easy_fraction,
                 "miner": miner, "margin": margin, "swap": swap, "train.epochs": epochs, "train.lr": lr,
                 "train.device": device, "train.seed": seed}
    config = load_config(RetrievalConfig, config_path, overrides)
    embedder = train_embedder(load_manifest(manifest_path), config, out, console=err_console)
    console.print_json(json.dumps(embedder.metrics))


@app.command("evaluate")
def evaluate(
    manifest_path: Path = typer.Option(..., "--manifest", "-m", help="Labelled manifest."),
    model: Path | None = typer.Option(None, "--model", help=EMBEDDER_HELP),
    backbone: str = typer.Option("efficientnet_lite0", help="Backbone of the untrained baseline."),
    split: str = typer.Option("test", help="Split to score (its items are the gallery)."),
    task: str = typer.Option("similar", help="similar (items query each other) | street (street photos query shop "
                                             "photos)."),
    field: list[str] = typer.Option(["articleType"], help="Similar items: relevance = same value(s) of these."),
    k: int = typer.Option(10, help="Similar items: cut-off of precision@k."),
    gallery: str = typer.Option("split", help="Street: gallery of the split's shop photos, or 'all'."),
    grid: Path | None = typer.Option(None, help="Write the results grid PNG here."),
) -> None:
    """Score retrieval: similar-item precision@k, or street-to-shop recall@K (hit rate), precision@K and mAP."""
    from fashionlens.errors import ConfigError
    from fashionlens.tasks.retrieval import evaluate_similar_items, evaluate_street_to_shop

    embedder = load_embedder(model, backbone)
    manifest = load_manifest(manifest_path)
    if task == "similar":
        scores = evaluate_similar_items(embedder, manifest, split, k=k, fields=field, grid_path=grid,
                                        show_progress=True)
    elif task == "street":
        scores = evaluate_street_to_shop(embedder, manifest, split, gallery=gallery, grid_path=grid,
                                         show_progress=True)
        if scores["simulated"]:
            console.print("[yellow]queries are SIMULATED street views: report as simulated street-to-shop")
    else:
        raise ConfigError(f"unknown task '{task}'; use 'similar' or 'street'")
    console.print_json(json.dumps(scores))
    if grid is not None:
        console.print(f"results grid: {grid}")


@app.command("simulate")
def simulate(
    manifest_path: Path = typer.Option(..., "--manifest", "-m", help="Manifest of shop photos."),
    out: Path = typer.Option(..., "--out", "-o", help="Manifest to write: the shop rows plus simulated street rows."),
    backgrounds: Path | None = typer.Option(None, help="Folder of street photos for backgrounds (e.g. "
                                                       "clothing-attributes/images)."),
    views: int = typer.Option(1, help="Simulated street views per shop photo."),
    seed: int = typer.Option(0, help="Simulator seed."),
    cache: Path | None = typer.Option(None, help="Image folder (default: the fashionlens cache's street_sim)."),
) -> None:
    """Add simulated street views (for development; results on them are SIMULATED street-to-shop)."""
    import pandas as pd

    from fashionlens.data.records import Manifest
    from fashionlens.data.street_view import StreetViewSimulator
    from fashionlens.io import default_cache_dir

    shop = load_manifest(manifest_path)
    simulator = (StreetViewSimulator.from_folder(backgrounds, seed=seed) if backgrounds
                 else StreetViewSimulator(seed=seed))
    street = simulator.simulate_manifest(shop, cache or default_cache_dir() / "street_sim", views=views)
    combined = Manifest(pd.concat([shop.frame, street.frame], ignore_index=True), name=street.name)
    combined.save(out)
    console.print(f"{len(street)} simulated street views of {len(shop)} shop photos -> {out}")
