"""Helpers shared by the CLI command groups: consoles, manifest loading, prediction inputs and outputs, and the
options of sharded batch jobs.

Every batch ``predict`` command ends in :func:`finish_predictions`: an image that cannot be read costs its own row
(an ``error`` in the output, one line on stderr, exit status 1), not the run; ``--strict`` restores all-or-nothing.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from fashionlens.data.records import Manifest

if TYPE_CHECKING:
    import pandas as pd

    from fashionlens.index import SearchHit
    from fashionlens.inference import ModelSpec
    from fashionlens.tasks.retrieval import Embedder

console = Console()
err_console = Console(stderr=True)


class DefaultPredictGroup(TyperGroup):
    """A command group whose ``predict`` command runs when the first argument names no command of the group, so
    ``fashionlens tag photo.jpg --model NAME`` is ``fashionlens tag predict photo.jpg --model NAME`` (a photo named
    like a command is given as ``./train``)."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:  # ctx: the click Context typer vendors
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            args = ["predict", *args]
        return super().parse_args(ctx, args)


def model_option(kind: str, what: str) -> Any:
    """The ``--model NAME|DIR`` option of the commands that run a model of ``kind`` (default: its shipped model)."""
    return typer.Option(None, "--model", help=f"{what}: the name of a shipped model (fashionlens models list) or a "
                                              f"model directory. Default: the shipped {kind}.")


def resolve_model_option(model: str | None, kind: str) -> Path:
    """The model directory a ``--model`` value names (see :func:`fashionlens.pretrained.resolve_model`).

    Raises:
        ModelError: Neither a shipped model nor a directory, or a shipped model built by another version.
    """
    from fashionlens.pretrained import resolve_model

    return resolve_model(model, kind)


def shipped_or_given(value: Path | None, kind: str) -> Path | None:
    """A shipped model's directory when ``value`` names one (and no such directory exists), else ``value`` as is
    (``None`` stays ``None``: the command's own default applies).

    Raises:
        ModelError: The shipped model cannot be used (not built, or built by another version).
    """
    from fashionlens.pretrained import list_pretrained, resolve_model

    if value is None or value.is_dir() or str(value) not in {entry.name for entry in list_pretrained()}:
        return value
    return resolve_model(value, kind)


def report_dir(report: Path | None, model_dir: Path) -> Path:
    """Where an ``evaluate`` command writes its report: ``--report``, else ``<model>/report`` -- except for a shipped
    model, whose directory lies inside the installed package: its report goes to ``./<name>-report``."""
    from fashionlens.pretrained.registry import MODELS_DIR

    if report is not None:
        return report
    if model_dir.resolve().is_relative_to(MODELS_DIR):
        return Path(f"{model_dir.name}-report")
    return model_dir / "report"


def load_manifest(path: Path) -> Manifest:
    """Load a manifest saved by ``fashionlens data build``."""
    return Manifest.load(path)


def load_embedder(model: Path | None, backbone: str, runtime: str = "auto") -> Embedder:
    """The saved embedder at ``model`` (a directory or a shipped model's name), or the untrained ImageNet baseline
    of ``backbone`` when omitted, set to run its backbone on ``runtime``."""
    from fashionlens.models.backbones import BackboneConfig
    from fashionlens.tasks.retrieval import Embedder

    model = shipped_or_given(model, "embedder")
    embedder = Embedder.load(model) if model is not None else Embedder.untrained(BackboneConfig(name=backbone))
    return use_runtime(embedder, runtime)


ModelT = TypeVar("ModelT")


def use_runtime(model: ModelT, runtime: str) -> ModelT:
    """``model`` (a task model, or an ensemble and its members) set to run its backbone on ``runtime``.

    Raises:
        ConfigError: Unknown runtime.
    """
    from fashionlens.runtime import check_runtime

    check_runtime(runtime)
    for member in [model, *getattr(model, "members", [])]:
        config = getattr(member, "config", None)
        if config is not None:
            config.backbone.runtime = runtime
    return model


def print_hits(query: str, hits: list[SearchHit], as_json: bool, extra: dict[str, Any] | None = None) -> None:
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


#: ``--model`` of the commands that embed with a saved or shipped embedder.
EMBEDDER_HELP = ("Embedder directory (from 'embed train') or shipped model name (street2shop-embedder); omitted: the "
                 "untrained ImageNet baseline.")

