"""The registry of model kinds: every kind saves its kind into ``config.json`` and comes back through the one loader
(:func:`load_model`) as the same class with the same predictions; directories that are no model, or of no or an
unknown kind, are refused in one line naming the directory.

The models are the tiny ones of ``conftest.py`` (no training), so each round trip takes well under a second.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from fashionlens.errors import ModelError
from fashionlens.tasks.registry import load_model, model_kind, model_kinds
from fashionlens.tasks.retrieval import Embedder
from fashionlens.tasks.tagging import Tagger, TaggerEnsemble, load_tagger

from .conftest import TASK_MODELS, feature_width, tiny_hierarchy, tiny_tagger


def _outputs(model: Any, features: np.ndarray) -> dict[str, np.ndarray]:
    return model.head_outputs(features)


@pytest.mark.parametrize("name", sorted(TASK_MODELS))
def test_every_kind_round_trips_through_load_model(name: str, tmp_path: Path) -> None:
    model = TASK_MODELS[name]()
    model.save(tmp_path / name)
    assert json.loads((tmp_path / name / "config.json").read_text())["kind"] == model.kind == name.split("-")[0]
    assert model_kind(tmp_path / name) == model.kind
    loaded = load_model(tmp_path / name)
    assert type(loaded) is type(model)
    features = np.random.default_rng(0).normal(size=(5, feature_width()))
    before, after = _outputs(model, features), _outputs(loaded, features)
    assert sorted(before) == sorted(after) == sorted(model.output_names)
    for key in before:
        np.testing.assert_allclose(after[key], before[key], atol=1e-6, err_msg=key)
    assert loaded.backbone.weights_id == model.backbone.weights_id
    if model.finetuned:  # the fine-tuned backbone itself comes back, not a fresh one
        for key, value in model.backbone.state_dict().items():
            assert torch.equal(loaded.backbone.state_dict()[key], value), key
        images = torch.randn(2, 3, 64, 64)
        with torch.no_grad():
            assert torch.allclose(loaded.backbone(images), model.backbone(images), atol=1e-6)


def test_ensemble_round_trips_with_its_members(tmp_path: Path) -> None:
    members = [tiny_tagger("features"), tiny_tagger("per_label")]
    for i, member in enumerate(members):
        member.save(tmp_path / f"m{i}")
    ensemble = TaggerEnsemble(members, [1.0, 3.0], member_dirs=[str(tmp_path / "m0"), str(tmp_path / "m1")],
                              thresholds=np.array([0.2, 0.7], dtype=np.float32),
                              threshold_sets={2.0: np.array([0.2, 0.7], dtype=np.float32)})
    ensemble.save(tmp_path / "ensemble")
    assert model_kind(tmp_path / "ensemble") == "ensemble"
    for load in (load_model, load_tagger):
        loaded = load(tmp_path / "ensemble")
        assert isinstance(loaded, TaggerEnsemble)
        np.testing.assert_allclose(loaded.weights, [0.25, 0.75])
        np.testing.assert_allclose(loaded.thresholds_for(2.0), [0.2, 0.7])
        features = np.random.default_rng(0).normal(size=(4, feature_width()))
        for mine, theirs in zip(ensemble.members, loaded.members, strict=True):
            np.testing.assert_allclose(theirs.predict_features(features).tags, mine.predict_features(features).tags,
                                       atol=1e-6)


def test_every_kind_is_registered() -> None:
    assert sorted(model_kinds()) == ["embedder", "ensemble", "hierarchy", "tagger"]


def _one_line(error: pytest.ExceptionInfo[ModelError], *parts: str) -> None:
    message = str(error.value)
    assert "\n" not in message and all(part in message for part in parts), message


def test_load_model_refuses_what_is_no_model_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(ModelError) as missing:
        load_model(tmp_path / "absent")
    _one_line(missing, "not found", "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError) as no_config:
        load_model(tmp_path / "empty")
    _one_line(no_config, "empty", "no config.json")
    tiny_tagger("features").save(tmp_path / "old")
    config = json.loads((tmp_path / "old" / "config.json").read_text())
    (tmp_path / "old" / "config.json").write_text(json.dumps({k: v for k, v in config.items() if k != "kind"}))
    with pytest.raises(ModelError) as no_kind:
        load_model(tmp_path / "old")
    _one_line(no_kind, "old/config.json", "older fashionlens", '"kind"', "tagger")
    assert isinstance(Tagger.load(tmp_path / "old"), Tagger)  # the class loader still reads it
    (tmp_path / "old" / "config.json").write_text(json.dumps({**config, "kind": "segmenter"}))
    with pytest.raises(ModelError) as unknown:
        load_model(tmp_path / "old")
    _one_line(unknown, "old/config.json", "unknown model kind 'segmenter'", "embedder, ensemble, hierarchy, tagger")
    (tmp_path / "old" / "config.json").write_text("{not json")
    with pytest.raises(ModelError) as unreadable:
        load_model(tmp_path / "old")
    _one_line(unreadable, "old/config.json")


def test_a_model_of_another_kind_is_refused_by_name(tmp_path: Path) -> None:
    tiny_hierarchy("features").save(tmp_path / "hierarchy")
    with pytest.raises(ModelError) as typed:
        load_tagger(tmp_path / "hierarchy")
    _one_line(typed, "hierarchy", "'hierarchy', not 'tagger' or 'ensemble'")
    with pytest.raises(ModelError) as by_class:
        Embedder.load(tmp_path / "hierarchy")
    _one_line(by_class, "kind 'hierarchy', not 'embedder'")


def test_a_feature_model_checks_the_backbone_weights_it_was_trained_on(tmp_path: Path) -> None:
    tagger = tiny_tagger("features")
    tagger.weights_id = "sha256:elsewhere"
    tagger.save(tmp_path / "tagger")
    with pytest.raises(ModelError) as changed:
        _ = load_model(tmp_path / "tagger").backbone
    _one_line(changed, "sha256:elsewhere", "'random'")


def test_the_cli_refuses_a_model_of_no_or_another_kind_with_exit_2(tmp_path: Path,
                                                                  run_cli: Callable[..., Any]) -> None:
    tiny_hierarchy("features").save(tmp_path / "hierarchy")
    (tmp_path / "empty").mkdir()
    for model, culprit in ((tmp_path / "hierarchy", "'hierarchy', not 'tagger'"), (tmp_path / "empty", "empty")):
        outcome = run_cli("tag", "evaluate", "--model", model, "-m", tmp_path / "absent.parquet")
        assert outcome.exit_code == 2, outcome
        lines = [line for line in outcome.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and culprit in lines[0], outcome.stderr
