"""Tagging task: label space, loss weighting, NaN masking, threshold moving, modes, persistence, ensembles."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from rich.console import Console

from fashionlens import metrics
from fashionlens.data.records import Manifest
from fashionlens.engine import TrainConfig
from fashionlens.errors import ConfigError, DataError, ModelError
from fashionlens.losses import label_weights
from fashionlens.tasks.labels import LabelSpace
from fashionlens.tasks.tag_evaluation import TaggerEnsemble, evaluate_predictions, load_tagger
from fashionlens.tasks.tagging import Tagger, TaggingConfig, TaggingObjective, train_tagger

QUIET = Console(quiet=True)


def synthetic(n: int = 600, dim: int = 16, seed: int = 0) -> tuple[Manifest, np.ndarray]:
    """Features where tag ``rare`` (8 % positives) and ``common`` depend on known directions, plus a 3-class head."""
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(n, dim)).astype(np.float32)
    rare = (features[:, 0] + 0.5 * rng.normal(size=n) > 1.4).astype(np.float32)
    common = (features[:, 1] + 0.5 * rng.normal(size=n) > 0).astype(np.float32)
    common[rng.random(n) < 0.2] = np.nan  # unlabelled entries
    head = np.array(["a", "b", "c"])[np.digitize(features[:, 2], [-0.5, 0.5])]
    split = np.where(np.arange(n) < n * 0.6, "train", np.where(np.arange(n) < n * 0.8, "val", "test"))
    frame = pd.DataFrame({"path": [f"/nonexistent/{i}.jpg" for i in range(n)], "split": split,
                          "tag:rare": rare, "tag:common": common, "class:shape": head})
    return Manifest(frame, name="synthetic"), features


def quick_config(**kwargs: object) -> TaggingConfig:
    train = TrainConfig(epochs=25, lr=3e-3, batch_size=64, monitor="val_map", mode="max", early_stop_patience=8)
    return TaggingConfig(train=train, hidden=64, dropout=0.1, **kwargs)  # type: ignore[arg-type]


def test_label_space_expands_heads_and_keeps_unlabelled_as_nan() -> None:
    frame = pd.DataFrame({"path": ["a", "b", "c", "d"], "tag:x": [1, 0, np.nan, 1],
                          "class:colour": ["Red", "Blue", "", "Red"]})
    manifest = Manifest(frame)
    space = LabelSpace.from_manifest(manifest, expand_heads=["colour"])
    assert space.tags == ["x", "colour=Blue", "colour=Red"]
    assert space.heads == {}
    targets = space.tag_targets(manifest)
    np.testing.assert_array_equal(targets[:, 0], [1, 0, np.nan, 1])
    np.testing.assert_array_equal(targets[:, 2], [1, 0, np.nan, 1])
    with pytest.raises(DataError, match="nope"):
        LabelSpace.from_manifest(manifest, tags=["nope"])


def test_objective_uses_ratio_weights_and_ignores_unlabelled() -> None:
    manifest, _ = synthetic()
    space = LabelSpace.from_manifest(manifest, heads=[])
    targets = space.tag_targets(manifest)
    train_rows = np.flatnonzero(manifest.frame["split"] == "train")
    objective = TaggingObjective(space, targets, {}, "weighted_bce", 2.0, train_rows)
    expected_pos, expected_neg = label_weights(targets[train_rows], positive_weight=2.0)
    assert objective.pos_weight is not None and objective.neg_weight is not None
    np.testing.assert_allclose(objective.pos_weight.numpy(), expected_pos)
    np.testing.assert_allclose(objective.neg_weight.numpy(), expected_neg)
    assert expected_pos[0] > expected_neg[0]  # the rare label's positives weigh more
    rows = torch.arange(50)
    logits = torch.zeros(50, 2, requires_grad=True)
    objective.loss_from_outputs({"tags": logits}, rows).backward()
    unlabelled = np.isnan(targets[:50, 1])
    assert unlabelled.any()
    assert torch.all(logits.grad[torch.as_tensor(unlabelled), 1] == 0)  # type: ignore[index]


def test_weighted_bce_and_threshold_moving_raise_macro_f2() -> None:
    manifest, features = synthetic()
    plain = train_tagger(manifest, quick_config(loss="bce", heads=[]), console=QUIET, show_progress=False,
                         features=features)
    val = manifest.split_subset("val")
    val_rows = np.flatnonzero(manifest.frame["split"] == "val")
    predictions = plain.predict_features(features[val_rows])
    truth = plain.labels.tag_targets(val)
    at_half = metrics.macro_fbeta(truth, predictions.tags >= 0.5, beta=2.0)
    tuned = metrics.macro_fbeta(truth, plain.decide(predictions), beta=2.0)
    assert tuned >= at_half  # thresholds are chosen on this very split, so they cannot do worse
    assert plain.thresholds[0] < 0.5  # F2 favours recall on the rare label: its threshold moves down


def test_train_save_load_predict_round_trip(tmp_path: Path) -> None:
    manifest, features = synthetic()
    tagger = train_tagger(manifest, quick_config(), tmp_path / "model", console=QUIET, show_progress=False,
                          features=features)
    assert {"config.json", "labels.json", "thresholds.json", "metrics.json", "model.pt"} <= {
        p.name for p in (tmp_path / "model").iterdir()}
    loaded = Tagger.load(tmp_path / "model")
    before, after = tagger.predict_features(features[:20]), loaded.predict_features(features[:20])
    np.testing.assert_allclose(before.tags, after.tags, rtol=1e-5)
    np.testing.assert_allclose(before.heads["shape"], after.heads["shape"], rtol=1e-5)
    np.testing.assert_array_equal(loaded.thresholds, tagger.thresholds)
    assert loaded.metrics == pytest.approx(tagger.metrics) and "val_map" in loaded.metrics
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
        (tmp_path / "m" / "model.pt").write_bytes(b"this is not a torch file")
    else:
        (tmp_path / "m" / "model.pt").unlink()
    with pytest.raises(ModelError) as error:
        Tagger.load(tmp_path / "m")
    assert "\n" not in str(error.value)
    assert str(tmp_path / "m") in str(error.value)


def test_per_label_mode_trains_each_label_and_rejects_unknown_overrides() -> None:
    manifest, features = synthetic()
    config = quick_config(mode="per_label", per_label_train={"rare": {"lr": 0.01, "epochs": 10}})
    tagger = train_tagger(manifest, config, console=QUIET, show_progress=False, features=features)
    val_rows = np.flatnonzero(manifest.frame["split"] == "val")
    predictions = tagger.predict_features(features[val_rows])
    assert predictions.tags.shape == (len(val_rows), 2)
    assert metrics.mean_average_precision(tagger.labels.tag_targets(manifest.split_subset("val")),
                                          predictions.tags) > 0.5
    with pytest.raises(ConfigError, match="nope"):
        train_tagger(manifest, quick_config(mode="per_label", per_label_train={"nope": {}}), console=QUIET,
                     show_progress=False, features=features)


@pytest.mark.parametrize("mode", ["features", "per_label"])
def test_label_without_training_positives_warns_and_falls_back(mode: str) -> None:
    manifest, features = synthetic(n=300)
    frame = manifest.frame.copy()
    frame.loc[frame["split"] == "train", "tag:rare"] = 0.0
    frame.loc[frame["split"] == "val", "tag:rare"] = 0.0
    with pytest.warns(UserWarning, match="rare"):
        tagger = train_tagger(Manifest(frame), quick_config(heads=[], mode=mode), console=QUIET,
                              show_progress=False, features=features)
    assert tagger.thresholds[tagger.labels.tags.index("rare")] == pytest.approx(0.5)


def test_empty_validation_split_is_a_clear_error() -> None:
    manifest, features = synthetic(n=100)
    frame = manifest.frame.copy()
    frame.loc[frame["split"] == "val", "split"] = "train"
    with pytest.raises(DataError, match=r"'val'.*empty"):
        train_tagger(Manifest(frame), quick_config(), console=QUIET, show_progress=False, features=features)


def test_ensemble_averages_member_probabilities(tmp_path: Path) -> None:
    manifest, features = synthetic()
    first = train_tagger(manifest, quick_config(), console=QUIET, show_progress=False, features=features)
    second_config = quick_config()
    second_config.train.seed = 7
    second = train_tagger(manifest, second_config, console=QUIET, show_progress=False, features=features)

    class FeatureTagger:
        """Members that predict from the synthetic features instead of images."""

        def __init__(self, tagger: Tagger):
            self.labels, self.tagger = tagger.labels, tagger

        def predict(self, rows: Manifest, device: str | None = None, show_progress: bool = True,  # type: ignore[no-untyped-def]
                    skip_bad_images: bool = False):
            index = [int(Path(p).stem) for p in rows.frame["path"]]
            return self.tagger.predict_features(features[index])

    ensemble = TaggerEnsemble([FeatureTagger(first), FeatureTagger(second)], weights=[3, 1])  # type: ignore[list-item]
    test = manifest.split_subset("test")
    combined = ensemble.predict(test)
    rows = np.flatnonzero(manifest.frame["split"] == "test")
    expected = 0.75 * first.predict_features(features[rows]).tags + 0.25 * second.predict_features(features[rows]).tags
    np.testing.assert_allclose(combined.tags, expected, rtol=1e-5)
    ensemble.fit_thresholds(manifest)
    assert ensemble.thresholds.shape == (2,)
    with pytest.raises(ModelError, match="weights"):
        TaggerEnsemble([first, second], weights=[1.0])


def test_ensemble_rejects_members_with_different_labels() -> None:
    manifest, features = synthetic(n=200)
    both = train_tagger(manifest, quick_config(heads=[]), console=QUIET, show_progress=False, features=features)
    only_rare = train_tagger(manifest, quick_config(heads=[], tags=["rare"]), console=QUIET, show_progress=False,
                             features=features)
    with pytest.raises(ModelError, match="different labels"):
        TaggerEnsemble([both, only_rare])


def test_real_images_end_to_end(shared_data: Path, tmp_path: Path) -> None:
    """A small tagger on real Clothing Attributes photos, trained, saved, loaded and run on image files."""
    from fashionlens.data.readers import read_clothing_attributes
    from fashionlens.data.splits import split_manifest

    manifest = read_clothing_attributes(shared_data / "clothing-attributes")
    manifest = split_manifest(manifest.subset(np.arange(len(manifest)) < 160), seed=0)
    config = quick_config(tags=["gender", "pattern_solid", "black"], heads=["sleevelength"])
    config.backbone.batch_size = 32
    tagger = train_tagger(manifest, config, tmp_path / "tagger", console=QUIET, show_progress=False)
    loaded = load_tagger(tmp_path / "tagger")
    paths = manifest.frame["path"].tolist()[:4]
    predictions = loaded.predict(Manifest(pd.DataFrame({"path": paths})), show_progress=False)
    assert predictions.tags.shape == (4, 3)
    assert np.all((predictions.tags >= 0) & (predictions.tags <= 1))
    assert tagger.metrics["val_map"] == pytest.approx(tagger.metrics["val_map"])  # finite


def test_finetune_mode_trains_the_backbone_and_reloads(shared_data: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from fashionlens.data.readers import read_clothing_attributes
    from fashionlens.data.splits import split_manifest
    from fashionlens.tasks.common import BackboneConfig

    monkeypatch.setenv("FASHIONLENS_CACHE", str(tmp_path / "cache"))  # fine-tuned weights: features not worth keeping
    manifest = read_clothing_attributes(shared_data / "clothing-attributes")
    manifest = split_manifest(manifest.subset(np.arange(len(manifest)) < 48), seed=0)
    config = TaggingConfig(mode="finetune", finetune_freeze=1, hidden=16, tags=["gender", "black"],
                           heads=["sleevelength"],
                           backbone=BackboneConfig(name="test_efficientnet", pretrained=False, num_workers=0,
                                                   batch_size=16),
                           train=TrainConfig(epochs=1, batch_size=8, monitor="val_loss", early_stop_patience=None))
    tagger = train_tagger(manifest, config, tmp_path / "tagger", console=QUIET, show_progress=False)
    assert tagger.backbone is not None
    loaded = Tagger.load(tmp_path / "tagger")
    some = manifest.subset(np.arange(len(manifest)) < 3)
    before, after = tagger.predict(some, show_progress=False), loaded.predict(some, show_progress=False)
    np.testing.assert_allclose(before.tags, after.tags, atol=1e-5)
    np.testing.assert_allclose(before.heads["sleevelength"], after.heads["sleevelength"], atol=1e-5)
