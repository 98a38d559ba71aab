"""Helpers shared by the CLI command groups: consoles, manifest loading, prediction inputs and outputs, and the
options of sharded batch jobs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console

from fashionlens.data.records import Manifest

if TYPE_CHECKING:
    import pandas as pd

    from fashionlens.inference import ModelSpec

console = Console()
err_console = Console(stderr=True)


def load_manifest(path: Path) -> Manifest:
    """Load a manifest saved by ``fashionlens data build``."""
    return Manifest.load(path)


def parse_filters(items: list[str] | None) -> dict[str, list[str]]:
    """Parse ``--filter field=value[,value...]`` options (see :func:`fashionlens.index.filters.parse_filters`)."""
    from fashionlens.index.filters import parse_filters as parse

    return parse(items)


def prediction_manifest(images: list[Path] | None, manifest_path: Path | None, out: Path | None) -> Manifest:
    """The rows a ``predict`` command runs on (image files or a manifest), after checking the output format.

    Raises:
        DataError: Neither images nor a manifest, or an output that is not ``.csv``/``.jsonl``.
    """
    from fashionlens.errors import DataError
    from fashionlens.tasks.common import manifest_of_paths

    if not images and manifest_path is None:
        raise DataError("give image files or --manifest")
    if out is not None and out.suffix not in (".csv", ".jsonl"):
        raise DataError(f"cannot write predictions to '{out}': use .csv or .jsonl")
    return load_manifest(manifest_path) if manifest_path else manifest_of_paths(images or [])


def write_predictions(table: pd.DataFrame, out: Path) -> None:
    """Write a predictions table atomically as CSV or JSON lines (by ``out``'s suffix)."""
    from fashionlens.io import atomic_path

    with atomic_path(out) as tmp:
        if out.suffix == ".jsonl":
            table.to_json(tmp, orient="records", lines=True)
        else:
            table.to_csv(tmp, index=False)
    console.print(f"wrote {len(table)} predictions to {out}")


ENGINE_OPTION = typer.Option("local", "--engine", help="local | ray. With ray (or --shards) the job runs into "
                                                       "resumable parquet shards, and the output is made from them.")
SHARDS_OPTION = typer.Option(None, "--shards", help="Shard folder (default: <out stem>.shards beside --out); a "
                                                    "rerun skips the shards already there.")
SHARD_SIZE_OPTION = typer.Option(1024, "--shard-size", help="Images per shard (the unit of resumption).")
RAY_ADDRESS_OPTION = typer.Option(None, "--ray-address", help="Ray cluster to use (or set RAY_ADDRESS); default: "
                                                              "a local Ray instance.")
ACTORS_OPTION = typer.Option(None, "--actors", help="Ray model actors (default: one per GPU, else the CPUs less an "
                                                    "eighth kept for decoding).")


@dataclass
class BatchJob:
    """The sharded-job options of ``tag predict`` and ``index build`` (see :mod:`fashionlens.inference`)."""

    engine: str
    shards: Path | None
    shard_size: int
    ray_address: str | None
    actors: int | None

    @property
    def sharded(self) -> bool:
        """Whether the job goes through shards (else: the plain in-process path)."""
        return self.engine != "local" or self.shards is not None

    def run(self, manifest: Manifest, spec: ModelSpec, out: Path | None) -> Path:
        """Run (or resume) the job into its shard folder, report what was computed, and return the folder."""
        from fashionlens.inference import make_engine, run_job, shard_folder

        runner = make_engine(self.engine, ray_address=self.ray_address, actors=self.actors)
        folder = shard_folder(self.shards, out)
        result = run_job(manifest, spec, folder, runner, shard_size=self.shard_size)
        err_console.print(f"{len(result.computed)} of {result.plan.n_shards} shard(s) computed in "
                          f"{result.seconds:.1f} s ({self.engine}) -> {folder}")
        return folder
