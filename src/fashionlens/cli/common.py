"""Helpers shared by the CLI command groups: consoles, one-line errors, manifest loading."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from fashionlens.data.records import Manifest

console = Console()
err_console = Console(stderr=True)


def load_manifest(path: Path) -> Manifest:
    """Load a manifest saved by ``fashionlens data build``."""
    return Manifest.load(path)


def parse_filters(items: list[str] | None) -> dict[str, list[str]]:
    """Parse ``field=value`` filters: ``["articleType=Tops,Tshirts"]`` → ``{"articleType": ["Tops", "Tshirts"]}``."""
    from fashionlens.errors import ConfigError

    filters: dict[str, list[str]] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"filter '{item}' must look like field=value (or field=value1,value2)")
        key, value = item.split("=", 1)
        filters.setdefault(key.strip(), []).extend(v.strip() for v in value.split(",") if v.strip())
    return filters
