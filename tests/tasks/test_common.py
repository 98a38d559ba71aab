"""Saved-model directories: written whole, read back without running code, old layouts still load."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from rich.console import Console

from fashionlens.data.records import Manifest
from fashionlens.engine import TrainConfig
from fashionlens.errors import ModelError
from fashionlens.tasks.common import read_model_dir, save_model_dir
from fashionlens.tasks.tag_evaluation import load_tagger
from fashionlens.tasks.tagging import Tagger, TaggingConfig, train_tagger


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
    torch.save(state, tmp_path / "tagger" / "model.pt")
    loaded = Tagger.load(tmp_path / "tagger")
    np.testing.assert_allclose(loaded.predict_features(features[:5]).tags, tagger.predict_features(features[:5]).tags)


def test_model_pt_must_be_a_dictionary(tmp_path: Path) -> None:
    save_model_dir(tmp_path / "m", {}, {"config": {}})
    torch.save([torch.zeros(1)], tmp_path / "m" / "model.pt")
    with pytest.raises(ModelError, match=r"m/model\.pt holds a list"):
        read_model_dir(tmp_path / "m", ["config"])


def test_saving_something_that_would_not_load_writes_nothing(tmp_path: Path) -> None:
    save_model_dir(tmp_path / "m", {"head": {"w": torch.ones(1)}}, {"config": {"v": 1}})
    with pytest.raises(TypeError, match=r"numpy\.ndarray"):
        save_model_dir(tmp_path / "m", {"head": {"w": np.zeros(1)}}, {"config": {"v": 2}})
    state, documents = read_model_dir(tmp_path / "m", ["config"])
    assert documents["config"] == {"v": 1} and torch.equal(state["head"]["w"], torch.ones(1))
    assert [p.name for p in tmp_path.iterdir()] == ["m"]
