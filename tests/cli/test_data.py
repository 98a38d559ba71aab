"""``fashionlens data build / split / info`` on a small generic CSV: seeded splits with the requested sizes, a
re-split that keeps groups together, label counts as printed, and one-line errors for bad input."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fashionlens.data.records import Manifest


@pytest.fixture
def catalogue_csv(tmp_path: Path) -> Path:
    """20 tiny photos of 10 products (two each) in a generic CSV with relative paths."""
    (tmp_path / "images").mkdir()
    for i in range(20):
        Image.new("RGB", (8, 8), (10 * i, 0, 0)).save(tmp_path / "images" / f"{i}.jpg")
    frame = pd.DataFrame({"image": [f"images/{i}.jpg" for i in range(20)],
                          "item_id": [f"p{i // 2}" for i in range(20)]})
    frame.to_csv(tmp_path / "catalogue.csv", index=False)
    return tmp_path / "catalogue.csv"


def test_build_split_and_info(catalogue_csv: Path, tmp_path: Path, run_cli: Callable[..., Any]) -> None:
    built = tmp_path / "built.parquet"
    outcome = run_cli("data", "build", "generic", catalogue_csv, "--out", built, "--fractions", "0.5,0.25,0.25",
                      "--seed", "3")
    assert outcome.exit_code == 0, outcome
    manifest = Manifest.load(built)
    assert len(manifest) == 20 and all(Path(p).is_file() for p in manifest.frame["path"])
    assert manifest.frame["split"].value_counts().to_dict() == {"train": 10, "val": 5, "test": 5}
    assert "20 images" in outcome.stdout and str(built) in outcome.stdout.replace("\n", "")
    again = tmp_path / "again.parquet"
    assert run_cli("data", "build", "generic", catalogue_csv, "--out", again, "--fractions", "0.5,0.25,0.25",
                   "--seed", "3").exit_code == 0
    assert Manifest.load(again).frame["split"].tolist() == manifest.frame["split"].tolist()  # the seed decides

    grouped = tmp_path / "grouped.parquet"
    outcome = run_cli("data", "split", built, "--out", grouped, "--group", "item_id", "--fractions", "0.6,0.2,0.2")
    assert outcome.exit_code == 0, outcome
    frame = Manifest.load(grouped).frame
    assert frame.groupby("item_id")["split"].nunique().eq(1).all()  # a product's two photos stay together
    assert frame["split"].value_counts().to_dict() == {"train": 12, "val": 4, "test": 4}

    labelled = Manifest(frame.assign(**{"tag:red": np.where(np.arange(20) < 6, 1.0, 0.0),
                                        "class:kind": ["a", "b", ""] * 6 + ["a", "a"]}))
    labelled.frame.loc[19, "tag:red"] = np.nan
    labelled.save(tmp_path / "labelled.parquet")
    outcome = run_cli("data", "info", tmp_path / "labelled.parquet")
    assert outcome.exit_code == 0, outcome
    assert "tag red: 6 positive / 19 labelled" in outcome.stdout
    assert "head kind: 2 classes, 6 unlabelled" in outcome.stdout


@pytest.mark.parametrize(
    ("args", "culprit"),
    [
        (["build", "no-such-layout", "{csv}", "--out", "{tmp}/m.parquet"], "unknown dataset 'no-such-layout'"),
        (["build", "generic", "{csv}", "--out", "{tmp}/m.parquet", "--fractions", "0.5,0.5,0.5"], "summing to 1"),
        (["split", "{tmp}/absent.parquet", "--out", "{tmp}/m.parquet"], "absent.parquet"),
        (["info", "{csv}"], "manifest 'catalogue' has no 'path' column"),
    ],
    ids=["unknown-layout", "bad-fractions", "missing-manifest", "not-a-manifest"],
)
def test_bad_input_is_refused_in_one_line(catalogue_csv: Path, tmp_path: Path, run_cli: Callable[..., Any],
                                          args: list[str], culprit: str) -> None:
    filled = [a.replace("{csv}", str(catalogue_csv)).replace("{tmp}", str(tmp_path)) for a in args]
    outcome = run_cli("data", *filled)
    lines = outcome.stderr.strip().splitlines()
    assert outcome.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), outcome
    assert culprit in lines[0]
    assert not (tmp_path / "m.parquet").exists()
