"""``fashionlens index``: build, edit and describe catalogue indexes."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from fashionlens.cli.common import (
    EMBEDDER_HELP,
    RUNTIME_OPTION,
    BatchJob,
    batch_job_options,
    console,
    load_embedder,
    load_manifest,
    shipped_or_given,
    use_runtime,
)

app = typer.Typer(help="Build, edit and describe catalogue indexes.", no_args_is_help=True)


@app.command("build")
@batch_job_options
def index_build(
    manifest_path: Path = typer.Option(..., "--manifest", "-m", help="Catalogue (shop photos) to index."),
    out: Path = typer.Option(..., "--out", "-o", help="Index directory to write."),
    model: Path | None = typer.Option(None, "--model", help=EMBEDDER_HELP),
    backbone: str = typer.Option("efficientnet_lite0", help="Backbone of the untrained baseline."),
    split: str | None = typer.Option(None, help="Index only this split."),
    domain: str = typer.Option("shop", help="Index only rows of this domain ('' for all)."),
    kind: str = typer.Option("flat", help="flat | ivf | ivfpq | hnsw."),
    *,
    job: BatchJob,
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
    storage = {key: value for key, value in (("uri", uri), ("collection", collection)) if value}
    model, tagger = shipped_or_given(model, "embedder"), shipped_or_given(tagger, "tagger")
    check_storage(backend, storage)  # refused before any photo is embedded
    embedder = load_embedder(model, backbone, job.runtime)
    models = {role: path for role, path in (("embedder", model), ("tagger", tagger)) if path is not None}
    if tagger is not None:
        from fashionlens.tasks.tagging import load_tagger

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


@app.command("add")
def index_add(
    index_dir: Path = typer.Option(..., "--index", help="Index directory."),
    manifest_path: Path = typer.Option(..., "--manifest", "-m", help="Catalogue images to add (new item ids)."),
    model: Path | None = typer.Option(None, "--model", help=EMBEDDER_HELP),
    backbone: str = typer.Option("efficientnet_lite0", help="Backbone of the untrained baseline."),
    runtime: str = RUNTIME_OPTION,
) -> None:
    """Embed and add items (the index must come from the same model)."""
    from fashionlens.catalogue import add_to_index, index_embedder, open_index

    index = open_index(index_dir)
    model = shipped_or_given(model, "embedder")
    embedder = use_runtime(index_embedder(index, model, lambda: load_embedder(None, backbone)), runtime)
    add_to_index(index, embedder, load_manifest(manifest_path))
    index.save(index_dir)
    console.print(f"index {index_dir} now holds {len(index)} items")


@app.command("remove")
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


@app.command("info")
def index_info(index_dir: Path = typer.Option(..., "--index", help="Index directory.")) -> None:
    """Count, dimension, metric, kind, model id and filterable fields."""
    from fashionlens.catalogue import open_index

    console.print_json(json.dumps(open_index(index_dir).info()))
