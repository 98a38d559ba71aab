"""Shard folders: the output of a batch-inference job, written shard by shard so that a job resumes where it stopped.

A job splits the manifest into shards of ``shard_size`` consecutive rows; shard ``i`` (rows ``i*shard_size`` ...)
becomes ``part-0000i.parquet`` with one row per image: ``row`` (manifest row), ``path``, ``ok`` (the image could be
read) and the model's output columns as fixed-size lists (see :class:`~fashionlens.inference.models.BatchModel`).
Each file is written atomically, so a file that exists is complete.

``job.json`` records what the shards hold: the task, the model fingerprint, the manifest's row count and hash, and
the shard size. A rerun with the same job skips the shards already written (and recomputes those with unreadable
images, which may have been fixed since); a rerun with anything different is refused, so shards of two models or
two manifests are never mixed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from fashionlens.data.records import BBOX_COLUMNS, Manifest
from fashionlens.errors import ConfigError, DataError
from fashionlens.io import atomic_path, write_json

JOB_FILE = "job.json"
JOB_VERSION = 1
_IDENTITY_KEYS = ("task", "fingerprint", "rows", "manifest_hash", "shard_size")


def manifest_hash(manifest: Manifest) -> str:
    """Hash of the manifest's inputs (paths and boxes, in order): what decides which image a row of a shard is."""
    values = pd.util.hash_pandas_object(manifest.frame[["path", *BBOX_COLUMNS]], index=False).to_numpy()
    return hashlib.sha1(values.tobytes()).hexdigest()[:20]


def shard_name(shard: int) -> str:
    """File name of shard ``shard``."""
    return f"part-{shard:05d}.parquet"


