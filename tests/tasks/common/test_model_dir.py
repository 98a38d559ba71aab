"""Saved model directories (``tasks/common/model_dir.py``): written whole through a real task model's ``save`` -- a
save that dies between two file writes leaves the previous model exactly as it was (or no model at all), a successful
re-save leaves no stale file behind -- and read back without running code, old layouts still loading.

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
import pandas as pd
import pytest
import torch
from rich.console import Console

from fashionlens.data.records import Manifest
from fashionlens.engine import TrainConfig
from fashionlens.errors import ModelError
from fashionlens.models.embedding import EmbeddingHead
from fashionlens.models.heads import TaggingHead
from fashionlens.tasks.common.model_dir import (
    LEGACY_WEIGHTS_FILE,
    WEIGHTS_FILE,
    head_in_features,
    read_model_dir,
    save_model_dir,
)
from fashionlens.tasks.labels import LabelSpace
from fashionlens.tasks.retrieval import Embedder, RetrievalConfig
from fashionlens.tasks.tagging import Tagger, TaggingConfig, load_tagger, train_tagger

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
    assert [p for p in tmp_path.rglob(WEIGHTS_FILE) if p.parent not in (target, tmp_path / "probe")] == []


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


def _small_tagger(out: Path) -> tuple[Tagger, np.ndarray]:
    rng = np.random.default_rng(0)
    features = rng.normal(size=(120, 8)).astype(np.float32)
    split = np.where(np.arange(120) < 80, "train", "val")
    frame = pd.DataFrame({"path": [f"/nonexistent/{i}.jpg" for i in range(120)], "split": split,
                          "tag:x": (features[:, 0] > 0).astype(np.float32)})
    config = TaggingConfig(train=TrainConfig(epochs=2, batch_size=32, monitor="val_map", mode="max"), hidden=8,
                           heads=[])
    tagger = train_tagger(Manifest(frame), config, out, console=Console(quiet=True), show_progress=False,
                          features=features)
    return tagger, features


def test_planted_model_pt_runs_no_code(tmp_path: Path, planted_pickle: Callable[[Path], Path]) -> None:
    _small_tagger(tmp_path / "tagger")
    (tmp_path / "tagger" / WEIGHTS_FILE).unlink()  # a directory of an earlier version: its model.pt is read
    marker = planted_pickle(tmp_path / "tagger" / "model.pt")
    for load in (Tagger.load, load_tagger):
        with pytest.raises(ModelError, match=r"tagger/model\.pt") as raised:
            load(tmp_path / "tagger")
        assert "\n" not in str(raised.value)
    assert not marker.exists()


def test_model_pt_of_earlier_versions_still_loads(tmp_path: Path) -> None:
    tagger, features = _small_tagger(tmp_path / "tagger")
    # Earlier versions wrote the same dictionary of state_dicts with a bare torch.save.
    state = {"head": tagger.head.state_dict()}
    (tmp_path / "tagger" / WEIGHTS_FILE).unlink()
    torch.save(state, tmp_path / "tagger" / LEGACY_WEIGHTS_FILE)
    loaded = Tagger.load(tmp_path / "tagger")
    np.testing.assert_allclose(loaded.predict_features(features[:5]).tags, tagger.predict_features(features[:5]).tags)


def test_model_pt_must_be_a_dictionary(tmp_path: Path) -> None:
    save_model_dir(tmp_path / "m", {}, {"config": {}})
    (tmp_path / "m" / WEIGHTS_FILE).unlink()
    torch.save([torch.zeros(1)], tmp_path / "m" / LEGACY_WEIGHTS_FILE)
    with pytest.raises(ModelError, match=r"m/model\.pt holds a list"):
        read_model_dir(tmp_path / "m", ["config"])


def test_saving_something_that_would_not_load_writes_nothing(tmp_path: Path) -> None:
    save_model_dir(tmp_path / "m", {"head": {"w": torch.ones(1)}}, {"config": {"v": 1}})
    with pytest.raises(TypeError, match=r"numpy\.ndarray"):
        save_model_dir(tmp_path / "m", {"head": {"w": np.zeros(1)}}, {"config": {"v": 2}})
    state, documents = read_model_dir(tmp_path / "m", ["config"])
    assert documents["config"] == {"v": 1} and torch.equal(state["head"]["w"], torch.ones(1))
    assert [p.name for p in tmp_path.iterdir()] == ["m"]


def test_weights_round_trip_through_safetensors_without_pickle(tmp_path: Path) -> None:
    """Every part comes back bit-identical, a part without tensors (an identity head) included, from a file that
    is safetensors (a JSON header, then raw tensor bytes) and never a pickle."""
    head = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    tied = torch.arange(6.0).reshape(2, 3)
    state = {"head": head.state_dict(), "backbone": {"a.weight": tied, "b.weight": tied[0]}, "empty": {}}
    save_model_dir(tmp_path / "m", state, {"config": {"v": 1}})
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", WEIGHTS_FILE]
    mode = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "m").iterdir()}
    assert mode[WEIGHTS_FILE] == mode["config.json"]  # readable like the other files (the umask's mode)
    raw = (tmp_path / "m" / WEIGHTS_FILE).read_bytes()
    header = int.from_bytes(raw[:8], "little")
    assert raw[8:9] == b"{" and json.loads(raw[8:8 + header])["head/0.weight"]["dtype"] == "F32"
    loaded, documents = read_model_dir(tmp_path / "m", ["config"])
    assert documents == {"config": {"v": 1}} and loaded.keys() == state.keys() and loaded["empty"] == {}
    for part, tensors in state.items():
        assert loaded[part].keys() == tensors.keys()
        for name, tensor in tensors.items():
            assert torch.equal(loaded[part][name], tensor) and loaded[part][name].dtype == tensor.dtype
    restored = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    restored.load_state_dict(loaded["head"])  # num_batches_tracked (int64) included
    with pytest.raises(TypeError, match="part names"):
        save_model_dir(tmp_path / "bad", {"head/x": {"w": torch.ones(1)}}, {"config": {}})


def test_damaged_safetensors_is_one_line_naming_the_file(tmp_path: Path) -> None:
    save_model_dir(tmp_path / "m", {"head": {"w": torch.ones(2)}}, {"config": {}})
    (tmp_path / "m" / WEIGHTS_FILE).write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{broken}")
    with pytest.raises(ModelError, match=rf"cannot load .*m/{WEIGHTS_FILE}") as raised:
        read_model_dir(tmp_path / "m", ["config"])
    assert "\n" not in str(raised.value)
    (tmp_path / "m" / WEIGHTS_FILE).unlink()
    with pytest.raises(ModelError, match=f"missing {WEIGHTS_FILE}"):
        read_model_dir(tmp_path / "m", ["config"])


def test_head_in_features_reads_the_first_dense_layer_of_a_plain_or_composite_head() -> None:
    plain = {"stem.0.weight": torch.zeros(8, 32), "stem.0.bias": torch.zeros(8), "out.weight": torch.zeros(3, 8)}
    composite = {"snapshots.0.hidden.0.weight": torch.zeros(4, 24), "snapshots.0.out.weight": torch.zeros(2, 4)}
    assert head_in_features(plain, "stem.0.weight") == 32
    assert head_in_features(composite, "hidden.0.weight") == 24
    with pytest.raises(ModelError, match=r"no 'hidden\.0\.weight' weight"):
        head_in_features(plain, "hidden.0.weight")
