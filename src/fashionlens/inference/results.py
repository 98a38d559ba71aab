"""Turning a finished shard folder into the project's results: tag predictions, embeddings, a catalogue index."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fashionlens.errors import DataError
from fashionlens.inference.shards import ShardArrays, read_arrays

if TYPE_CHECKING:
    from fashionlens.data.records import Manifest
    from fashionlens.index import CatalogueIndex
    from fashionlens.tasks.retrieval import Embedder
    from fashionlens.tasks.tagging import Predictions


def require_all_read(arrays: ShardArrays, where: str | Path) -> None:
    """Fail like the in-process pipeline when some images could not be read.

    Raises:
        DataError: Unreadable images (the first few are named); their shards are recomputed on the next run.
    """
    failed = arrays.paths[~arrays.ok]
    if len(failed):
        shown = ", ".join(map(str, failed[:3]))
        raise DataError(f"{len(failed)} image(s) could not be read, e.g. {shown} (fix or drop them; rerunning "
                        f"the job into {where} recomputes only their shards)")


def _arrays_of(directory: str | Path, task: str) -> ShardArrays:
    arrays = read_arrays(directory)
    if arrays.record.get("task") != task:
        raise DataError(f"shard folder {directory} holds a '{arrays.record.get('task')}' job, not '{task}'")
    require_all_read(arrays, directory)
    return arrays


def predictions_from_shards(directory: str | Path) -> Predictions:
    """Tag and head probabilities of a finished tagging job, in manifest order.

    Raises:
        DataError: Unfinished job, another task's shards, or unreadable images.
    """
    from fashionlens.tasks.tagging import Predictions

    arrays = _arrays_of(directory, "tag")
    model = arrays.record["model"]
    tags = arrays.columns.get("probs", np.zeros((len(arrays.paths), len(model["tags"])), dtype=np.float32))
    return Predictions(tags=tags, heads={head: arrays.columns[f"head:{head}"] for head in model["heads"]})


def embeddings_from_shards(directory: str | Path) -> np.ndarray:
    """Embeddings ``(rows, dim)`` of a finished embedding job, in manifest order.

    Raises:
        DataError: Unfinished job, another task's shards, or unreadable images.
    """
    return _arrays_of(directory, "embed").columns["embedding"]


def catalogue_index_from_shards(directory: str | Path, embedder: Embedder, manifest: Manifest,
                                out_dir: str | Path | None = None, kind: str = "flat",
                                **params: int) -> CatalogueIndex:
    """The catalogue index of ``manifest`` from the embeddings of a finished job (no image is read again).

    The same as :func:`fashionlens.tasks.retrieval.build_catalogue_index`, with the vectors taken from the shards.

    Raises:
        DataError: The shards were made by another model or for another manifest.
    """
    from fashionlens.inference.shards import manifest_hash
    from fashionlens.tasks.retrieval import index_catalogue

    arrays = _arrays_of(directory, "embed")
    made_by = arrays.record["model"].get("model_id")
    if made_by != embedder.model_id:
        raise DataError(f"shards in {directory} were made by embedding model {made_by!r}, not {embedder.model_id!r}")
    if arrays.record.get("manifest_hash") != manifest_hash(manifest):
        raise DataError(f"shards in {directory} were made for another manifest than '{manifest.name}'")
    return index_catalogue(arrays.columns["embedding"], embedder, manifest, out_dir, kind, **params)