@dataclass(frozen=True)
class ShardPlan:
    """A job's shard folder and its record (see the module docstring); create with :func:`plan_job`."""

    directory: Path
    record: dict[str, Any]

    @property
    def rows_total(self) -> int:
        """Rows of the manifest."""
        return int(self.record["rows"])

    @property
    def shard_size(self) -> int:
        """Rows per shard (the last one may hold fewer)."""
        return int(self.record["shard_size"])

    @property
    def n_shards(self) -> int:
        """Number of shards."""
        return -(-self.rows_total // self.shard_size)

    def rows(self, shard: int) -> np.ndarray:
        """Manifest rows of ``shard``."""
        return np.arange(shard * self.shard_size, min((shard + 1) * self.shard_size, self.rows_total))

    def path(self, shard: int) -> Path:
        """File of ``shard``."""
        return self.directory / shard_name(shard)

    def is_done(self, shard: int) -> bool:
        """The shard's file exists, is readable, and every image in it was read (else it is worth another try)."""
        file = self.path(shard)
        if not file.is_file():
            return False
        try:
            ok = pq.read_table(file, columns=["ok"]).column("ok")
        except (OSError, pa.ArrowException):
            return False  # a damaged file is recomputed, never trusted
        return len(ok) == len(self.rows(shard)) and bool(ok.to_numpy(zero_copy_only=False).all())

    def pending(self) -> list[int]:
        """Shards still to compute."""
        return [shard for shard in range(self.n_shards) if not self.is_done(shard)]

    def write(self, shard: int, rows: np.ndarray, paths: np.ndarray, ok: np.ndarray,
              columns: dict[str, np.ndarray]) -> Path:
        """Write one complete shard atomically (rows may come in any order; they are stored sorted).

        Raises:
            DataError: ``rows`` are not exactly the shard's rows (an engine bug, never silently stored).
        """
        order = np.argsort(rows, kind="stable")
        rows = np.asarray(rows)[order]
        if not np.array_equal(rows, self.rows(shard)):
            raise DataError(f"shard {shard} of {self.directory} got rows {rows[:3].tolist()}... "
                            f"instead of {self.rows(shard)[:3].tolist()}...")
        arrays: dict[str, pa.Array] = {
            "row": pa.array(rows, type=pa.int64()),
            "path": pa.array(np.asarray(paths)[order].astype(str), type=pa.string()),
            "ok": pa.array(np.asarray(ok, dtype=bool)[order]),
        }
        for name, values in columns.items():
            matrix = np.asarray(values)[order]
            flat = pa.array(matrix.reshape(-1).astype(bool if matrix.dtype == bool else np.float32))
            arrays[name] = pa.FixedSizeListArray.from_arrays(flat, matrix.shape[1])
        with atomic_path(self.path(shard)) as tmp:
            pq.write_table(pa.table(arrays), tmp)
        return self.path(shard)


def plan_job(directory: str | Path, manifest: Manifest, task: str, model_identity: dict[str, Any],
             shard_size: int) -> ShardPlan:
    """Open (resume) or start the job whose shards go to ``directory``.

    Args:
        directory: Shard folder; created when missing.
        manifest: The images, in order.
        task: ``tag`` or ``embed``.
        model_identity: From :meth:`BatchModel.identity` (``fingerprint`` plus what the columns mean).
        shard_size: Rows per shard.

    Raises:
        ConfigError: Bad shard size, or the folder holds shards of another job (another model, manifest or shard
            size) or shards without a job record.
    """
    if shard_size < 1:
        raise ConfigError(f"shard size must be >= 1, got {shard_size}")
    if len(manifest) == 0:
        raise DataError(f"manifest '{manifest.name}' has no rows to run")
    directory = Path(directory)
    record = {"version": JOB_VERSION, "task": task, "fingerprint": model_identity["fingerprint"],
              "rows": len(manifest), "manifest_hash": manifest_hash(manifest), "shard_size": int(shard_size),
              "model": model_identity}
    job_file = directory / JOB_FILE
    if job_file.is_file():
        existing = read_job(directory)
        differing = [key for key in _IDENTITY_KEYS if existing.get(key) != record[key]]
        if differing:
            raise ConfigError(f"shard folder {directory} holds another job (different {', '.join(differing)}); "
                              f"use a new --shards folder or delete this one")
        return ShardPlan(directory, existing)
    if directory.is_dir() and any(directory.glob("part-*.parquet")):
        raise ConfigError(f"shard folder {directory} holds shards without {JOB_FILE}; use a new --shards folder")
    directory.mkdir(parents=True, exist_ok=True)
    write_json(job_file, record)
    return ShardPlan(directory, record)


def read_job(directory: str | Path) -> dict[str, Any]:
    """The job record of a shard folder.

    Raises:
        DataError: No readable ``job.json``.
    """
    import json

    job_file = Path(directory) / JOB_FILE
    if not job_file.is_file():
        raise DataError(f"{directory} is not a shard folder (no {JOB_FILE})")
    try:
        record: dict[str, Any] = json.loads(job_file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise DataError(f"cannot parse {job_file}: {error}") from error
    return record


@dataclass
class ShardArrays:
    """A whole job's results in manifest order: ``paths``, ``ok`` and each output column as a 2-D array."""

    record: dict[str, Any]
    paths: np.ndarray
    ok: np.ndarray
    columns: dict[str, np.ndarray]


def read_arrays(directory: str | Path) -> ShardArrays:
    """Read every shard of a finished job into arrays, in manifest order.

    Raises:
        DataError: Not a shard folder, or a shard is missing or unreadable (named: rerun the job to finish it).
    """
    record = read_job(directory)
    plan = ShardPlan(Path(directory), record)
    tables = []
    for shard in range(plan.n_shards):
        file = plan.path(shard)
        if not file.is_file():
            raise DataError(f"shard {file} is missing: the job has not finished; rerun it to compute the rest")
        try:
            tables.append(pq.read_table(file))
        except (OSError, pa.ArrowException) as error:
            raise DataError(f"cannot read shard {file}: {str(error).splitlines()[0]}") from error
    table = pa.concat_tables(tables).combine_chunks()
    if not np.array_equal(table.column("row").to_numpy(), np.arange(plan.rows_total)):
        raise DataError(f"shards of {directory} do not cover rows 0..{plan.rows_total - 1} in order")
    columns = {}
    for name in table.column_names:
        if name in ("row", "path", "ok"):
            continue
        chunk = table.column(name).chunk(0) if table.column(name).num_chunks else None
        if chunk is None or not isinstance(chunk, pa.FixedSizeListArray):
            continue
        columns[name] = chunk.flatten().to_numpy(zero_copy_only=False).reshape(len(table), chunk.type.list_size)
    return ShardArrays(record=record, paths=table.column("path").to_numpy(zero_copy_only=False),
                       ok=table.column("ok").to_numpy(zero_copy_only=False).astype(bool), columns=columns)


def read_table(directory: str | Path) -> pd.DataFrame:
    """A job's results as a pandas table in manifest order: ``row``, ``path``, ``ok`` and one array per output cell."""
    arrays = read_arrays(directory)
    frame = pd.DataFrame({"row": np.arange(len(arrays.paths)), "path": arrays.paths, "ok": arrays.ok})
    for name, values in arrays.columns.items():
        frame[name] = list(values)
    return frame
