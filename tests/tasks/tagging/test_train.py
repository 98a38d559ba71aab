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
from fashionlens.losses import label_weights, masked_bce
from fashionlens.tasks.labels import LabelSpace
from fashionlens.tasks.tagging import (
    EpochSelectedHead,
    Predictions,
    Tagger,
    TaggerEnsemble,
    TaggingConfig,
    TaggingObjective,
    ThresholdConfig,
    evaluate_predictions,
    load_tagger,
    predictions_table,
    train_tagger,
)
from fashionlens.tasks.tagging.thresholds import best_thresholds
from fashionlens.tasks.tagging.train import fold_assignment, out_of_fold_probs

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


def quick_config(method: str = "val", **kwargs: object) -> TaggingConfig:
    train = TrainConfig(epochs=25, lr=3e-3, batch_size=64, monitor="val_map", mode="max", early_stop_patience=8)
    return TaggingConfig(train=train, hidden=64, dropout=0.1, thresholds=ThresholdConfig(method=method),
                         **kwargs)  # type: ignore[arg-type]


def rows_of(manifest: Manifest, split: str) -> np.ndarray:
    return np.flatnonzero(manifest.frame["split"] == split)


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
    tuned = metrics.macro_fbeta(truth, plain.decide(predictions, beta=2.0), beta=2.0)
    assert tuned >= at_half  # thresholds are chosen on this very split, so they cannot do worse
    assert plain.thresholds_for(2.0)[0] < 0.5  # F2 favours recall on the rare label: its threshold moves down


def test_training_loss_is_masked_bce_with_label_weights_on_fixed_logits() -> None:
    manifest, _ = synthetic()
    config = quick_config(heads=[], positive_weight=1.5, max_weight=5.0, label_importance={"common": 2.0})
    space = LabelSpace.from_manifest(manifest, heads=[])
    targets = space.tag_targets(manifest)
    train_rows = rows_of(manifest, "train")
    objective = TaggingObjective.from_config(config, space, targets, {}, train_rows)
    pos, neg = label_weights(targets[train_rows], positive_weight=1.5, max_weight=5.0, importance=[1.0, 2.0])
    logits = torch.linspace(-3, 3, 2 * len(manifest)).reshape(-1, 2)
    rows = torch.arange(len(manifest))
    expected = masked_bce(logits, torch.as_tensor(targets), torch.as_tensor(pos), torch.as_tensor(neg))
    assert float(objective.loss_from_outputs({"tags": logits}, rows)) == pytest.approx(float(expected), rel=1e-6)
    unweighted = masked_bce(logits, torch.as_tensor(targets))
    assert float(expected) != pytest.approx(float(unweighted), rel=1e-3)  # the weights matter on these logits


def test_bce_honours_the_positive_weight_k() -> None:
    """``loss: bce`` is the street-fashion paper's eq. 1: K on positives, 1 on negatives (no longer ignored)."""
    manifest, _ = synthetic()
    space = LabelSpace.from_manifest(manifest, heads=[])
    targets = space.tag_targets(manifest)
    objective = TaggingObjective(space, targets, {}, "bce", 2.0, rows_of(manifest, "train"))
    assert objective.pos_weight is not None and objective.neg_weight is not None
    np.testing.assert_allclose(objective.pos_weight.numpy(), [2.0, 2.0])
    np.testing.assert_allclose(objective.neg_weight.numpy(), [1.0, 1.0])


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
                    skip_bad_images: bool = False, runtime: str | None = None):
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


@pytest.mark.slow  # two to twelve small fits: ~10-40 s on a loaded 2-core box
def test_per_label_epoch_selection_keeps_each_labels_best_val_epoch(tmp_path: Path) -> None:
    """Each tag reads the head snapshot of the epoch where its val F-beta peaked, so no tag's val F-beta (at its best
    threshold) falls below the single best-epoch model's; the snapshots save and load."""
    manifest, features = synthetic()
    config = quick_config("val", heads=[])
    single = train_tagger(manifest, config, console=QUIET, show_progress=False, features=features)
    selected_config = quick_config("val", heads=[], select_epoch="per_label")
    selected = train_tagger(manifest, selected_config, tmp_path / "m", console=QUIET, show_progress=False,
                            features=features)
    val = rows_of(manifest, "val")
    truth = single.labels.tag_targets(manifest.split_subset("val"))
    best_single = best_thresholds(truth, single.predict_features(features[val]).tags, 2.0).best_fbeta
    best_selected = best_thresholds(truth, selected.predict_features(features[val]).tags, 2.0).best_fbeta
    assert np.all(best_selected >= best_single - 1e-9)
    head = selected.head
    assert isinstance(head, EpochSelectedHead)
    for j, snapshot in enumerate(head.choice.tolist()):
        alone = head.snapshots[snapshot](torch.as_tensor(features[:5]))["tags"][:, j]
        np.testing.assert_allclose(selected.predict_features(features[:5]).tags[:, j],
                                   torch.sigmoid(alone).detach().numpy(), rtol=1e-5)
    loaded = Tagger.load(tmp_path / "m")
    np.testing.assert_allclose(loaded.predict_features(features[:20]).tags,
                               selected.predict_features(features[:20]).tags, rtol=1e-5)
    with pytest.raises(ConfigError, match="select_epoch"):
        quick_config("oof", select_epoch="per_label")


