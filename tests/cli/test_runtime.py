"""``--runtime``: every command that runs a backbone accepts ``torch`` and ``onnx`` and gives the same answers on both;
an unknown runtime is one line."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from fashionlens.data.records import Manifest
from fashionlens.models import BackboneConfig
from fashionlens.models.heads import TaggingHead
from fashionlens.tasks.labels import LabelSpace
from fashionlens.tasks.tagging import Tagger, TaggingConfig

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def setup(shared_data: Path, tmp_path_factory: pytest.TempPathFactory,
          save_small_hierarchy: Callable[..., Path]) -> tuple[Path, list[Path], Path]:
    """A tagger and a hierarchy model on EfficientNet-Lite0 (heads assembled, not trained), photos, a manifest."""
    folder = tmp_path_factory.mktemp("runtime-cli")
    backbone = BackboneConfig(num_workers=0)
    torch.manual_seed(0)
    labels = LabelSpace(tags=["red", "striped"], heads={"sleeve": ["long", "short"]})
    Tagger(TaggingConfig(backbone=backbone, hidden=16), labels, TaggingHead(1280, 2, {"sleeve": 2}, 16, 0.0),
           np.full(2, 0.5)).save(folder / "tagger")
    save_small_hierarchy(folder / "hierarchy", backbone)
    photos = sorted((shared_data / "fashion-product-images" / "images").glob("*.jpg"))[:6]
    manifest = folder / "catalogue.parquet"
    Manifest(pd.DataFrame({"path": [str(p) for p in photos], "item_id": [p.stem for p in photos],
                           "domain": "shop"}), name="catalogue").save(manifest)
    return folder, photos, manifest


def numbers(table: Path) -> np.ndarray:
    frame = pd.read_csv(table)
    return frame.select_dtypes("number").to_numpy(dtype=float)


@pytest.mark.parametrize("command", ["tag", "hierarchy", "hierarchy-sharded", "index", "search"])
def test_every_command_runs_on_both_runtimes_alike(command: str, setup: tuple[Path, list[Path], Path],
                                                   run_cli: Callable[..., Any], tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    folder, photos, manifest = setup
    results = {}
    for runtime in ("torch", "onnx"):
        monkeypatch.setenv("FASHIONLENS_CACHE", str(tmp_path / f"cache-{runtime}"))  # no shared feature vectors
        out = tmp_path / runtime
        out.mkdir()
        if command == "tag":
            args = ["tag", "predict", *photos, "--model", folder / "tagger", "-o", out / "tags.csv"]
        elif command.startswith("hierarchy"):
            args = ["hierarchy", "predict", *photos, "--model", folder / "hierarchy", "-o", out / "paths.csv"]
            if command == "hierarchy-sharded":
                args += ["--engine", "local", "--shards", out / "shards", "--shard-size", "4"]
        else:
            args = ["index", "build", "-m", manifest, "-o", out / "index"]
            if command == "search":
                assert run_cli(*args, "--runtime", runtime).exit_code == 0
                args = ["search", *photos[:2], "--index", out / "index", "--k", "3", "--json"]
        outcome = run_cli(*args, "--runtime", runtime)
        assert outcome.exit_code == 0, outcome.stderr
        results[runtime] = outcome.stdout
        if command in ("tag", "hierarchy", "hierarchy-sharded"):
            table = next(out.glob("*.csv"))
            results[runtime] = numbers(table)
    if command == "search":  # the same items in the same order, scores within float noise
        assert [line.split('"score"')[0] for line in results["torch"].splitlines()] == \
            [line.split('"score"')[0] for line in results["onnx"].splitlines()]
    elif command != "index":
        np.testing.assert_allclose(results["onnx"], results["torch"], atol=1e-3)  # tables round to 4 decimals


def test_an_unknown_runtime_is_one_line(setup: tuple[Path, list[Path], Path], run_cli: Callable[..., Any]) -> None:
    folder, photos, _ = setup
    outcome = run_cli("tag", "predict", photos[0], "--model", folder / "tagger", "--runtime", "tensorrt")
    assert outcome.exit_code == 2
    assert outcome.stderr.strip().splitlines() == ["error: unknown runtime 'tensorrt'; use one of auto, torch, onnx"]
