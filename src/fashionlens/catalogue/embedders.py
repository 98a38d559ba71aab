"""Which embedder searches a catalogue index: the one check that an embedder built an index, and the embedder an
index records."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fashionlens.errors import CatalogueIndexError, ModelError
from fashionlens.index import CatalogueIndex
from fashionlens.index.catalogue import model_fix
from fashionlens.tasks.retrieval.model import Embedder


def check_embedder(index: CatalogueIndex, embedder: Embedder) -> None:
    """Check ``index`` was built by ``embedder``.

    Raises:
        CatalogueIndexError: Another model built it; the message names the fix (the recorded embedder, or
            ``--model DIR``).
    """
    if index.model_id != embedder.model_id:
        raise CatalogueIndexError(f"catalogue index was built with embedding model {index.model_id!r}, not "
                                  f"{embedder.model_id!r}; {model_fix(index.models.get('embedder'))}")


def index_embedder(index: CatalogueIndex, model: str | Path | None = None,
                   fallback: Callable[[], Embedder] | None = None) -> Embedder:
    """The embedder to search ``index`` with, checked against it.

    Args:
        index: The catalogue index.
        model: An embedder directory (wins over the index's record).
        fallback: Makes the embedder to use when neither ``model`` nor a recorded one exists (e.g. the untrained
            baseline); ``None``: an error naming the fix.

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
                             f"({error}); pass the embedder that built it (--model DIR)") from error
    elif fallback is not None:
        embedder = fallback()
    else:
        raise CatalogueIndexError(f"the catalogue index (embedding model {index.model_id!r}) records no embedder; "
                                  f"{model_fix(None)}")
    check_embedder(index, embedder)
    return embedder