def _colour_images(root: Path, n: int = 40) -> Manifest:
    """``n`` small photos where ``red`` means a red picture and ``striped`` horizontal stripes, with label noise;
    half train, half val."""
    from PIL import Image

    rng = np.random.default_rng(0)
    red, striped = rng.random(n) < 0.5, rng.random(n) < 0.4
    paths = []
    for i in range(n):
        pixels = rng.integers(0, 200, size=(48, 48, 3), dtype=np.uint8)
        pixels[..., 0 if red[i] else 2] += 40
        if striped[i]:
            pixels[::6] = 200
        paths.append(str(root / f"{i}.png"))
        Image.fromarray(pixels).save(paths[-1])
    red ^= rng.random(n) < 0.2  # label noise: the val F-beta of each tag peaks at its own epoch
    striped ^= rng.random(n) < 0.2
    split = np.where(np.arange(n) < n // 2, "train", "val")
    return Manifest(pd.DataFrame({"path": paths, "split": split, "tag:red": red.astype(np.float32),
                                  "tag:striped": striped.astype(np.float32)}), name="colours")


@pytest.mark.slow  # two 4-epoch fine-tunings of the tiny backbone on 40 photos: ~3 s idle, up to 60 s on a loaded box
def test_finetune_per_label_epoch_selection_scores_snapshots_on_the_shipped_backbone(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``select_epoch: per_label`` when fine-tuning: snapshot 0 is exactly the plain run's head (same seed), each
    tag's chosen snapshot is the best of the kept ones on the shipped backbone's val features, and the model saves
    and loads with its backbone and snapshots."""
    from fashionlens.models.backbones import BackboneConfig
    from fashionlens.tasks.common import frozen_features

    monkeypatch.setenv("FASHIONLENS_CACHE", str(tmp_path / "cache"))  # fine-tuned weights: features not worth keeping
    (tmp_path / "images").mkdir()
    manifest = _colour_images(tmp_path / "images")
    tiny = BackboneConfig(name="test_efficientnet", pretrained=False, num_workers=0, batch_size=16, freeze=1)
    train = TrainConfig(epochs=4, lr=3e-2, batch_size=8, monitor="val_loss", mode="min", early_stop_patience=None)
    plain_config = TaggingConfig(mode="finetune", hidden=16, dropout=0.0, heads=[], backbone=tiny, train=train,
                                 thresholds=ThresholdConfig(method="plateau"))
    config = TaggingConfig(**{**plain_config.__dict__, "select_epoch": "per_label"})
    plain = train_tagger(manifest, plain_config, console=QUIET, show_progress=False)
    selected = train_tagger(manifest, config, tmp_path / "m", console=QUIET, show_progress=False)

    head = selected.head
    assert isinstance(head, EpochSelectedHead)
    for name, value in plain.head.state_dict().items():  # tracking the epochs leaves the training run as it was
        torch.testing.assert_close(head.snapshots[0].state_dict()[name], value)
    val = manifest.split_subset("val")
    features = torch.as_tensor(frozen_features(val, tiny, backbone=selected.backbone, show_progress=False))
    truth = selected.labels.tag_targets(val)
    with torch.no_grad():
        scores = np.stack([best_thresholds(truth, torch.sigmoid(s(features)["tags"]).numpy(), 2.0).best_fbeta
                           for s in head.snapshots])  # (snapshots, L)
    choice = np.asarray(head.state_dict()["choice"])
    chosen = scores[choice, np.arange(truth.shape[1])]
    np.testing.assert_allclose(chosen, np.nanmax(scores, axis=0))
    assert len(head.snapshots) > 1  # in this run a tag peaks before the monitor's epoch...
    assert np.all(chosen[choice > 0] > scores[0][choice > 0])  # ...strictly above it
    assert selected.metrics["threshold_method"] == "plateau"

    loaded = Tagger.load(tmp_path / "m")
    assert isinstance(loaded.head, EpochSelectedHead)
    np.testing.assert_array_equal(loaded.head.state_dict()["choice"], choice)
    np.testing.assert_allclose(loaded.predict(val, show_progress=False).tags,
                               selected.predict(val, show_progress=False).tags, atol=1e-5)
    np.testing.assert_array_equal(loaded.thresholds_for(2.0), selected.thresholds_for(2.0))
    with pytest.raises(ConfigError, match="select_epoch"):
        TaggingConfig(mode="per_label", select_epoch="per_label")


def test_per_label_epoch_selection_without_tags_saves_and_loads(tmp_path: Path) -> None:
    """Only multi-class heads: no snapshots are taken, and the saved plain head loads back."""
    manifest, features = synthetic()
    tagger = train_tagger(manifest, quick_config("val", tags=[], select_epoch="per_label"), tmp_path / "m",
                          console=QUIET, show_progress=False, features=features)
    loaded = Tagger.load(tmp_path / "m")
    np.testing.assert_allclose(loaded.predict_features(features[:5]).heads["shape"],
                               tagger.predict_features(features[:5]).heads["shape"], rtol=1e-5)
