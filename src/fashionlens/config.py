"""Typed configuration: dataclasses loaded from YAML (or dicts), with unknown keys rejected by name."""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from fashionlens.errors import ConfigError

T = TypeVar("T")


def from_dict(cls: type[T], data: dict[str, Any] | None, where: str = "config") -> T:
    """Build dataclass ``cls`` from ``data``, recursing into nested dataclass fields.

    A class may define ``migrate_legacy(data) -> data`` (a static method) to rewrite the keys of configs written by
    earlier versions before they are read: the one place a renamed or moved key is mapped.

    Raises:
        ConfigError: An unknown key, or a value of the wrong kind, naming the key path.
    """
    data = dict(data or {})
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls} is not a dataclass")
    migrate = getattr(cls, "migrate_legacy", None)
    if callable(migrate):
        data = dict(migrate(data))
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown} in {where}; allowed: {sorted(fields)}")
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        hint = hints[name]
        candidates = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
        nested = next((c for c in candidates if dataclasses.is_dataclass(c)), None)
        if nested is not None and isinstance(value, dict):
            factory = fields[name].default_factory
            base = dataclasses.asdict(factory()) if callable(factory) else {}  # keep the field's own defaults
            kwargs[name] = from_dict(nested, {**base, **value}, where=f"{where}.{name}")  # type: ignore[arg-type]
        elif isinstance(value, list) and typing.get_origin(hint) is tuple:
            kwargs[name] = tuple(value)
        else:
            kwargs[name] = _coerce(value, candidates, f"{where}.{name}")
    try:
        return cls(**kwargs)
    except TypeError as error:
        raise ConfigError(f"invalid {where}: {error}") from error


def _coerce(value: Any, types_allowed: tuple[Any, ...], where: str) -> Any:
    """Check a scalar against the field's type; accept ints for floats and YAML's ``1e-3`` strings as numbers."""
    if value is None or any(t in (Any, object) or typing.get_origin(t) is not None or isinstance(t, str)
                            for t in types_allowed if t is not type(None)):
        return value
    allowed = [t for t in types_allowed if t is not type(None)]
    if any(isinstance(value, t) and not (t is int and isinstance(value, bool)) for t in allowed):
        return value
    if float in allowed and not isinstance(value, bool):
        try:
            return float(value)
        except (TypeError, ValueError):
            pass
    if int in allowed and isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    names = " or ".join(getattr(t, "__name__", str(t)) for t in allowed)
    raise ConfigError(f"{where} must be {names}, got {value!r}")


SHIPPED_CONFIGS = Path(__file__).with_name("configs")
"""The configs installed with fashionlens (task defaults and the seed papers' recipes under ``papers/``)."""


def shipped_configs() -> list[str]:
    """Names of the shipped configs, e.g. ``tagging_clothing_attributes``, ``papers/street2shop_triplet``."""
    return sorted(path.relative_to(SHIPPED_CONFIGS).with_suffix("").as_posix()
                  for path in SHIPPED_CONFIGS.rglob("*.yaml"))


def resolve_config(path: str | Path) -> Path:
    """A config file: ``path`` itself when it exists, else the shipped config of that name (``.yaml`` optional).

    Raises:
        ConfigError: Neither exists; the shipped names are listed.
    """
    given = Path(path)
    if given.is_file():
        return given
    name = given.as_posix().removesuffix(".yaml")
    shipped = SHIPPED_CONFIGS / f"{name}.yaml"
    if not given.is_absolute() and ".." not in given.parts and shipped.is_file():
        return shipped
    raise ConfigError(f"config file not found: {path} (nor a shipped config of that name; shipped: "
                      f"{', '.join(shipped_configs())})")


def load_config(cls: type[T], path: str | Path | None, overrides: dict[str, Any] | None = None) -> T:
    """Load ``cls`` from a YAML file or shipped config name (defaults when ``path`` is None), then apply ``overrides``.

    Args:
        cls: The config dataclass.
        path: A YAML file, or the name of a shipped config (:func:`shipped_configs`), e.g.
            ``tagging_clothing_attributes`` or ``papers/tagging_jd_fashion_style``.
        overrides: Dotted keys → values applied on top (``None`` values are skipped).
    """
    data: dict[str, Any] = {}
    if path is not None:
        path = resolve_config(path)
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as error:
            raise ConfigError(f"cannot parse YAML config {path}: {str(error).splitlines()[0]}") from error
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config {path} must be a mapping of keys to values, got {type(loaded).__name__}")
        data = loaded or {}
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        target = data
        *parents, leaf = key.split(".")
        for parent in parents:
            target = target.setdefault(parent, {})
        target[leaf] = value
    return from_dict(cls, data, where=str(path) if path else "config")


def to_dict(config: Any) -> dict[str, Any]:
    """A dataclass config as plain data (for saving next to a model)."""
    return dataclasses.asdict(config)
