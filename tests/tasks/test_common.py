"""Saved model directories through a real task model's ``save``: a save that dies between two file writes leaves the
previous model exactly as it was (or no model at all), and a successful re-save leaves no stale file behind.

The fault is injected in the write primitives themselves (``torch.save``, ``json.dump``, ``Path.write_text`` and
``Path.write_bytes``), not in fashionlens' helpers, so the test holds whichever way the directory is swapped in.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from fashionlens.models.embedding import EmbeddingHead
from fashionlens.models.heads import TaggingHead
from fashionlens.tasks.labels import LabelSpace
from fashionlens.tasks.retrieval import Embedder, RetrievalConfig
from fashionlens.tasks.tagging import Tagger, TaggingConfig

TAGS = ["red", "striped", "long_sleeve"]


class Killed(Exception):
    """Stands for the process dying in the middle of a save."""


def _tagger(version: int) -> Tagger:
    torch.manual_seed(version)
    config = TaggingConfig(tags=TAGS, hidden=8, dropout=0.0)
    head = TaggingHead(16, len(TAGS), None, hidden=8, dropout=0.0)
    thresholds = np.array([0.2, 0.4, 0.6]) + 0.01 * version
    return Tagger(config, LabelSpace(tags=TAGS), head, thresholds, metrics_summary={"version": version})


def _embedder(version: int) -> Embedder:
    torch.manual_seed(version)
    head = EmbeddingHead(16, 8, None, normalize=True)
    return Embedder(RetrievalConfig(dim=8, hidden=None), head, weights_id=f"synthetic-{version}")


def _tagger_state(path: Path) -> tuple[Any, ...]:
    loaded = Tagger.load(path)
    return (loaded.metrics["version"], loaded.thresholds.tolist(),
            {k: v.tolist() for k, v in loaded.head.state_dict().items()})


def _embedder_state(path: Path) -> tuple[Any, ...]:
    loaded = Embedder.load(path)
    return int(loaded.weights_id.rsplit("-", 1)[1]), loaded.model_id, {
        k: v.tolist() for k, v in loaded.head.state_dict().items()}


#: name -> (make version n, what a loaded directory holds)
MODELS: dict[str, tuple[Callable[[int], Any], Callable[[Path], tuple[Any, ...]]]] = {
    "tagger": (_tagger, _tagger_state),
    "embedder": (_embedder, _embedder_state),
}


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


@contextmanager
def _writes(monkeypatch: pytest.MonkeyPatch, fail_at: int | None = None) -> Iterator[list[str]]:
    """Count the file writes made inside the block; the ``fail_at``-th one (1-based) raises :class:`Killed`."""
    calls: list[str] = []
    with monkeypatch.context() as patch:
        for owner, name in ((torch, "save"), (json, "dump"), (Path, "write_text"), (Path, "write_bytes")):
            original = getattr(owner, name)

            def write(*args: Any, _original: Any = original, _name: str = name, **kwargs: Any) -> Any:
                calls.append(_name)
                if len(calls) == fail_at:
                    raise Killed(f"killed at write {fail_at} ({_name})")
                return _original(*args, **kwargs)

            patch.setattr(owner, name, write)
        yield calls


@pytest.mark.parametrize("kind", list(MODELS))
def test_a_save_killed_between_writes_leaves_the_previous_model(kind: str, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    make, state_of = MODELS[kind]
    target = tmp_path / "model"
    with _writes(monkeypatch) as counted:
        make(2).save(tmp_path / "probe")
    assert len(counted) >= 3, f"only {counted} writes seen: the fault injector misses how models are written now"

    for fail_at in range(1, len(counted) + 1):  # a first save killed anywhere leaves no model at all
        with _writes(monkeypatch, fail_at), pytest.raises(Killed):
            make(2).save(target)
        assert not target.exists(), f"half a model left after write {fail_at} of a first save"

    make(1).save(target)
    before, state = _snapshot(target), state_of(target)
    for fail_at in range(1, len(counted) + 1):
        with _writes(monkeypatch, fail_at), pytest.raises(Killed):
            make(2).save(target)
        assert _snapshot(target) == before, f"model changed by a save killed at write {fail_at}"
        assert state_of(target) == state
    assert [p for p in tmp_path.rglob("model.pt") if p.parent not in (target, tmp_path / "probe")] == []


@pytest.mark.parametrize("kind", list(MODELS))
def test_a_resave_replaces_the_whole_directory(kind: str, tmp_path: Path) -> None:
    make, state_of = MODELS[kind]
    target = tmp_path / "model"
    make(1).save(target)
    (target / "report").mkdir()
    (target / "report" / "report.md").write_text("# figures of version 1\n")
    (target / "stale.json").write_text("{}")
    make(2).save(target)
    make(2).save(tmp_path / "fresh")
    assert sorted(_snapshot(target)) == sorted(_snapshot(tmp_path / "fresh"))  # nothing of version 1 is left
    assert state_of(target) == state_of(tmp_path / "fresh") and state_of(target)[0] == 2
