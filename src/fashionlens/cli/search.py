"""``fashionlens embed`` / ``index`` / ``search`` / ``similar``: visual search over a catalogue.

``embed`` trains and evaluates embedding models, ``index`` builds and edits catalogue indexes, ``search`` finds the
catalogue items matching photos, and ``similar`` the items most like a catalogue item.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from fashionlens.cli.common import (
    ACTORS_OPTION,
    ENGINE_OPTION,
    RAY_ADDRESS_OPTION,
    RUNTIME_OPTION,
    SHARD_SIZE_OPTION,
    SHARDS_OPTION,
    BatchJob,
    console,
    err_console,
    load_embedder,
    load_manifest,
    shipped_or_given,
    use_runtime,
)

if TYPE_CHECKING:
    from fashionlens.index import SearchHit

embed_app = typer.Typer(help="Train and evaluate embedding models for visual search.", no_args_is_help=True)
index_app = typer.Typer(help="Build, edit and describe catalogue indexes.", no_args_is_help=True)


def _hits_table(query: str, hits: list[SearchHit], as_json: bool, extra: dict[str, Any] | None = None) -> None:
    """Print one query's hits as a table (rank, item, score, category fields, path) or as JSON lines (with
    ``extra`` fields on each: the crop searched, the attributes that steered them)."""
    if as_json:
        for hit in hits:
            typer.echo(json.dumps({"query": query, "rank": hit.rank, "item_id": hit.item_id, "score": hit.score,
                                   **hit.metadata, **(extra or {})}))
        return
    from rich.table import Table

    table = Table(title=query, title_justify="left")
    fields = [f for f in ("articleType", "baseColour", "gender", "path") if hits and f in hits[0].metadata]
    for name in ("rank", "item_id", "score", *fields):
        table.add_column(name)
    for hit in hits:
        table.add_row(str(hit.rank), hit.item_id, f"{hit.score:.4f}", *[str(hit.metadata.get(f)) for f in fields])
    console.print(table)


def _steering_text(steering: dict[str, Any]) -> str:
    """One line: the category and colours the tagger saw and the catalogue values they favour."""
    parts = [f"{a['label']} ({a['probability']:.2f}) -> {', '.join(a['catalogue'])}"
             for a in [steering["category"], *steering["colours"]]]
    return "; ".join(parts)


MODEL_HELP = ("Embedder directory (from 'embed train') or shipped model name (street2shop-embedder); omitted: the "
              "untrained ImageNet baseline.")
SEARCH_MODEL_HELP = ("Embedder directory or shipped model name; omitted: the one the index records (index build "
                     "--model), else the untrained ImageNet baseline.")
TAGGER_HELP = ("Attribute tagger steering the search (trained on street photos, e.g. the shipped clothing-tagger); "
               "omitted: the one the index records (index build --tagger).")


@embed_app.command("train")
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


@embed_app.command("evaluate")
def evaluate(
    manifest_path: Path = typer.Option(..., "--manifest", "-m", help="Labelled manifest."),
    model: Path | None = typer.Option(None, "--model", help=MODEL_HELP),
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


@embed_app.command("simulate")
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
    from fashionlens.tasks.common import default_cache_dir

    shop = load_manifest(manifest_path)
    simulator = (StreetViewSimulator.from_folder(backgrounds, seed=seed) if backgrounds
                 else StreetViewSimulator(seed=seed))
    street = simulator.simulate_manifest(shop, cache or default_cache_dir() / "street_sim", views=views)
    combined = Manifest(pd.concat([shop.frame, street.frame], ignore_index=True), name=street.name)
    combined.save(out)
    console.print(f"{len(street)} simulated street views of {len(shop)} shop photos -> {out}")


@index_app.command("build")
def index_build(
    manifest_path: Path = typer.Option(..., "--manifest", "-m", help="Catalogue (shop photos) to index."),
    out: Path = typer.Option(..., "--out", "-o", help="Index directory to write."),
    model: Path | None = typer.Option(None, "--model", help=MODEL_HELP),
    backbone: str = typer.Option("efficientnet_lite0", help="Backbone of the untrained baseline."),
    split: str | None = typer.Option(None, help="Index only this split."),
    domain: str = typer.Option("shop", help="Index only rows of this domain ('' for all)."),
    kind: str = typer.Option("flat", help="flat | ivf | ivfpq | hnsw."),
    engine: str = ENGINE_OPTION,
    shards: Path | None = SHARDS_OPTION,
    shard_size: int = SHARD_SIZE_OPTION,
    ray_address: str | None = RAY_ADDRESS_OPTION,
    actors: int | None = ACTORS_OPTION,
    runtime: str = RUNTIME_OPTION,
    tagger: Path | None = typer.Option(None, "--tagger", help="Attribute tagger to record in the index for "
                                                              "attribute-aware search."),
    backend: str = typer.Option("faiss", help="faiss (index files in --out) | milvus (a Milvus collection; "
                                              "pip install 'fashionlens[milvus]')."),
    uri: str | None = typer.Option(None, help="milvus: a Milvus Lite file (.db) or a server URL "
                                              "(http://host:19530); default: a Milvus Lite database inside --out. "
                                              "Token: $FASHIONLENS_MILVUS_TOKEN."),
    collection: str | None = typer.Option(None, help="milvus: collection name (default fashionlens_<random>; an "
                                                     "existing one is never overwritten)."),
) -> None:
    """Embed a catalogue and write its index (recording --model and --tagger, so that --index alone searches)."""
    from fashionlens.catalogue import build_catalogue_index, check_storage

    manifest = load_manifest(manifest_path)
    keep = manifest.frame["domain"].isin([domain, ""]) if domain else manifest.frame["domain"].notna()
    if split:
        keep &= manifest.frame["split"] == split
    catalogue = manifest.subset(keep)
    job = BatchJob(engine, shards, shard_size, ray_address, actors, runtime)
    storage = {key: value for key, value in (("uri", uri), ("collection", collection)) if value}
    model, tagger = shipped_or_given(model, "embedder"), shipped_or_given(tagger, "tagger")
    check_storage(backend, storage)  # refused before any photo is embedded
    embedder = load_embedder(model, backbone, runtime)
    models = {role: path for role, path in (("embedder", model), ("tagger", tagger)) if path is not None}
    if tagger is not None:
        from fashionlens.tasks.tag_evaluation import load_tagger

        load_tagger(tagger)  # a broken tagger is named now, not at the first search
    if job.sharded:
        from fashionlens.inference import ModelSpec, catalogue_index_from_shards

        spec = ModelSpec("embed", str(model) if model is not None else None, backbone)
        folder = job.run(catalogue, spec, out)
        index = catalogue_index_from_shards(folder, embedder, catalogue, out, kind=kind, models=models,
                                            backend=backend, storage=storage)
    else:
        index = build_catalogue_index(embedder, catalogue, out, kind=kind, show_progress=True, models=models,
                                      backend=backend, storage=storage)
    console.print(f"indexed {len(index)} items ({index.dim}-d, {index.metric}, {index.kind}) -> {out}")


@index_app.command("add")
def index_add(
    index_dir: Path = typer.Option(..., "--index", help="Index directory."),
    manifest_path: Path = typer.Option(..., "--manifest", "-m", help="Catalogue images to add (new item ids)."),
    model: Path | None = typer.Option(None, "--model", help=MODEL_HELP),
    backbone: str = typer.Option("efficientnet_lite0", help="Backbone of the untrained baseline."),
    runtime: str = RUNTIME_OPTION,
) -> None:
    """Embed and add items (the index must come from the same model)."""
    from fashionlens.catalogue import add_to_index, index_embedder, open_index

    index = open_index(index_dir)
    embedder = use_runtime(index_embedder(index, model, lambda: load_embedder(None, backbone)), runtime)
    add_to_index(index, embedder, load_manifest(manifest_path))
    index.save(index_dir)
    console.print(f"index {index_dir} now holds {len(index)} items")


@index_app.command("remove")
def index_remove(
    item_ids: list[str] = typer.Argument(..., help="Item ids to remove."),
    index_dir: Path = typer.Option(..., "--index", help="Index directory."),
) -> None:
    """Remove items (all or nothing: an unknown id removes none)."""
    from fashionlens.catalogue import open_index

    index = open_index(index_dir)
    index.remove(item_ids)
    index.save(index_dir)
    console.print(f"removed {len(item_ids)} item(s); index {index_dir} now holds {len(index)} items")


@index_app.command("info")
def index_info(index_dir: Path = typer.Option(..., "--index", help="Index directory.")) -> None:
    """Count, dimension, metric, kind, model id and filterable fields."""
    from fashionlens.catalogue import open_index

    console.print_json(json.dumps(open_index(index_dir).info()))


def search(
    images: list[Path] = typer.Argument(..., help="Query photos."),
    index_dir: Path = typer.Option(..., "--index", help="Index directory."),
    model: Path | None = typer.Option(None, "--model", help=SEARCH_MODEL_HELP),
    backbone: str = typer.Option("efficientnet_lite0", help="Backbone of the untrained baseline."),
    k: int = typer.Option(10, "--k", "-k", help="Results per photo."),
    filters: list[str] | None = typer.Option(None, "--filter", help="field=value[,value...]; repeatable."),
    crop: str = typer.Option("auto", help="What of each photo to search with: auto (find the garment; the whole "
                                          "photo when none is found), none (whole photo) or x1,y1,x2,y2 (pixels)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON lines."),
    attributes: str = typer.Option("auto", help="auto: the tagger's category and colours of the photo re-rank the "
                                                "hits (off, with a note, without a tagger or mapped index fields) | "
                                                "off."),
    tagger_dir: Path | None = typer.Option(None, "--tagger", help=TAGGER_HELP),
    runtime: str = RUNTIME_OPTION,
) -> None:
    """Catalogue items matching each photo (the index must come from the same model)."""
    from fashionlens.catalogue import index_embedder, open_index, parse_filters, search_photos
    from fashionlens.data.crops import CropSpec, box_text
    from fashionlens.errors import ConfigError
    from fashionlens.tasks.retrieval import ATTRIBUTE_MODES, plan_crops
    from fashionlens.tasks.tag_evaluation import load_tagger

    spec = CropSpec.parse(crop)  # a malformed spec fails before any model loads
    model, tagger_dir = shipped_or_given(model, "embedder"), shipped_or_given(tagger_dir, "tagger")
    if attributes not in ATTRIBUTE_MODES:
        raise ConfigError(f"unknown --attributes '{attributes}'; use one of {', '.join(ATTRIBUTE_MODES)}")
    index = open_index(index_dir)
    embedder = use_runtime(index_embedder(index, model, lambda: load_embedder(None, backbone)), runtime)
    tagger_path = tagger_dir if tagger_dir is not None else index.models.get("tagger")
    tagger = use_runtime(load_tagger(tagger_path), runtime) if tagger_path and attributes != "off" else None
    crops = plan_crops(images, spec)
    results = search_photos(index, embedder, images, k, parse_filters(filters, index), tagger, attributes, crop=crops)
    if results.note:
        err_console.print(f"[dim]{results.note}")
    steered: list[dict[str, Any] | None] = [*results.attributes] if results.attributes else [None] * len(images)
    for image, hits, used, steering in zip(images, results.hits, crops, steered, strict=True):
        extra: dict[str, Any] = {"crop": used.as_dict()}
        if steering is not None:
            extra["steered_by"] = steering
        if not as_json:
            # which box was searched (and why the whole photo when no garment was found), what steered the hits
            console.print(f"{image}: searched the whole photo ({used.fallback})" if used.fallback else
                          f"{image}: searched box {box_text(used.box)} ({used.mode})")
            if steering is not None:
                console.print(f"steered by {_steering_text(steering)}")
        _hits_table(str(image), hits, as_json, extra)


def similar(
    item_id: str = typer.Argument(..., help="Catalogue item id (see 'index info' / search results)."),
    index_dir: Path = typer.Option(..., "--index", help="Index directory."),
    k: int = typer.Option(10, "--k", "-k", help="Results."),
    filters: list[str] | None = typer.Option(None, "--filter", help="field=value[,value...]; repeatable."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON lines."),
) -> None:
    """Catalogue items most similar to a catalogue item (never itself)."""
    from fashionlens.catalogue import open_index, parse_filters, similar_items

    index = open_index(index_dir)
    hits = similar_items(index, item_id, k, parse_filters(filters, index))
    _hits_table(item_id, hits, as_json)
