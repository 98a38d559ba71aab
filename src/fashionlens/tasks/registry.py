"""The registry of model kinds: what a saved model directory holds, and the one loader for every kind.

Each task model class registers itself under its ``kind`` (:func:`register_model`); ``save`` writes that kind into
the directory's ``config.json``, and :func:`load_model` reads it back to pick the class. Nothing guesses a model's
kind from the files it happens to hold. ``config.json`` also records the fashionlens version that wrote the model
(:data:`VERSION_KEY`); :func:`check_version` refuses a model built by another version where that matters (the models
shipped inside the package, :mod:`fashionlens.pretrained`).
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from fashionlens import __version__
from fashionlens.errors import ModelError

CONFIG_FILE = "config.json"
KIND_KEY = "kind"
VERSION_KEY = "fashionlens_version"
"""``config.json`` key of the fashionlens version that saved the model (absent in models of earlier versions)."""
_TASK_MODULES = ("fashionlens.tasks.tagging", "fashionlens.tasks.hierarchy", "fashionlens.tasks.retrieval")
"""Modules whose classes register the kinds (imported on first look-up: they import this module themselves)."""


ModelClass = TypeVar("ModelClass", bound=type)
_KINDS: dict[str, type[Any]] = {}


def register_model(cls: ModelClass) -> ModelClass:
    """Class decorator: register a model class under its ``kind`` attribute.

    Raises:
        ValueError: The class has no ``kind``, or another class holds it already.
    """
    kind = getattr(cls, "kind", None)
    if not isinstance(kind, str) or not kind:
        raise ValueError(f"{cls.__name__} needs a class attribute 'kind' to be registered")
    if _KINDS.get(kind, cls) is not cls:
        raise ValueError(f"model kind {kind!r} is already registered by {_KINDS[kind].__name__}")
    _KINDS[kind] = cls
    return cls


def model_kinds() -> dict[str, type[Any]]:
    """Every registered kind and its class."""
    for module in _TASK_MODULES:
        importlib.import_module(module)
    return dict(sorted(_KINDS.items()))


def model_kind(path: str | Path) -> str:
    """The kind recorded in a model directory's ``config.json``.

    Raises:
        ModelError: One line naming the directory: it is missing, has no (readable) ``config.json``, the file names
            no kind (a model saved by an older fashionlens), or an unknown one.
    """
    path = Path(path)
    config = _read_config(path)
    if config is None:
        raise ModelError(f"{path} is not a fashionlens model directory: it has no {CONFIG_FILE}")
    file = path / CONFIG_FILE
    known = model_kinds()
    kind = config.get(KIND_KEY)
    if kind is None:
        raise ModelError(f"{file} names no model kind (saved by an older fashionlens): add \"{KIND_KEY}\": "
                         f"\"<kind>\" to it, one of {', '.join(known)}, or retrain the model")
    if kind not in known:
        raise ModelError(f"{file} names an unknown model kind {kind!r}; known kinds: {', '.join(known)}")
    return str(kind)


def check_kind(path: str | Path, expected: str) -> None:
    """Refuse a directory whose ``config.json`` records another kind than ``expected`` (one that records none, from
    an earlier version, passes: a class's own loader still reads it).

    Raises:
        ModelError: Missing directory, unreadable ``config.json``, or another kind (both named).
    """
    config = _read_config(Path(path))
    kind = config.get(KIND_KEY) if config is not None else None
    if kind is not None and kind != expected:
        raise ModelError(f"{path} holds a model of kind {kind!r}, not {expected!r}")


def saved_version(path: str | Path) -> str | None:
    """The fashionlens version recorded in a model directory's ``config.json`` (``None``: not recorded)."""
    config = _read_config(Path(path))
    version = config.get(VERSION_KEY) if config is not None else None
    return None if version is None else str(version)


def check_version(path: str | Path, fix: str) -> None:
    """Refuse a model directory that was not saved by this fashionlens version.

    Args:
        path: The model directory.
        fix: What to do about it, for the message (e.g. ``"rebuild it with `make models`"``).

    Raises:
        ModelError: One line naming the directory, both versions and ``fix``.
    """
    version = saved_version(path)
    if version != __version__:
        built = f"fashionlens {version}" if version is not None else "an unrecorded fashionlens version"
        raise ModelError(f"{path} holds weights built for {built}, but this is fashionlens {__version__}: {fix}")


def _read_config(path: Path) -> dict[str, Any] | None:
    """A model directory's ``config.json`` as a mapping (``None`` when the file is absent)."""
    if not path.is_dir():
        raise ModelError(f"model directory not found: {path}")
    file = path / CONFIG_FILE
    if not file.is_file():
        return None
    try:
        config = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelError(f"cannot read {file}: {str(error).splitlines()[0]}") from error
    if not isinstance(config, dict):
        raise ModelError(f"{file} must hold a mapping of settings, not a {type(config).__name__}")
    return config


def load_model(path: str | Path, kinds: tuple[str, ...] | None = None) -> Any:
    """Load any saved model directory with the class its recorded kind names.

    Args:
        path: The model directory.
        kinds: Accept only these kinds (``None``: any).

    Raises:
        ModelError: See :func:`model_kind`; or the kind is not one of ``kinds``; or the directory's files are
            missing or inconsistent.
    """
    kind = model_kind(path)
    if kinds is not None and kind not in kinds:
        raise ModelError(f"{path} holds a model of kind {kind!r}, not {' or '.join(map(repr, kinds))}")
    loader: Callable[[str | Path], Any] = _KINDS[kind].load
    return loader(path)
