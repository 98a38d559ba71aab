"""``fashionlens similar``: the catalogue items most like a catalogue item."""

from __future__ import annotations

from pathlib import Path

import typer

from fashionlens.cli.common import parse_filters, print_hits


def similar(
    item_id: str = typer.Argument(..., help="Catalogue item id (see 'index info' / search results)."),
    index_dir: Path = typer.Option(..., "--index", help="Index directory."),
    k: int = typer.Option(10, "--k", "-k", help="Results."),
    filters: list[str] | None = typer.Option(None, "--filter", help="field=value[,value...]; repeatable."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON lines."),
) -> None:
    """Catalogue items most similar to a catalogue item (never itself)."""
    from fashionlens.tasks.retrieval import open_index, similar_items

    hits = similar_items(open_index(index_dir), item_id, k, parse_filters(filters))
    print_hits(item_id, hits, as_json)
