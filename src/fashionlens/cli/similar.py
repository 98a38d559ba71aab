"""``fashionlens similar``: the catalogue items most like a catalogue item."""

from __future__ import annotations

from pathlib import Path

import typer

from fashionlens.cli.common import print_hits


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
    print_hits(item_id, hits, as_json)
