"""``make demo``'s building blocks (a full run trains on ~9,700 photos, minutes on a CPU; ``demo`` has no smaller
setting): the seeded stratified manifests it starts from, its timed steps, and its one-line error without data."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console

from fashionlens.data.records import Manifest
from fashionlens.demo import build_manifests, step


def test_manifests_are_seeded_stratified_and_saved(shared_data: Path, tmp_path: Path) -> None:
    products, clothing = build_manifests(shared_data, tmp_path)
    for manifest, head in ((products, "articleType"), (clothing, "category")):
        saved = Manifest.load(tmp_path / "manifests" / f"{manifest.name}.parquet")
        assert saved.frame["split"].tolist() == manifest.frame["split"].tolist()
        shares = manifest.frame["split"].value_counts(normalize=True)
        assert abs(shares["train"] - 0.7) < 0.02 and abs(shares["val"] - 0.15) < 0.02
        # stratified: every class with enough rows is in val and test in about its overall proportion
        counts = manifest.frame.groupby(f"class:{head}")["split"].value_counts().unstack(fill_value=0)
        big = counts[counts.sum(axis=1) >= 40]
        assert len(big) >= 3 and (big["val"] / big.sum(axis=1)).between(0.1, 0.2).all()
    again, _ = build_manifests(shared_data, tmp_path / "again")
    assert again.frame["split"].tolist() == products.frame["split"].tolist()
    assert len(products) == 8080 and len(clothing) == 1578  # the figures the README quotes


def test_step_times_and_announces_itself() -> None:
    console, timings = Console(record=True, width=60), {}
    with step(console, "1. manifests", timings):
        pass
    assert list(timings) == ["1. manifests"] and timings["1. manifests"] >= 0
    assert "1. manifests" in console.export_text()


def test_missing_data_is_one_line_and_exit_2(tmp_path: Path, run_cli: Callable[..., Any]) -> None:
    outcome = run_cli("demo", "--data", tmp_path / "nothing", "--out", tmp_path / "out")
    lines = outcome.stderr.strip().splitlines()
    assert outcome.exit_code == 2 and len(lines) == 1, outcome
    assert lines[0].startswith("error: dataset folder not found") and "nothing" in lines[0]
