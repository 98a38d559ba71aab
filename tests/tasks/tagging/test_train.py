"""Training a tagger (``tasks/tagging/train.py``): loss weighting, threshold moving, modes, errors, real images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from fashionlens import metrics
from fashionlens.data.records import Manifest
from fashionlens.engine import TrainConfig
from fashionlens.errors import ConfigError, DataError
from fashionlens.tasks.labels import LabelSpace
from fashionlens.tasks.tagging import Predictions, Tagger, TaggingConfig, load_tagger, train_tagger
from fashionlens.tasks.tagging.thresholds import best_thresholds
from fashionlens.tasks.tagging.train import fold_assignment, out_of_fold_probs

from .conftest import QUIET, quick_config, rows_of, synthetic


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
    tuned = metrics.macro_fbeta(truth, plain.decide(predictions, beta=2.0), beta=2.0)
    assert tuned >= at_half  # thresholds are chosen on this very split, so they cannot do worse
    assert plain.thresholds_for(2.0)[0] < 0.5  # F2 favours recall on the rare label: its threshold moves down


@pytest.mark.slow  # two to twelve small fits: ~10-40 s on a loaded 2-core box
def test_weighted_training_raises_the_rare_labels_recall_at_half() -> None:
    manifest, features = synthetic(n=1000)
    recalls = {}
    for loss in ("bce", "weighted_bce"):
        tagger = train_tagger(manifest, quick_config("fixed", loss=loss, heads=[]), console=QUIET,
                              show_progress=False, features=features)
        test = rows_of(manifest, "test")
        truth = tagger.labels.tag_targets(manifest.split_subset("test"))[:, 0]
        decided = tagger.predict_features(features[test]).tags[:, 0] >= 0.5
        recalls[loss] = decided[truth == 1].mean()
    assert recalls["weighted_bce"] > recalls["bce"] + 0.1


def test_val_thresholds_are_the_config_beta_optimum_on_validation_predictions() -> None:
    manifest, features = synthetic()
    tagger = train_tagger(manifest, quick_config("val", heads=[], beta=2.0), console=QUIET, show_progress=False,
                          features=features)
    val = rows_of(manifest, "val")
    truth = tagger.labels.tag_targets(manifest.split_subset("val"))
    probs = tagger.predict_features(features[val]).tags
    for beta in (2.0, 1.0):
        np.testing.assert_allclose(tagger.thresholds_for(beta), best_thresholds(truth, probs, beta=beta).thresholds,
                                   rtol=1e-6)
    assert not np.allclose(tagger.thresholds_for(2.0), tagger.thresholds_for(1.0))


@pytest.mark.slow  # two to twelve small fits: ~10-40 s on a loaded 2-core box
def test_oof_thresholds_are_the_config_beta_optimum_on_out_of_fold_predictions() -> None:
    manifest, features = synthetic(n=300)
    config = quick_config("oof", heads=[], beta=2.0)
    config.train.epochs = 10
    tagger = train_tagger(manifest, config, console=QUIET, show_progress=False, features=features)
    pooled = np.concatenate([rows_of(manifest, "train"), rows_of(manifest, "val")])
    space = tagger.labels
    targets = space.tag_targets(manifest)
    epochs = int(tagger.metrics["refit_epochs"])
    probs = out_of_fold_probs(features, config, space, targets, {}, pooled, epochs, show_progress=False)
    np.testing.assert_allclose(tagger.thresholds_for(2.0), best_thresholds(targets[pooled], probs, 2.0).thresholds,
                               rtol=1e-6)
    np.testing.assert_allclose(tagger.thresholds_for(1.0), best_thresholds(targets[pooled], probs, 1.0).thresholds,
                               rtol=1e-6)
    folds = fold_assignment(len(pooled), 5, seed=0)
    assert sorted(np.bincount(folds)) == [48] * 5  # every train+val row is predicted exactly once
    assert tagger.metrics["threshold_method"] == "oof"


def test_default_threshold_method_is_out_of_fold_for_frozen_heads_and_plateau_for_finetuning() -> None:
    """The default holds on unseen photos: frozen heads pick thresholds on out-of-fold predictions, never on val."""
    manifest, features = synthetic()
    config = quick_config("auto", heads=[])
    config.train.epochs = 3
    tagger = train_tagger(manifest, config, console=QUIET, show_progress=False, features=features)
    assert tagger.metrics["threshold_method"] == "oof"
    assert TaggingConfig().thresholds.resolved("finetune") == "plateau"


@pytest.mark.slow  # two to twelve small fits: ~10-40 s on a loaded 2-core box
def test_oof_thresholds_hold_up_where_val_thresholds_overfit() -> None:
    """Four rare labels, a validation split with ~3 positives each: the exact F2 optimum on val fits those few
    positives (val F2 far above test F2), while thresholds picked on 5x more out-of-fold rows do better on a large
    test split."""
    rng = np.random.default_rng(1)
    n_train, n_val, n_test, dim = 400, 40, 4000, 8
    n = n_train + n_val + n_test
    features = rng.normal(size=(n, dim)).astype(np.float32)
    columns = {f"tag:l{j}": (features[:, j] + 1.2 * rng.normal(size=n) > 2.0).astype(np.float32) for j in range(4)}
    split = np.array(["train"] * n_train + ["val"] * n_val + ["test"] * n_test)
    manifest = Manifest(pd.DataFrame({"path": [f"/nonexistent/{i}.jpg" for i in range(n)], "split": split,
                                      **columns}), name="rare")
    test = rows_of(manifest, "test")
    truth = LabelSpace.from_manifest(manifest).tag_targets(manifest)
    scores = {}
    for method in ("val", "oof"):
        config = quick_config(method)
        config.hidden, config.train.epochs = 32, 15
        tagger = train_tagger(manifest, config, console=QUIET, show_progress=False, features=features)
        probs = tagger.predict_features(features[test]).tags
        scores[method] = metrics.macro_fbeta(truth[test], tagger.decide(Predictions(probs), beta=2.0), beta=2.0)
        if method == "val":
            val = rows_of(manifest, "val")
            val_probs = tagger.predict_features(features[val]).tags
            on_val = metrics.macro_fbeta(truth[val], tagger.decide(Predictions(val_probs), beta=2.0), beta=2.0)
            assert on_val > scores["val"] + 0.2  # val-only tuning overfits its 40 rows (0.67 there, 0.24 on test)
    assert scores["oof"] > scores["val"] + 0.1  # 0.44 on test


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
    np.testing.assert_allclose(predictions.tags, tagger.predict(manifest.subset(np.arange(len(manifest)) < 4),
                                                                show_progress=False).tags, atol=1e-5)
    assert np.isfinite(tagger.metrics["val_map"])


def test_finetune_mode_trains_the_backbone_and_reloads(shared_data: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from fashionlens.data.readers import read_clothing_attributes
    from fashionlens.data.splits import split_manifest
    from fashionlens.models.backbones import BackboneConfig, build_backbone
    from fashionlens.runtime import seed_everything

    monkeypatch.setenv("FASHIONLENS_CACHE", str(tmp_path / "cache"))  # fine-tuned weights: features not worth keeping
    manifest = read_clothing_attributes(shared_data / "clothing-attributes")
    manifest = split_manifest(manifest.subset(np.arange(len(manifest)) < 48), seed=0)
    config = TaggingConfig(mode="finetune", hidden=16, tags=["gender", "black"],
                           heads=["sleevelength"],
                           backbone=BackboneConfig(name="test_efficientnet", pretrained=False, num_workers=0,
                                                   batch_size=16, freeze=1),
                           train=TrainConfig(epochs=1, batch_size=8, monitor="val_loss", early_stop_patience=None))
    seed_everything(config.train.seed)  # train_tagger builds the same initial backbone right after this call
    initial = build_backbone(config.backbone, finetune=True)
    tagger = train_tagger(manifest, config, tmp_path / "tagger", console=QUIET, show_progress=False)
    trained = dict(tagger.backbone.named_parameters())
    frozen = [n for n, p in initial.named_parameters() if not p.requires_grad]
    unfrozen = [n for n, p in initial.named_parameters() if p.requires_grad]
    assert frozen and unfrozen
    for name, parameter in initial.named_parameters():
        if name in frozen:
            assert torch.equal(trained[name], parameter), name  # frozen stages stay bit-identical
    assert sum(not torch.equal(trained[n], dict(initial.named_parameters())[n]) for n in unfrozen) > len(unfrozen) / 2
    loaded = Tagger.load(tmp_path / "tagger")
    some = manifest.subset(np.arange(len(manifest)) < 3)
    before, after = tagger.predict(some, show_progress=False), loaded.predict(some, show_progress=False)
    np.testing.assert_allclose(before.tags, after.tags, atol=1e-5)
    np.testing.assert_allclose(before.heads["sleevelength"], after.heads["sleevelength"], atol=1e-5)
