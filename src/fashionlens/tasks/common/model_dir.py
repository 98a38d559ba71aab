"""The saved-model directory convention of every task.

A saved model is one directory holding ``config.json`` (how it was built, with the model's ``kind`` -- see
:mod:`fashionlens.tasks.registry` -- and backbone ``weights_id``), ``labels.json`` (what it predicts),
``model.safetensors`` (weights), and whatever the task adds (``thresholds.json``, ``metrics.json``, a report). It is
written as a whole into a temporary directory and swapped into place, so a crash never leaves half a model
(:func:`fashionlens.io.atomic_dir`).

The weights are a plain mapping of a part name (``"head"``, ``"backbone"`` when fine-tuned; empty for an ensemble)
to that module's ``state_dict()``, stored flat in `safetensors <https://huggingface.co/docs/safetensors>`_ as
``"<part>/<parameter>"``: tensors only, no pickle, so loading a model cannot run code; every other setting lives in
the JSON files beside it. Directories written by earlier versions hold ``model.pt`` (a :func:`torch.save` of the
same mapping) instead; it is still read, with ``weights_only=True`` (:func:`fashionlens.io.load_torch`), and never
written. Such directories load unchanged through their class's ``load``;
:func:`~fashionlens.tasks.registry.load_model`, which reads the kind they do not record, names the key to add.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save

from fashionlens.distributed import is_main_process
from fashionlens.errors import ModelError, first_line
from fashionlens.io import atomic_dir, load_torch, write_json

WEIGHTS_FILE = "model.safetensors"
"""The weights of a model directory (safetensors: tensors only, no code)."""
LEGACY_WEIGHTS_FILE = "model.pt"
"""The weights of model directories written by earlier versions (read, never written)."""
_PART_SEPARATOR = "/"  # "<part>/<parameter>": parameter names hold dots, part names hold neither
_PARTS_KEY = "fashionlens_parts"  # safetensors metadata: every part, also those without tensors (an identity head)


def save_model_dir(path: str | Path, state: Mapping[str, Mapping[str, torch.Tensor]], json_files: Mapping[str, Any],
                   extra: Mapping[str, str | bytes] | None = None) -> Path:
    """Write a model directory atomically: :data:`WEIGHTS_FILE` from ``state`` (part name → state dict) plus
    ``<name>.json`` files and ``extra`` files.

    Under torchrun only rank 0 writes (every process trained the same weights).

    Raises:
        TypeError: ``state`` holds something other than tensors under string names; nothing is written.
    """
    path = Path(path)
    flat = _flatten(state)
    if not is_main_process():
        return path
    with atomic_dir(path) as tmp:
        # through bytes: safetensors' own file writer makes 0600 files, and a model must be readable like any other
        weights = save(flat, metadata={"format": "pt", _PARTS_KEY: json.dumps(list(state))})
        (tmp / WEIGHTS_FILE).write_bytes(weights)
        for name, content in json_files.items():
            write_json(tmp / f"{name}.json", content)
        for name, data in (extra or {}).items():
            target = tmp / name
            target.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(data, bytes):
                target.write_bytes(data)
            else:
                target.write_text(data, encoding="utf-8")
    return path


def read_model_dir(path: str | Path, required_json: Iterable[str],
                   optional_json: Iterable[str] = ()) -> tuple[dict[str, Any], dict[str, Any]]:
    """Load the weights (:data:`WEIGHTS_FILE`, or an earlier version's :data:`LEGACY_WEIGHTS_FILE`) and the named
    JSON files of a model directory (``optional_json`` ones when present).

    Returns:
        ``(state, documents)``: part name → state dict, and JSON file stem → parsed content.

    Raises:
        ModelError: The directory or one of its files is missing or unreadable (the file is named).
    """
    path = Path(path)
    if not path.is_dir():
        raise ModelError(f"model directory not found: {path}")
    documents: dict[str, Any] = {}
    optional = set(optional_json)
    for name in [*required_json, *optional]:
        file = path / f"{name}.json"
        if name in optional and not file.is_file():
            continue
        if not file.is_file():
            raise ModelError(f"model directory {path} is missing {file.name}")
        try:
            documents[name] = json.loads(file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise ModelError(f"cannot parse {file}: {error}") from error
    return read_weights(path), documents


def read_weights(path: str | Path) -> dict[str, Any]:
    """The weights of a model directory as part name → state dict.

    Raises:
        ModelError: No weights file, or one that is damaged or holds anything but tensors (the file is named).
    """
    path = Path(path)
    weights, legacy = path / WEIGHTS_FILE, path / LEGACY_WEIGHTS_FILE
    if weights.is_file():
        try:
            with safe_open(str(weights), framework="pt") as handle:
                parts = json.loads((handle.metadata() or {}).get(_PARTS_KEY, "[]"))
            return _unflatten(load_file(str(weights), device="cpu"), parts, weights)
        except (SafetensorError, json.JSONDecodeError) as error:
            raise ModelError(f"cannot load {weights}: {first_line(error)}") from error
    if not legacy.is_file():
        raise ModelError(f"model directory {path} is missing {WEIGHTS_FILE}")
    state = load_torch(legacy)
    if not isinstance(state, dict):
        raise ModelError(f"{legacy} holds a {type(state).__name__}, not a dictionary of state dicts")
    return state


def _flatten(state: Mapping[str, Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """``{part: {name: tensor}}`` → ``{"part/name": tensor}``, each tensor contiguous and owning its memory (what
    safetensors stores)."""
    flat: dict[str, torch.Tensor] = {}
    for part, tensors in state.items():
        if not isinstance(part, str) or not part or _PART_SEPARATOR in part or "." in part:
            raise TypeError(f"model part names must be plain non-empty strings, not {part!r}")
        for name, tensor in dict(tensors).items():
            if not isinstance(name, str) or not isinstance(tensor, torch.Tensor):
                raise TypeError(f"{part}[{name!r}] is a {type(tensor).__module__}.{type(tensor).__qualname__}: only "
                                f"tensors under string names are saved")
            flat[f"{part}{_PART_SEPARATOR}{name}"] = tensor.detach().cpu().contiguous().clone()
    return flat


def _unflatten(flat: Mapping[str, torch.Tensor], parts: list[str], file: Path) -> dict[str, Any]:
    """Inverse of :func:`_flatten` (``parts``: every part saved, from the file's metadata)."""
    state: dict[str, dict[str, torch.Tensor]] = {str(part): {} for part in parts}
    for key, tensor in flat.items():
        part, separator, name = key.partition(_PART_SEPARATOR)
        if not separator:
            raise ModelError(f"{file} holds tensor {key!r}, not one named '<part>{_PART_SEPARATOR}<parameter>'")
        state.setdefault(part, {})[name] = tensor
    return state


def head_in_features(head_state: Mapping[str, torch.Tensor], first_layer: str) -> int:
    """Width of the features a saved head reads: the input width of its first dense layer, the weight named
    ``first_layer`` (or, in a head made of several, the first weight whose name ends in ``.<first_layer>``).

    Raises:
        ModelError: The state holds no such weight.
    """
    key = first_layer if first_layer in head_state else next(
        (k for k in head_state if k.endswith("." + first_layer)), None)
    if key is None:
        raise ModelError(f"the saved head has no '{first_layer}' weight to read its feature width from")
    return int(head_state[key].shape[1])
