"""Trained taggers (``tasks/tagging/model.py``): threshold sets, persistence, damaged directories."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fashionlens.errors import ModelError
from fashionlens.tasks.tagging import Tagger, evaluate_predictions, predictions_table, train_tagger

from .conftest import QUIET, quick_config, synthetic


def test_threshold_sets_decide_with_f1_by_default_and_name_positives(tmp_path: Path) -> None:
    manifest, features = synthetic()
    config = quick_config("val", heads=[], positive_names={"rare": "rare=yes"})
    tagger = train_tagger(manifest, config, tmp_path / "m", console=QUIET, show_progress=False, features=features)
    assert tagger.decision_beta == 1.0
    np.testing.assert_array_equal(tagger.thresholds, tagger.thresholds_for(1.0))
    loaded = Tagger.load(tmp_path / "m")
    for beta in (1.0, 2.0):
        np.testing.assert_array_equal(loaded.thresholds_for(beta), tagger.thresholds_for(beta))
    with pytest.raises(ModelError, match="beta"):
        loaded.thresholds_for(0.5)
    predictions = loaded.predict_features(features[:30])
    table = predictions_table([f"{i}.jpg" for i in range(30)], loaded, predictions)
    f2_table = predictions_table([f"{i}.jpg" for i in range(30)], loaded, predictions, beta=2.0)
    assert "p:rare=yes" in table and "p:common" in table
    decided = loaded.decide(predictions)
    assert table["tags"].tolist() == [";".join(n for n, d in zip(["rare=yes", "common"], row, strict=True) if d)
                                      for row in decided]
    assert (f2_table["tags"].str.len().sum() >= table["tags"].str.len().sum())  # F2 favours recall
    (tmp_path / "m" / "threshold_sets.json").unlink()  # an older model directory: only the config.beta set
    old = Tagger.load(tmp_path / "m")
    assert old.decision_beta == 2.0
    np.testing.assert_array_equal(old.thresholds, tagger.thresholds_for(2.0))


def test_train_save_load_predict_round_trip(tmp_path: Path) -> None:
    manifest, features = synthetic()
    tagger = train_tagger(manifest, quick_config(), tmp_path / "model", console=QUIET, show_progress=False,
                          features=features)
    assert {"config.json", "labels.json", "thresholds.json", "metrics.json", "model.safetensors"} <= {
        p.name for p in (tmp_path / "model").iterdir()}
    loaded = Tagger.load(tmp_path / "model")
    before, after = tagger.predict_features(features[:20]), loaded.predict_features(features[:20])
    np.testing.assert_allclose(before.tags, after.tags, rtol=1e-5)
    np.testing.assert_allclose(before.heads["shape"], after.heads["shape"], rtol=1e-5)
    np.testing.assert_array_equal(loaded.thresholds, tagger.thresholds)
    assert {k: v for k, v in loaded.metrics.items() if k != "threshold_method"} == pytest.approx(
        {k: v for k, v in tagger.metrics.items() if k != "threshold_method"}) and "val_map" in loaded.metrics
    (tmp_path / "model" / "metrics.json").unlink()  # optional: older or hand-made directories still load
    assert Tagger.load(tmp_path / "model").metrics == {}
    test = manifest.split_subset("test")
    test_rows = np.flatnonzero(manifest.frame["split"] == "test")
    evaluation = evaluate_predictions(loaded.labels, loaded.thresholds, loaded.predict_features(features[test_rows]),
                                      test, "test")
    assert evaluation.summary["top1_shape"] > 0.6  # 3 balanced-ish classes: chance is ~0.33
    assert evaluation.summary["mAP"] > 0.5


@pytest.mark.parametrize("damage", ["missing_thresholds", "short_thresholds", "missing_weights", "junk_weights"])
def test_damaged_model_directory_gives_one_line_error(tmp_path: Path, damage: str) -> None:
    manifest, features = synthetic(n=200)
    train_tagger(manifest, quick_config(heads=[]), tmp_path / "m", console=QUIET, show_progress=False,
                 features=features)
    if damage == "missing_thresholds":
        (tmp_path / "m" / "thresholds.json").unlink()
    elif damage == "short_thresholds":
        (tmp_path / "m" / "thresholds.json").write_text(json.dumps({"rare": 0.3}))
    elif damage == "junk_weights":
        (tmp_path / "m" / "model.safetensors").write_bytes(b"this is not a weights file")
    else:
        (tmp_path / "m" / "model.safetensors").unlink()
    with pytest.raises(ModelError) as error:
        Tagger.load(tmp_path / "m")
    assert "\n" not in str(error.value)
    assert str(tmp_path / "m") in str(error.value)
