"""``fashionlens search``: the catalogue items matching photos (a garment box of each, steered by its attributes)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from fashionlens.cli.common import (
    RUNTIME_OPTION,
    console,
    err_console,
    load_embedder,
    print_hits,
    shipped_or_given,
    use_runtime,
)

SEARCH_MODEL_HELP = ("Embedder directory or shipped model name; omitted: the one the index records (index build "
                     "--model), else the untrained ImageNet baseline.")
TAGGER_HELP = ("Attribute tagger steering the search (trained on street photos, e.g. the shipped clothing-tagger); "
               "omitted: the one the index records (index build --tagger).")


def _steering_text(steering: dict[str, Any]) -> str:
    """One line: the category and colours the tagger saw and the catalogue values they favour."""
    parts = [f"{a['label']} ({a['probability']:.2f}) -> {', '.join(a['catalogue'])}"
             for a in [steering["category"], *steering["colours"]]]
    return "; ".join(parts)

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
    from fashionlens.tasks.tagging import load_tagger

    spec = CropSpec.parse(crop)  # a malformed spec fails before any model loads
    model, tagger_dir = shipped_or_given(model, "embedder"), shipped_or_given(tagger_dir, "tagger")
    if attributes not in ATTRIBUTE_MODES:
        raise ConfigError(f"unknown --attributes '{attributes}'; use one of {', '.join(ATTRIBUTE_MODES)}")
    index = open_index(index_dir)
    parsed = parse_filters(filters, index)  # a bad filter fails before any model loads
    embedder = use_runtime(index_embedder(index, model, lambda: load_embedder(None, backbone)), runtime)
    tagger_path = tagger_dir if tagger_dir is not None else index.models.get("tagger")
    tagger = use_runtime(load_tagger(tagger_path), runtime) if tagger_path and attributes != "off" else None
    crops = plan_crops(images, spec)
    results = search_photos(index, embedder, images, k, parsed, tagger, attributes, crop=crops)
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
        print_hits(str(image), hits, as_json, extra)
