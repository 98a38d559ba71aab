"""Ready-to-use models shipped inside the package (see :mod:`fashionlens.pretrained.registry`).

>>> from fashionlens.pretrained import list_pretrained, load_pretrained
>>> tagger = load_pretrained("clothing-tagger")  # doctest: +SKIP
>>> tagger.predict_paths(["photo.jpg"])  # doctest: +SKIP
"""

from fashionlens.pretrained.registry import (
    PretrainedModel,
    default_model,
    get_pretrained,
    list_pretrained,
    load_pretrained,
    pretrained_path,
    resolve_model,
)

__all__ = ["PretrainedModel", "default_model", "get_pretrained", "list_pretrained", "load_pretrained",
           "pretrained_path", "resolve_model"]
