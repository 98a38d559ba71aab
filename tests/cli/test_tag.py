"""``fashionlens tag train / evaluate / ensemble / predict`` on synthetic photos with a tiny random backbone: the
report holds the figures the Python API computes, the ensemble's thresholds are tuned on its averaged validation
probabilities with the requested β, and bad input is refused in one line."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from fashionlens.data.records import Manifest
from fashionlens.tasks.tagging import Tagger, evaluate_tagger
from fashionlens.tasks.tagging.thresholds import best_thresholds

COLOURS = {"red": (200, 30, 30), "green": (30, 160, 40), "blue": (40, 40, 200)}
SPLITS = ["train"] * 24 + ["val"] * 12 + ["test"] * 12


def _photo(rng: np.random.Generator, colour: str, striped: bool, bright: bool) -> Image.Image:
    pixels = np.array(COLOURS[colour], dtype=np.float64) * (1.25 if bright else 0.6)
    image = np.clip(pixels + rng.normal(0, 20, size=(64, 64, 3)), 0, 255)
    if striped:
        image[::8] = image[1::8] = 255
    return Image.fromarray(image.astype(np.uint8))


def write_photo_manifest(folder: Path, seed: int = 0) -> Manifest:
    """48 small photos with two tags (``striped``, ``bright``; a few unlabelled) and a ``colour`` head."""
    rng = np.random.default_rng(seed)
    rows = []
    for i, split in enumerate(SPLITS):
        colour, striped, bright = list(COLOURS)[i % 3], i % 4 < 2, i % 5 < 2
        path = folder / f"photo-{i:02d}.png"
        _photo(rng, colour, striped, bright).save(path)
        rows.append({"path": str(path), "split": split, "tag:striped": float(striped),
                     "tag:bright": np.nan if i % 7 == 6 else float(bright), "class:colour": colour})
    return Manifest(pd.DataFrame(rows), name="photos")


@pytest.fixture(scope="module")
def members(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Manifest, list[Path]]:
    """The manifest file, the manifest, and two taggers trained through the CLI with different seeds."""
    from typer.testing import CliRunner

    from fashionlens.cli import app

    folder = tmp_path_factory.mktemp("tag-cli")
    manifest = write_photo_manifest(folder)
    manifest_path = manifest.save(folder / "photos.parquet")
    config = {"backbone": {"name": "test_efficientnet", "pretrained": False, "num_workers": 0, "batch_size": 16},
              "hidden": 16, "dropout": 0.0, "train": {"epochs": 3, "batch_size": 8, "lr": 0.01}}
    (folder / "tagger.yaml").write_text(yaml.safe_dump(config))
    runner, models = CliRunner(), []
    for seed in (0, 1):
        models.append(folder / f"member{seed}")
        result = runner.invoke(app, ["tag", "train", "-m", str(manifest_path), "-o", str(models[-1]),
                                     "-c", str(folder / "tagger.yaml"), "--seed", str(seed), "--device", "cpu"])
        assert result.exit_code == 0, result.output + repr(result.exception)
    return manifest_path, manifest, models


def _table_rows(report: str, heading: str) -> list[list[str]]:
    """The cells of the markdown table under ``heading``."""
    section = report.split(heading, 1)[1].split("\n## ", 1)[0]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in section.splitlines()
            if line.startswith("|") and not line.startswith("|---")]


def test_evaluate_writes_the_figures_of_the_python_api(members: tuple[Path, Manifest, list[Path]], tmp_path: Path,
                                                      run_cli: Callable[..., Any]) -> None:
    manifest_path, manifest, models = members
    outcome = run_cli("tag", "evaluate", "--model", models[0], "-m", manifest_path, "--split", "val", "--split",
                      "test", "--report", tmp_path / "report", "--beta", "1")
    assert outcome.exit_code == 0, outcome
    tagger = Tagger.load(models[0])
    written = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert list(written) == ["val", "test"]
    for split in ("val", "test"):
        evaluation, _ = evaluate_tagger(tagger, manifest, split, beta=1.0, show_progress=False)
        assert written[split] == pytest.approx(evaluation.summary)
        assert {"macro_f1@tuned", "mAP", "top1_colour"} <= set(written[split])
        assert f"{evaluation.summary['mAP']:.3f}" in outcome.stdout  # the console summary line

    report = (tmp_path / "report" / "report.md").read_text()
    header, *rows = _table_rows(report, "## Per-label results (val, tuned thresholds, F1)")
    thresholds = dict(zip(tagger.labels.tags, tagger.thresholds.tolist(), strict=True))
    assert [row[0] for row in rows] == tagger.labels.tags == ["striped", "bright"]
    for row in rows:
        assert row[header.index("threshold")] == f"{thresholds[row[0]]:.3f}"  # the saved thresholds, as decided
    summary = dict(_table_rows(report, "## Summary (test)")[1:])
    evaluation, _ = evaluate_tagger(tagger, manifest, "test", beta=1.0, show_progress=False)
    assert summary["macro_f1@tuned"] == f"{evaluation.summary['macro_f1@tuned']:.3f}"
    for picture in ("threshold_curves.png", "training_curves.png", "confusion_colour.png"):
        assert f"]({picture})" in report and (tmp_path / "report" / picture).stat().st_size > 1000


def test_ensemble_tunes_thresholds_on_its_weighted_mean(members: tuple[Path, Manifest, list[Path]], tmp_path: Path,
                                                        run_cli: Callable[..., Any]) -> None:
    manifest_path, manifest, models = members
    out = tmp_path / "ensemble"
    outcome = run_cli("tag", "ensemble", *models, "-m", manifest_path, "-o", out, "--weights", "1,3", "--beta", "0.25")
    assert outcome.exit_code == 0, outcome
    document = json.loads((out / "ensemble.json").read_text())
    assert document == {"members": [str(m.resolve()) for m in models], "weights": [0.25, 0.75]}

    val = manifest.split_subset("val")
    probabilities = [Tagger.load(m).predict(manifest, show_progress=False).tags for m in models]
    mean = 0.25 * probabilities[0] + 0.75 * probabilities[1]
    is_val = (manifest.frame["split"] == "val").to_numpy()
    expected = best_thresholds(val.tag_matrix(["striped", "bright"]), mean[is_val], beta=0.25).thresholds
    saved = json.loads((out / "thresholds.json").read_text())
    np.testing.assert_allclose([saved["striped"], saved["bright"]], expected, atol=1e-6)
    f2 = best_thresholds(val.tag_matrix(["striped", "bright"]), mean[is_val], beta=2.0).thresholds  # the default
    assert not np.allclose(f2, expected)  # β matters here: the check above tells 0.25 from 2

    predictions = tmp_path / "predictions.csv"
    # decisions use the F1 set unless --beta names another tuned set
    assert run_cli("tag", "predict", "--model", out, "-m", manifest_path, "-o", predictions, "--beta", "0.25"
                   ).exit_code == 0
    table = pd.read_csv(predictions)
    np.testing.assert_allclose(table[["p:striped", "p:bright"]].to_numpy(), mean, atol=1e-4)
    decided = (mean >= np.array(expected))
    assert table["tags"].fillna("").tolist() == [";".join(t for t, d in zip(["striped", "bright"], row, strict=True)
                                                          if d) for row in decided]


@pytest.mark.parametrize(
    ("args", "culprit"),
    [
        (["ensemble", "{m0}", "{m1}", "-m", "{manifest}", "-o", "{tmp}/e", "--weights", "1"], r"\[1\.0\] must be 2"),
        (["evaluate", "--model", "{m0}", "-m", "{manifest}", "--split", "holdout"], r"none of the splits .*holdout"),
        (["train", "-m", "{manifest}", "-o", "{tmp}/t", "--mode", "distill"], "unknown tagging mode 'distill'"),
    ],
    ids=["ensemble-weights", "evaluate-split", "train-mode"],
)
def test_bad_input_is_refused_in_one_line(members: tuple[Path, Manifest, list[Path]], tmp_path: Path,
                                          run_cli: Callable[..., Any], args: list[str], culprit: str) -> None:
    manifest_path, _, models = members
    values = {"{m0}": models[0], "{m1}": models[1], "{manifest}": manifest_path, "{tmp}": tmp_path}
    filled = [str(values.get(a, a)) if a in values else a.replace("{tmp}", str(tmp_path)) for a in args]
    outcome = run_cli("tag", *filled)
    lines = outcome.stderr.strip().splitlines()
    assert outcome.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), outcome
    assert re.search(culprit, lines[0]), lines[0]
    assert not (tmp_path / "e").exists() and not (tmp_path / "t").exists()
