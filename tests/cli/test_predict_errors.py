"""Batch ``predict`` commands with unreadable images: the good rows are written, each bad one is an ``error`` in the
table and a line on stderr, the exit status is 1; ``--strict`` fails the whole run; training paths still refuse."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner, Result

from fashionlens.cli import app
from fashionlens.errors import DataError
from fashionlens.models.heads import TaggingHead
from fashionlens.tasks.common import manifest_of_paths
from fashionlens.tasks.hierarchy import HierarchyClassifier, HierarchyConfig, build_head
from fashionlens.tasks.hierarchy.taxonomy import Taxonomy
from fashionlens.tasks.labels import LabelSpace
from fashionlens.tasks.tagging import Tagger, TaggingConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")

runner = CliRunner()


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Images (good, corrupt, good, missing), a tagger and a hierarchy model, and a private feature cache."""
    root = tmp_path_factory.mktemp("predict-errors")
    for index, colour in enumerate([(200, 30, 30), (20, 160, 60)]):
        Image.new("RGB", (48, 64), colour).save(root / f"good{index}.jpg", quality=90)
    jpeg = io.BytesIO()
    Image.new("RGB", (48, 64), (0, 0, 200)).save(jpeg, format="JPEG")
    (root / "corrupt.jpg").write_bytes(jpeg.getvalue()[:300])  # a JPEG cut short: decoding fails
    torch.manual_seed(0)
    labels = LabelSpace(tags=["casual", "formal"], heads={"colour": ["Black", "Red"]})
    head = TaggingHead(1280, 2, {"colour": 2}, hidden=16, dropout=0.0)
    Tagger(TaggingConfig(hidden=16, dropout=0.0), labels, head, np.array([0.4, 0.6], np.float32)).save(root / "tagger")
    taxonomy = Taxonomy(levels=("type", "category"), classes=(("lower", "upper"), ("Jeans", "Skirt", "Tee", "Top")),
                        parents=((), (0, 0, 1, 1)))
    config = HierarchyConfig(hidden=16, dropout=0.0)
    HierarchyClassifier(config, taxonomy, build_head(config, taxonomy, 1280)).save(root / "hierarchy")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FASHIONLENS_CACHE", str(root / "cache"))
        yield root


def _images(work: Path) -> list[Path]:
    return [work / "good0.jpg", work / "corrupt.jpg", work / "good1.jpg", work / "missing.jpg"]


def _run(*args: str | Path) -> Result:
    return runner.invoke(app, [str(a) for a in args])


def _status(result: Result) -> int:
    """The exit status, asserting that it came from an orderly exit, not an exception."""
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result.exit_code


def _unreadable_lines(result: Result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("unreadable:")]


@pytest.mark.parametrize("sharded", [False, True])
def test_tag_predict_writes_good_rows_and_reports_bad_ones(work: Path, sharded: bool) -> None:
    out = work / f"tags-{sharded}.csv"
    shards = ["--shards", work / "tag-shards", "--shard-size", 2] if sharded else []
    result = _run("tag", "predict", *_images(work), "--model", work / "tagger", "--out", out, *shards)
    assert _status(result) == 1
    table = pd.read_csv(out, keep_default_na=False)
    assert table["path"].tolist() == [str(path) for path in _images(work)]
    errors = table["error"].tolist()
    assert errors[0] == errors[2] == ""
    assert "corrupt or truncated image" in errors[1] and "corrupt.jpg" in errors[1]
    assert "image not found" in errors[3] and "missing.jpg" in errors[3]
    assert table.loc[[1, 3], ["tags", "p:casual", "class:colour"]].eq("").all().all()  # no made-up prediction
    reference = Tagger.load(work / "tagger").predict(manifest_of_paths(_images(work)[::2]), show_progress=False)
    np.testing.assert_allclose(table.loc[[0, 2], "p:casual"].astype(float), reference.tags[:, 0], atol=1e-4)
    assert _unreadable_lines(result) == [f"unreadable: {errors[1]}", f"unreadable: {errors[3]}"]
    assert "2 of 4 image(s) could not be read" in result.stderr


