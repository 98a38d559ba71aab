"""Which embedder searches a catalogue index: the one check that an embedder built an index (its error names the
option that fixes it: ``--model`` on the command line, ``--embedder`` for the service), the embedder an index
records, and the untrained baseline when that is what built it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fashionlens.errors import CatalogueIndexError, FashionlensError, ModelError
from fashionlens.index import CatalogueIndex
from fashionlens.index.catalogue import model_fix
from fashionlens.models.backbones import BackboneConfig
from fashionlens.tasks.retrieval.model import Embedder

MODEL_OPTION = "--model"
"""The command line's option naming an embedder directory (the service's is ``--embedder``)."""


def check_embedder(index: CatalogueIndex, embedder: Embedder, option: str = MODEL_OPTION) -> None:
    """Check ``index`` was built by ``embedder``.

    Args:
        index: The catalogue index.
        embedder: The model that will embed the queries.
        option: The option that names an embedder where the caller takes one (for the fix in the message).

    Raises:
        CatalogueIndexError: Another model built it; the message names the fix (the recorded embedder, or
            ``option DIR``).
    """
    if index.model_id != embedder.model_id:
        raise CatalogueIndexError(f"catalogue index was built with embedding model {index.model_id!r}, not "
                                  f"{embedder.model_id!r}; {model_fix(index.models.get('embedder'), option)}")


def index_embedder(index: CatalogueIndex, model: str | Path | None = None,
                   fallback: Callable[[], Embedder] | None = None, option: str = MODEL_OPTION) -> Embedder:
    """The embedder to search ``index`` with, checked against it.

    Args:
        index: The catalogue index.
        model: An embedder directory (wins over the index's record).
        fallback: Makes the embedder to use when neither ``model`` nor a recorded one exists (e.g. the untrained
            baseline); ``None``: an error naming the fix.
        option: The caller's option for ``model`` (named in error messages).

    Raises:
        ModelError: The recorded or given embedder cannot be loaded.
        CatalogueIndexError: It did not build the index, or no embedder is known (the message names the fix).
    """
    recorded = index.models.get("embedder")
    if model is not None:
        embedder = Embedder.load(model)
    elif recorded is not None:
        try:
            embedder = Embedder.load(recorded)
        except ModelError as error:
            raise ModelError(f"the catalogue index records its embedder at {recorded}, which cannot be loaded "
                             f"({error}); pass the embedder that built it ({option} DIR)") from error
    elif fallback is not None:
        embedder = fallback()
    else:
        raise CatalogueIndexError(f"the catalogue index (embedding model {index.model_id!r}) records no embedder; "
                                  f"{model_fix(None, option)}")
    check_embedder(index, embedder, option)
    return embedder


def baseline_embedder(index: CatalogueIndex) -> Embedder | None:
    """The untrained baseline embedder (ImageNet features of the backbone named in the model id) when it is the
    model that built ``index``, else ``None``: it needs no files, so an index it built is searchable as it is."""
    model_id = index.model_id
    try:
        candidate = Embedder.untrained(BackboneConfig(name=model_id.split("|", 1)[0]),
                                       normalize=not model_id.endswith("|raw"))
    except FashionlensError:
        return None
    return candidate if candidate.model_id == model_id else None
