"""Per-label epoch selection (``tasks/tagging/epoch_selection.py``): frozen features and fine-tuning."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from fashionlens.data.records import Manifest
from fashionlens.engine import TrainConfig
from fashionlens.errors import ConfigError
from fashionlens.tasks.tagging import EpochSelectedHead, Tagger, TaggingConfig, ThresholdConfig, train_tagger
from fashionlens.tasks.tagging.thresholds import best_thresholds

from .conftest import QUIET, quick_config, rows_of, synthetic


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