def test_tag_predict_prints_good_rows_and_the_error_column(work: Path) -> None:
    result = _run("tag", "predict", work / "good0.jpg", work / "corrupt.jpg", "--model", work / "tagger")
    assert _status(result) == 1
    lines = result.stdout.splitlines()
    lines = lines[next(i for i, line in enumerate(lines) if line.split()[:1] == ["path"]):]  # after progress bars
    assert lines[0].split() == ["path", "tag_probs", "class:colour", "error"]
    assert "good0.jpg" in lines[1] and "corrupt.jpg" in lines[2] and "corrupt or truncated" in lines[2]
    assert len(_unreadable_lines(result)) == 1


def test_strict_fails_the_whole_run_and_writes_nothing(work: Path) -> None:
    out = work / "strict.jsonl"
    result = _run("tag", "predict", *_images(work), "--model", work / "tagger", "--out", out, "--strict")
    assert isinstance(result.exception, DataError)  # the CLI's main() turns it into one line and exit status 2
    assert "2 of 4 image(s) could not be read (--strict)" in str(result.exception)
    assert not out.exists()


def test_all_good_exits_zero_with_an_empty_error_column(work: Path) -> None:
    out = work / "good.jsonl"
    result = _run("tag", "predict", work / "good0.jpg", work / "good1.jpg", "--model", work / "tagger", "--out", out)
    assert _status(result) == 0
    table = pd.read_json(out, lines=True)
    assert table["error"].isna().all() and len(table) == 2
    assert not _unreadable_lines(result)


def test_hierarchy_predict_reports_bad_images_per_row(work: Path) -> None:
    out = work / "hierarchy.csv"
    result = _run("hierarchy", "predict", *_images(work), "--model", work / "hierarchy", "--out", out)
    assert _status(result) == 1
    table = pd.read_csv(out, keep_default_na=False)
    assert table.loc[[0, 2], "category"].str.contains(" > ").all()
    assert table.loc[[1, 3], ["category", "p:type", "greedy_consistent"]].eq("").all().all()
    assert (table["error"] != "").tolist() == [False, True, False, True]
    assert len(_unreadable_lines(result)) == 2
    strict = _run("hierarchy", "predict", *_images(work), "--model", work / "hierarchy", "--strict")
    assert isinstance(strict.exception, DataError)


@pytest.mark.parametrize(("strict", "status"), [(False, 1), (True, 2)])
def test_exit_statuses_of_the_console_script(work: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str], strict: bool, status: int) -> None:
    from fashionlens.cli import main

    out = work / f"main-{strict}.csv"
    argv = ["fashionlens", "tag", "predict", str(work / "good0.jpg"), str(work / "missing.jpg"), "--model",
            str(work / "tagger"), "--out", str(out), *(["--strict"] if strict else [])]
    monkeypatch.setattr("sys.argv", argv)
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == status
    assert out.exists() != strict
    stderr = capsys.readouterr().err
    assert "missing.jpg" in stderr and "Traceback" not in stderr


@pytest.mark.parametrize("group", ["tag", "hierarchy"])
def test_help_documents_exit_statuses_and_strict(group: str) -> None:
    result = _run(group, "predict", "--help")
    text = " ".join(result.output.split())
    assert "Exit status: 0 when every image was predicted; 1 when some images could not be read" in text
    assert "--strict" in text


def test_training_paths_still_refuse_unreadable_images(work: Path) -> None:
    tagger = Tagger.load(work / "tagger")
    with pytest.raises(DataError, match=r"could not be read, e\.g\. .*corrupt\.jpg"):
        tagger.predict(manifest_of_paths(_images(work)[:2]), show_progress=False)
