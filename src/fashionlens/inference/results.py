"""Turning a finished shard folder into the project's results: tag predictions, embeddings, a catalogue index."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fashionlens.errors import DataError
from fashionlens.inference.shards import ShardArrays, read_arrays

if TYPE_CHECKING:
    from fashionlens.data.records import Manifest
    from fashionlens.index import CatalogueIndex
    from fashionlens.tasks.hierarchy import HierarchyClassifier, HierarchyPredictions
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


def _arrays_of(directory: str | Path, task: str, skip_bad_images: bool = False) -> ShardArrays:
    arrays = read_arrays(directory)
    if arrays.record.get("task") != task:
        raise DataError(f"shard folder {directory} holds a '{arrays.record.get('task')}' job, not '{task}'")
    if not skip_bad_images:
        require_all_read(arrays, directory)
    return arrays


def predictions_from_shards(directory: str | Path, skip_bad_images: bool = False) -> Predictions:
    """Tag and head probabilities of a finished tagging job, in manifest order.

    Args:
        directory: The job's shard folder.
        skip_bad_images: Give the rows of unreadable images as NaN (as ``Tagger.predict`` does with the same flag)
            instead of raising.

    Raises:
        DataError: Unfinished job, another task's shards, or unreadable images (unless ``skip_bad_images``).
    """
    from fashionlens.tasks.tagging import Predictions

    arrays = _arrays_of(directory, "tag", skip_bad_images)
    model = arrays.record["model"]
    tags = arrays.columns.get("probs", np.zeros((len(arrays.paths), len(model["tags"])), dtype=np.float32))
    heads = {head: arrays.columns[f"head:{head}"] for head in model["heads"]}
    if not arrays.ok.all():  # NaN whatever the engine stored for them, so every path marks them the same way
        tags = np.where(arrays.ok[:, None], tags, np.nan).astype(np.float32)
        heads = {head: np.where(arrays.ok[:, None], probs, np.nan).astype(np.float32) for head, probs in heads.items()}
    return Predictions(tags=tags, heads=heads)


def hierarchy_from_shards(directory: str | Path, classifier: HierarchyClassifier,
                          skip_bad_images: bool = False) -> HierarchyPredictions:
    """Category paths and per-level probabilities of a finished hierarchy job, in manifest order, decoded by
    ``classifier`` (the model that ran the job) as its own ``predict`` decodes them.

    Raises:
        DataError: Unfinished job, another task's or another model's shards, or unreadable images (unless
            ``skip_bad_images``: their rows are NaN).
    """
    arrays = _arrays_of(directory, "hierarchy", skip_bad_images)
    taxonomy = classifier.taxonomy
    if arrays.record["model"].get("classes") != [list(c) for c in taxonomy.classes]:
        raise DataError(f"shard folder {directory} was made by a hierarchy model of another taxonomy")
    outputs = {name: np.where(arrays.ok[:, None], arrays.columns[name], np.nan).astype(np.float32)
               for name in classifier.output_names}
    return classifier.from_outputs(outputs, len(arrays.paths))


def embeddings_from_shards(directory: str | Path) -> np.ndarray:
    """Embeddings ``(rows, dim)`` of a finished embedding job, in manifest order.

    Raises:
        DataError: Unfinished job, another task's shards, or unreadable images.
    """
    return _arrays_of(directory, "embed").columns["embedding"]


def catalogue_index_from_shards(directory: str | Path, embedder: Embedder, manifest: Manifest,
                                out_dir: str | Path | None = None, kind: str = "flat",
                                models: Mapping[str, str | Path] | None = None, backend: str = "faiss",
                                storage: Mapping[str, str] | None = None, **params: int) -> CatalogueIndex:
    """The catalogue index of ``manifest`` from the embeddings of a finished job (no image is read again).

    The same as :func:`fashionlens.catalogue.build_catalogue_index`, with the vectors taken from the shards.

    Raises:
        DataError: The shards were made by another model or for another manifest.
    """
    from fashionlens.catalogue import index_catalogue
    from fashionlens.inference.shards import manifest_hash

    arrays = _arrays_of(directory, "embed")
    made_by = arrays.record["model"].get("model_id")
    if made_by != embedder.model_id:
        raise DataError(f"shards in {directory} were made by embedding model {made_by!r}, not {embedder.model_id!r}")
    if arrays.record.get("manifest_hash") != manifest_hash(manifest):
        raise DataError(f"shards in {directory} were made for another manifest than '{manifest.name}'")
    return index_catalogue(arrays.columns["embedding"], embedder, manifest, out_dir, kind, models, backend=backend,
                           storage=storage, **params)
