"""``fashionlens tag PHOTO`` and ``fashionlens classify PHOTO`` on real photos with no model arguments (the shipped
models), ``--model NAME|DIR``, and ``fashionlens models list / show``; bad input is one line and exit status 2."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from fashionlens import __version__
from fashionlens.pretrained import list_pretrained, pretrained_path


def _one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in stderr, stderr
    return lines[0]


def test_models_list_shows_every_shipped_model_with_its_test_figures(run_cli: Callable[..., Any]) -> None:
    outcome = run_cli("models", "list")
    assert outcome.exit_code == 0, outcome
    for entry in list_pretrained():
        assert entry.name in outcome.stdout and entry.kind in outcome.stdout
        figures = entry.test_figures()
        for key in entry.headline:
            assert f"{key} {figures[key]:.3f}" in outcome.stdout
    assert __version__ in outcome.stdout


def test_models_show_prints_the_card(run_cli: Callable[..., Any]) -> None:
    outcome = run_cli("models", "show", "product-hierarchy")
    assert outcome.exit_code == 0, outcome
    assert outcome.stdout.startswith("# product-hierarchy") and "## Known weaknesses" in outcome.stdout
    assert "research-only" in outcome.stdout
    bad = run_cli("models", "show", "no-such-model")
    assert bad.exit_code == 2 and "no shipped model named 'no-such-model'" in _one_error_line(bad.stderr)


@pytest.fixture(scope="module")
def photos(shared_data: Path) -> dict[str, Path]:
    """A street photo of Clothing Attributes and a catalogue photo of Fashion Product Images."""
    styles = pd.read_csv(shared_data / "fashion-product-images" / "styles.csv")
    return {"street": shared_data / "clothing-attributes" / "images" / "000001.jpg",
            "product": shared_data / "fashion-product-images" / str(styles["image"].iloc[0])}


@pytest.mark.slow
def test_tag_and_classify_a_photo_with_the_shipped_models(run_cli: Callable[..., Any], photos: dict[str, Path],
                                                          tmp_path: Path) -> None:
    tagged = run_cli("tag", photos["street"], "--out", tmp_path / "tags.csv")
    assert tagged.exit_code == 0, tagged
    table = pd.read_csv(tmp_path / "tags.csv")
    assert table["path"].tolist() == [str(photos["street"].resolve())] and table["error"].isna().all()
    assert {"tags", "p:collar", "class:category"} <= set(table.columns)
    assert 0.0 <= table["p:collar"].iloc[0] <= 1.0

    classified = run_cli("classify", photos["product"])
    assert classified.exit_code == 0, classified
    assert str(photos["product"].resolve()) in classified.stdout
    assert " > " in classified.stdout  # a masterCategory > subCategory > articleType path

    # --model NAME and --model DIR pick the same shipped model; `tag predict` is the same command.
    by_name = run_cli("tag", "predict", photos["street"], "--model", "clothing-tagger", "--out", tmp_path / "n.csv")
    by_dir = run_cli("tag", photos["street"], "--model", pretrained_path("clothing-tagger"), "--out",
                     tmp_path / "d.csv")
    assert by_name.exit_code == by_dir.exit_code == 0
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "n.csv"), table)
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "d.csv"), table)


@pytest.mark.parametrize(
    ("args", "culprit"),
    [
        (["tag", "{photo}", "--model", "no-such-model"], "--model 'no-such-model' is neither a shipped model"),
        (["classify", "{photo}", "--model", "clothing-tagger"], "not 'hierarchy'"),
        (["tag", "{photo}", "--model", "product-hierarchy"], "not 'tagger' or 'ensemble'"),
        (["classify", "{photo}", "--out", "{tmp}/p.txt"], "use .csv or .jsonl"),
    ],
    ids=["unknown-model", "tagger-as-classifier", "classifier-as-tagger", "bad-output"],
)
def test_bad_input_is_one_line_and_exit_2(run_cli: Callable[..., Any], photos: dict[str, Path], tmp_path: Path,
                                          args: list[str], culprit: str) -> None:
    values = {"{photo}": str(photos["street"]), "{tmp}": str(tmp_path)}
    filled = [arg.replace("{tmp}", values["{tmp}"]).replace("{photo}", values["{photo}"]) for arg in args]
    outcome = run_cli(*filled)
    assert outcome.exit_code == 2, outcome
    assert culprit in _one_error_line(outcome.stderr)


def test_evaluating_a_shipped_model_writes_its_report_outside_the_package(tmp_path: Path) -> None:
    from fashionlens.cli.common import report_dir

    assert report_dir(None, pretrained_path("clothing-tagger")) == Path("clothing-tagger-report")
    assert report_dir(None, tmp_path / "mine") == tmp_path / "mine" / "report"
    assert report_dir(tmp_path / "r", pretrained_path("product-hierarchy")) == tmp_path / "r"
