"""``fashionlens data``: build manifests from dataset layouts, split them, inspect them."""

from __future__ import annotations

from pathlib import Path

import typer

from fashionlens.cli.common import console, load_manifest
from fashionlens.data.readers import READERS
from fashionlens.data.splits import split_manifest

app = typer.Typer(help="Build, split and inspect manifests (tables of labelled images).", no_args_is_help=True)


@app.command("build")
def build(
    dataset: str = typer.Argument(..., help=f"Dataset layout: one of {', '.join(READERS)}."),
    root: Path = typer.Argument(..., help="Dataset folder (or the manifest file for 'generic')."),
    out: Path = typer.Option(..., "--out", "-o", help="Manifest file to write (.parquet or .csv)."),
    split: bool = typer.Option(True, help="Assign a seeded train/val/test split (unless the dataset has one)."),
    seed: int = typer.Option(0, help="Split seed."),
    stratify: str | None = typer.Option(None, help="Class head to stratify the split on."),
    fractions: str = typer.Option("0.7,0.15,0.15", help="Train,val,test fractions."),
) -> None:
    """Read a dataset layout into a manifest."""
    from fashionlens.errors import ConfigError

    if dataset not in READERS:
        raise ConfigError(f"unknown dataset '{dataset}'; choose one of {', '.join(READERS)}")
    manifest = READERS[dataset](root)
    if split and not (manifest.frame["split"] != "").all():
        parts = tuple(float(f) for f in fractions.split(","))
        manifest = split_manifest(manifest, parts, seed=seed, stratify=stratify)  # type: ignore[arg-type]
    manifest.save(out)
    counts = manifest.frame["split"].replace("", "<none>").value_counts().to_dict()
    console.print(f"{manifest.name}: {len(manifest)} images, {len(manifest.tag_names)} tags, "
                  f"heads {manifest.class_heads}, splits {counts}, stats {manifest.stats} -> {out}")


@app.command("split")
def split_command(
    manifest_path: Path = typer.Argument(..., help="Manifest to split."),
    out: Path = typer.Option(..., "--out", "-o", help="Manifest file to write."),
    seed: int = typer.Option(0, help="Split seed."),
    stratify: str | None = typer.Option(None, help="Class head or tag to stratify on."),
    group: str | None = typer.Option(None, help="Field whose rows stay together (e.g. item_id)."),
    fractions: str = typer.Option("0.7,0.15,0.15", help="Train,val,test fractions."),
) -> None:
    """(Re)assign a seeded, stratified train/val/test split."""
    parts = tuple(float(f) for f in fractions.split(","))
    manifest = split_manifest(load_manifest(manifest_path), parts, seed=seed,  # type: ignore[arg-type]
                              stratify=stratify, group=group)
    manifest.save(out)
    console.print(f"split {len(manifest)} rows: {manifest.frame['split'].value_counts().to_dict()} -> {out}")


@app.command("info")
def info(manifest_path: Path = typer.Argument(..., help="Manifest to describe.")) -> None:
    """Counts of rows, splits, labels and classes."""
    manifest = load_manifest(manifest_path)
    console.print(repr(manifest))
    console.print(f"splits: {manifest.frame['split'].replace('', '<none>').value_counts().to_dict()}")
    if manifest.tag_names:
        matrix = manifest.tag_matrix()
        for j, name in enumerate(manifest.tag_names):
            column = matrix[:, j]
            labelled = int((column == column).sum())
            console.print(f"  tag {name}: {int((column == 1).sum())} positive / {labelled} labelled")
    for head in manifest.class_heads:
        values = manifest.class_column(head)
        console.print(f"  head {head}: {values[values != ''].nunique()} classes, {(values == '').sum()} unlabelled")