#: Exit statuses of the batch ``predict`` commands (shown under their help).
PREDICT_EPILOG = ("Exit status: 0 when every image was predicted; 1 when some images could not be read (each is named "
                  "on stderr and has an 'error' in the output; the other rows are written as usual); 2 on a usage or "
                  "input error, or with --strict when any image could not be read (then nothing is written).")
STRICT_OPTION = typer.Option(False, "--strict", help="Fail the whole run (exit 2, nothing written) when any image "
                                                     "cannot be read, instead of reporting it and predicting the rest.")


def unpredicted_rows(outputs: Iterable[np.ndarray], rows: int) -> np.ndarray:
    """Rows without a prediction: a NaN in any output, which is how ``skip_bad_images`` marks an unreadable image."""
    missing = np.zeros(rows, dtype=bool)
    for values in outputs:
        missing |= ~np.isfinite(np.asarray(values, dtype=np.float64).reshape(rows, -1)).all(axis=1)
    return missing


def finish_predictions(table: pd.DataFrame, manifest: Manifest, failed: np.ndarray, out: Path | None,
                       strict: bool, shown: Sequence[str]) -> None:
    """End a batch ``predict`` command: report the images that could not be read, then print or write the table.

    The output has one row per manifest row: a failed row has its ``path``, empty predictions and an ``error`` (the
    column is always there, empty when the image was read); each failure is also one line on stderr.

    Args:
        table: The predictions of the rows that did not fail, in manifest order, ``path`` first.
        manifest: The rows to predict.
        failed: Manifest rows without a prediction (see :func:`unpredicted_rows`).
        out: ``.csv``/``.jsonl`` file to write; ``None`` prints the ``shown`` columns.
        strict: Fail the whole run when any row failed.
        shown: Columns printed when there is no ``out``.

    Raises:
        DataError: ``strict`` and some images could not be read (nothing is written).
        typer.Exit: Status 1 when some images could not be read, after the others were written.
    """
    from fashionlens.errors import DataError

    failed = np.asarray(failed, dtype=bool)
    paths = manifest.frame["path"].astype(str).tolist()
    if len(table) != int((~failed).sum()) or len(failed) != len(paths):
        raise DataError(f"{len(table)} predictions for {len(paths)} rows of which {int(failed.sum())} failed")
    errors: list[str | None] = [None] * len(paths)
    for row in np.flatnonzero(failed):
        errors[row] = _read_error(paths[row])
    reasons = [error for error in errors if error is not None]
    if reasons and strict:
        raise DataError(f"{len(reasons)} of {len(paths)} image(s) could not be read (--strict): "
                        f"{'; '.join(reasons[:3])}{'; ...' if len(reasons) > 3 else ''}")
    if reasons:  # the failed rows come back with their path and nothing else (NaN / empty predictions)
        table = table.set_axis(np.flatnonzero(~failed)).reindex(np.arange(len(paths)))
        table["path"] = paths
    table = table.assign(error=np.array(errors, dtype=object)).reset_index(drop=True)
    for reason in reasons:
        err_console.print(f"[yellow]unreadable:[/yellow] {escape(reason)}", highlight=False, soft_wrap=True)
    if out is None:
        console.print(table[[*shown, *(["error"] if reasons else [])]].to_string(index=False, na_rep=""),
                      highlight=False, soft_wrap=True, markup=False)
    else:
        write_predictions(table, out)
    if reasons:
        err_console.print(f"{len(reasons)} of {len(table)} image(s) could not be read: their rows carry an 'error'",
                          highlight=False)
        raise typer.Exit(code=1)


def _read_error(path: str) -> str:
    """The one-line reason an image has no prediction (decoded once more, for the failures only)."""
    from fashionlens.data.images import decode_image
    from fashionlens.errors import ImageError

    try:
        decode_image(path)
    except ImageError as error:
        return str(error)
    return f"no finite prediction for {path} (the image can be read now; rerun to predict it)"


def write_predictions(table: pd.DataFrame, out: Path) -> None:
    """Write a predictions table atomically as CSV or JSON lines (by ``out``'s suffix)."""
    from fashionlens.io import atomic_path

    with atomic_path(out) as tmp:
        if out.suffix == ".jsonl":
            table.to_json(tmp, orient="records", lines=True)
        else:
            table.to_csv(tmp, index=False)
    console.print(f"wrote {len(table)} predictions to {out}")


