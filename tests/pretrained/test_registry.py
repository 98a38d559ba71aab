"""The shipped models: every registry entry is built by this version, loads by name and stays small; a directory
built by another version is refused in one line naming both versions and the fix; ``--model`` values resolve to a
shipped model or a directory; and the test figures recorded at build time agree with a fresh evaluation on the shared
test split (the card cannot drift from the weights)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from fashionlens import __version__
from fashionlens.errors import ModelError
from fashionlens.pretrained import (
    default_model,
    get_pretrained,
    list_pretrained,
    load_pretrained,
    pretrained_path,
    resolve_model,
)
from fashionlens.pretrained import registry as pretrained_registry
from fashionlens.pretrained.registry import CARD_FILE
from fashionlens.tasks.common import LEGACY_WEIGHTS_FILE, WEIGHTS_FILE
from fashionlens.tasks.registry import CONFIG_FILE, VERSION_KEY, model_kind

MAX_SHIPPED_BYTES = 25_000_000
"""The shipped weights together stay under this (issue 19)."""


def test_registry_names_kinds_and_defaults() -> None:
    entries = list_pretrained()
    names = [entry.name for entry in entries]
    assert len(set(names)) == len(names) and {"clothing-tagger", "product-hierarchy"} <= set(names)
    assert default_model("tagger").name == "clothing-tagger"
    assert default_model("hierarchy").name == "product-hierarchy"
    assert get_pretrained("product-hierarchy").kind == "hierarchy"
    with pytest.raises(ModelError, match="no shipped model named 'nope'; shipped: clothing-tagger, product-hier"):
        get_pretrained("nope")
    with pytest.raises(ModelError, match="no shipped model of kind 'no-kind'"):
        default_model("no-kind")


def test_shipped_models_are_built_by_this_version_and_load_by_name() -> None:
    total = 0
    for entry in list_pretrained():
        directory = pretrained_path(entry.name)
        assert entry.built and entry.version == __version__, f"{entry.name}: rebuild with `make models`"
        assert model_kind(directory) == entry.kind
        assert (directory / WEIGHTS_FILE).is_file() and not (directory / LEGACY_WEIGHTS_FILE).exists()
        model = load_pretrained(entry.name)
        assert model.kind == entry.kind and not model.finetuned  # frozen-feature heads: the backbone is not shipped
        figures = entry.test_figures()
        assert set(entry.headline) <= set(figures), f"{entry.name}: metrics.json lacks its test figures"
        card = (directory / CARD_FILE).read_text(encoding="utf-8")
        for key in entry.headline:  # the card shows the recorded figures, not others
            assert f"| {key} | {figures[key]:.3f} |" in card
        assert __version__ in card and "research-only" in card and "make models" in card
        total += entry.weights_bytes()
    assert 0 < total < MAX_SHIPPED_BYTES


@pytest.fixture
def shipped_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, save_small_hierarchy: Callable[..., Path]) -> Path:
    """A package models folder of this test holding a small hierarchy classifier as ``product-hierarchy``."""
    monkeypatch.setattr(pretrained_registry, "MODELS_DIR", tmp_path / "models")
    return save_small_hierarchy(tmp_path / "models" / "product-hierarchy")


def _record_version(directory: Path, version: str | None) -> None:
    config = json.loads((directory / CONFIG_FILE).read_text())
    if version is None:
        config.pop(VERSION_KEY)
    else:
        config[VERSION_KEY] = version
    (directory / CONFIG_FILE).write_text(json.dumps(config))


def test_a_model_built_by_another_version_is_refused(shipped_dir: Path) -> None:
    assert pretrained_path("product-hierarchy") == shipped_dir  # this version's: accepted
    _record_version(shipped_dir, "0.0.1")
    for load in (lambda: load_pretrained("product-hierarchy"), lambda: resolve_model(None, "hierarchy"),
                 lambda: resolve_model("product-hierarchy", "hierarchy")):
        with pytest.raises(ModelError) as raised:
            load()
        message = str(raised.value)
        assert "\n" not in message and "fashionlens 0.0.1" in message and f"fashionlens {__version__}" in message
        assert "make models" in message
    _record_version(shipped_dir, None)  # written before versions were recorded: refused as well
    with pytest.raises(ModelError, match="an unrecorded fashionlens version"):
        pretrained_path("product-hierarchy")


def test_an_unbuilt_shipped_model_names_the_fix(shipped_dir: Path) -> None:
    with pytest.raises(ModelError, match=r"shipped model .clothing-tagger. is not built .*`make models`"):
        resolve_model(None, "tagger")


def test_model_option_values_resolve(shipped_dir: Path, tmp_path: Path) -> None:
    assert resolve_model(None, "hierarchy") == shipped_dir
    assert resolve_model("product-hierarchy", "hierarchy") == shipped_dir
    assert resolve_model(str(shipped_dir), "tagger") == shipped_dir  # a directory: its loader checks the kind
    with pytest.raises(ModelError, match=r"'no-such' is neither a shipped model .* nor a model directory"):
        resolve_model("no-such", "tagger")


@pytest.mark.slow
def test_recorded_test_figures_agree_with_a_fresh_evaluation(shared_data: Path) -> None:
    """Each shipped model re-scored on the shared test split (features extracted afresh in this session's cache)
    gives the figures its metrics.json and card record, within the noise of the feature runtime."""
    for entry in list_pretrained():
        recorded = entry.test_figures()
        fresh = entry.recipe.evaluate(load_pretrained(entry.name), entry.recipe.manifest(shared_data))
        assert set(fresh) == set(recorded), entry.name
        assert fresh["rows"] == recorded["rows"]
        drift = {key: (recorded[key], fresh[key]) for key in fresh if abs(fresh[key] - recorded[key]) > 0.01}
        assert not drift, f"{entry.name}: recorded vs fresh test figures differ: {drift}"
