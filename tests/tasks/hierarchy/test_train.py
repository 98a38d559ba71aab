"""Training a hierarchy classifier (``tasks/hierarchy/train.py``): a small end-to-end train on real images, the CLI,
fine-tuning and LP-FT."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from rich.console import Console
from typer.testing import CliRunner

from fashionlens.config import from_dict
from fashionlens.data.records import Manifest
from fashionlens.data.splits import split_manifest
from fashionlens.errors import ConfigError, ModelError
from fashionlens.models.backbones import BackboneConfig
from fashionlens.tasks.common import frozen_features
from fashionlens.tasks.hierarchy import HierarchyClassifier, HierarchyConfig, evaluate_hierarchy, train_hierarchy

# Six articleTypes from four subCategories and three masterCategories, 40 images each: small enough to extract
# features in well under a minute on a cold cache, varied enough that chance is 1/6.
SUBSET = ("Tshirts", "Shirts", "Jeans", "Casual Shoes", "Handbags", "Watches")


PER_CLASS = 40


#: What ``backbone.freeze: 1`` keeps frozen in timm's ``test_efficientnet``: the stem and the first stage.
FROZEN_BY_ONE_STAGE = ("model.conv_stem.", "model.bn1.", "model.blocks.0.")


@pytest.fixture(scope="module")
def small_real(shared_data: Path) -> tuple[Manifest, np.ndarray]:
    from fashionlens.data.readers.fashion_product import read_fashion_product_images

    manifest = read_fashion_product_images(shared_data / "fashion-product-images")
    article = manifest.class_column("articleType")
    keep = np.zeros(len(manifest), dtype=bool)
    for name in SUBSET:
        keep[np.flatnonzero(article == name)[:PER_CLASS]] = True
    subset = split_manifest(manifest.subset(keep), (0.6, 0.4, 0.0), seed=0, stratify="articleType")
    return subset, frozen_features(subset, BackboneConfig(), show_progress=False)


def test_small_end_to_end_train_beats_chance_and_roundtrips(small_real: tuple[Manifest, np.ndarray],
                                                            tmp_path: Path) -> None:
    manifest, features = small_real
    config = from_dict(HierarchyConfig, {"variant": "hmcn_mtl", "hidden": 128,
                                         "train": {"epochs": 12, "batch_size": 48, "early_stop_patience": None}})
    classifier = train_hierarchy(manifest, config, tmp_path / "model", features=features,
                                 console=Console(quiet=True), show_progress=False)
    assert classifier.taxonomy.sizes == [3, 5, 6]
    assert classifier.metrics["val"]["top1"] > 0.6  # chance is 1/6
    assert classifier.metrics["sigma_local"] > 0 and classifier.metrics["sigma_global"] > 0
    loaded = HierarchyClassifier.load(tmp_path / "model")
    evaluation, predictions = evaluate_hierarchy(loaded, manifest, "val", features=features)
    assert evaluation.summary["top1"] == pytest.approx(classifier.metrics["val"]["top1"])
    assert loaded.taxonomy.is_consistent(predictions.paths).all()
    table = predictions.table(manifest.split_subset("val").frame["path"].tolist())
    assert table["category"].str.count(" > ").eq(2).all()
    (tmp_path / "model" / "model.safetensors").write_bytes(b"")
    with pytest.raises(ModelError, match=r"cannot load .*model\.safetensors"):
        HierarchyClassifier.load(tmp_path / "model")


def test_cli_train_evaluate_predict(small_real: tuple[Manifest, np.ndarray], tmp_path: Path) -> None:
    from fashionlens.cli.hierarchy import app

    manifest, _ = small_real
    manifest_path = manifest.save(tmp_path / "subset.parquet")
    model = tmp_path / "flat"
    runner = CliRunner()
    trained = runner.invoke(app, ["train", "-m", str(manifest_path), "-o", str(model), "--variant", "flat",
                                  "--epochs", "5", "--min-count", "0"])
    assert trained.exit_code == 0, trained.output
    evaluated = runner.invoke(app, ["evaluate", "--model", str(model), "-m", str(manifest_path), "--split", "val"])
    assert evaluated.exit_code == 0, evaluated.output
    assert json.loads((model / "report" / "metrics.json").read_text())["val"]["consistency"] == 1.0
    assert (model / "report" / "confusion_masterCategory.png").is_file()
    out = tmp_path / "predictions.csv"
    predicted = runner.invoke(app, ["predict", "--model", str(model), "-m", str(manifest_path), "-o", str(out)])
    assert predicted.exit_code == 0, predicted.output
    assert len(pd.read_csv(out)) == len(manifest)


def test_training_survives_a_last_batch_of_one_row() -> None:
    rng = np.random.default_rng(0)
    leaves = ["Jeans", "Skirt", "Tee"] * 3 + ["Tee"]  # 9 training rows in batches of 8 leave a batch of one
    parents = {"Jeans": "lower", "Skirt": "lower", "Tee": "upper"}
    frame = pd.DataFrame({"path": [f"{i}.jpg" for i in range(13)],
                          "split": ["train"] * 9 + ["val"] * 4,
                          "class:type": [parents[c] for c in leaves] + ["lower", "lower", "upper"],
                          "class:category": [*leaves, "Jeans", "Skirt", "Tee"]})
    features = rng.normal(size=(13, 8)).astype(np.float32)
    config = from_dict(HierarchyConfig, {"variant": "hmcn", "hidden": 16, "taxonomy": {"levels": ["type", "category"]},
                                         "train": {"epochs": 2, "batch_size": 8}})
    classifier = train_hierarchy(Manifest(frame), config, features=features, console=Console(quiet=True),
                                 show_progress=False)
    assert classifier.metrics["epochs_run"] == 2


def test_finetune_mode_trains_the_backbone_and_reloads(small_real: tuple[Manifest, np.ndarray], tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch, built_backbones: Any) -> None:
    monkeypatch.setenv("FASHIONLENS_CACHE", str(tmp_path / "cache"))  # fine-tuned weights: features not worth keeping
    manifest, _ = small_real
    manifest = manifest.subset(np.arange(len(manifest)) % 4 == 0)  # 60 images
    config = from_dict(HierarchyConfig, {
        "mode": "finetune", "hidden": 16,
        "backbone": {"name": "test_efficientnet", "pretrained": False, "num_workers": 0, "batch_size": 16, "freeze": 1},
        "train": {"epochs": 1, "batch_size": 8, "early_stop_patience": None}})
    classifier = train_hierarchy(manifest, config, tmp_path / "model", console=Console(quiet=True),
                                 show_progress=False)
    built_backbones.assert_finetuned(frozen=FROZEN_BY_ONE_STAGE)
    loaded = HierarchyClassifier.load(tmp_path / "model")
    some = manifest.subset(np.arange(len(manifest)) < 3)
    before = classifier.predict(some, show_progress=False)
    after = loaded.predict(some, show_progress=False)
    for one, other in zip(before.probabilities, after.probabilities, strict=True):
        np.testing.assert_allclose(one, other, atol=1e-5)


def test_finetune_starts_from_a_probed_head(small_real: tuple[Manifest, np.ndarray], tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FASHIONLENS_CACHE", str(tmp_path / "cache"))
    manifest, _ = small_real
    manifest = manifest.subset(np.arange(len(manifest)) % 6 == 0)  # 40 images
    backbone = {"name": "test_efficientnet", "pretrained": False, "num_workers": 0, "batch_size": 16}
    quiet = Console(quiet=True)
    probe = train_hierarchy(manifest, from_dict(HierarchyConfig, {"hidden": 16, "backbone": backbone,
                                                                  "train": {"epochs": 2, "batch_size": 8}}),
                            tmp_path / "probe", console=quiet, show_progress=False)
    # A vanishing learning rate leaves the fine-tuned head where it started: at the probe's weights, or at random.
    finetune = {"mode": "finetune", "hidden": 16, "backbone": {**backbone, "freeze": 1},
                "train": {"epochs": 1, "batch_size": 8, "lr": 1e-12, "early_stop_patience": None}}
    seeded = train_hierarchy(manifest, from_dict(HierarchyConfig, {**finetune, "init_head": str(tmp_path / "probe")}),
                             console=quiet, show_progress=False)
    unseeded = train_hierarchy(manifest, from_dict(HierarchyConfig, finetune), console=quiet, show_progress=False)
    probed = dict(probe.head.named_parameters())
    for name, parameter in seeded.head.named_parameters():
        np.testing.assert_allclose(parameter.detach().numpy(), probed[name].detach().numpy(), atol=1e-6)
    assert not np.allclose(dict(unseeded.head.named_parameters())["stem.0.weight"].detach().numpy(),
                           probed["stem.0.weight"].detach().numpy(), atol=1e-3)

    with pytest.raises(ModelError, match="features-mode one of"):  # head of another width
        train_hierarchy(manifest, from_dict(HierarchyConfig, {**finetune, "hidden": 8,
                                                              "init_head": str(tmp_path / "probe")}),
                        console=quiet, show_progress=False)
    with pytest.raises(ConfigError, match="init_head only applies to mode 'finetune'"):
        from_dict(HierarchyConfig, {"init_head": str(tmp_path / "probe")})