_ENGINE_OPTION = typer.Option("local", "--engine", help="local | ray. With ray (or --shards) the job runs into "
                                                       "resumable parquet shards, and the output is made from them.")
_SHARDS_OPTION = typer.Option(None, "--shards", help="Shard folder (default: <out stem>.shards beside --out); a "
                                                    "rerun skips the shards already there.")
_SHARD_SIZE_OPTION = typer.Option(1024, "--shard-size", help="Images per shard (the unit of resumption).")
_RAY_ADDRESS_OPTION = typer.Option(None, "--ray-address", help="Ray cluster to use (or set RAY_ADDRESS); default: "
                                                              "a local Ray instance.")
RUNTIME_OPTION = typer.Option("auto", "--runtime", help="Where the backbone runs: auto (onnxruntime on CPU, "
                                                         "PyTorch on CUDA), torch or onnx.")
_ACTORS_OPTION = typer.Option(None, "--actors", help="Ray model actors (default: one per GPU, else the CPUs less an "
                                                    "eighth kept for decoding).")


@dataclass
class BatchJob:
    """The sharded-job options of ``tag predict`` and ``index build`` (see :mod:`fashionlens.inference`)."""

    engine: str
    shards: Path | None
    shard_size: int
    ray_address: str | None
    actors: int | None
    runtime: str = "auto"

    @property
    def sharded(self) -> bool:
        """Whether the job goes through shards (else: the plain in-process path)."""
        return self.engine != "local" or self.shards is not None

    def run(self, manifest: Manifest, spec: ModelSpec, out: Path | None) -> Path:
        """Run (or resume) the job into its shard folder, report what was computed, and return the folder."""
        from fashionlens.inference import make_engine, run_job, shard_folder

        runner = make_engine(self.engine, ray_address=self.ray_address, actors=self.actors)
        folder = shard_folder(self.shards, out)
        result = run_job(manifest, dataclasses.replace(spec, runtime=self.runtime), folder, runner,
                         shard_size=self.shard_size)
        err_console.print(f"{len(result.computed)} of {result.plan.n_shards} shard(s) computed in "
                          f"{result.seconds:.1f} s ({self.engine}) -> {folder}")
        return folder


#: The options of a sharded batch job, in the order of :class:`BatchJob`'s fields.
_BATCH_JOB_OPTIONS: tuple[tuple[str, Any, Any], ...] = (
    ("engine", str, _ENGINE_OPTION), ("shards", Path | None, _SHARDS_OPTION), ("shard_size", int, _SHARD_SIZE_OPTION),
    ("ray_address", str | None, _RAY_ADDRESS_OPTION), ("actors", int | None, _ACTORS_OPTION),
    ("runtime", str, RUNTIME_OPTION))

CommandT = TypeVar("CommandT", bound=Callable[..., Any])


def batch_job_options(command: CommandT) -> CommandT:
    """Give a command the options of a sharded batch job: its ``job: BatchJob`` parameter is shown (in its place) as
    ``--engine``, ``--shards``, ``--shard-size``, ``--ray-address``, ``--actors`` and ``--runtime``, and receives
    them as one :class:`BatchJob`.

    Apply it under the ``@app.command`` decorator: typer reads the signature this gives the command.
    """
    signature = inspect.signature(command, eval_str=True)
    parameters: list[inspect.Parameter] = []
    for parameter in signature.parameters.values():
        if parameter.name == "job":
            parameters += [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=kind)
                           for name, kind, option in _BATCH_JOB_OPTIONS]
        else:
            parameters.append(parameter.replace(kind=inspect.Parameter.KEYWORD_ONLY))
    if len(parameters) == len(signature.parameters):
        raise TypeError(f"{command.__name__} has no 'job: BatchJob' parameter")

    @functools.wraps(command)
    def run(**values: Any) -> Any:
        job = BatchJob(*(values.pop(name) for name, _, _ in _BATCH_JOB_OPTIONS))
        return command(job=job, **values)

    run.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    run.__annotations__ = {p.name: p.annotation for p in parameters} | {"return": signature.return_annotation}
    return run  # type: ignore[return-value]
