"""The command line's error promise: bad input gives one ``error:`` line naming the culprit and exit status 2, never a
traceback -- checked on the installed entry point (``python -m fashionlens`` in a subprocess) and in-process."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import fashionlens


def _one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert "Traceback" not in stderr
    return lines[0]


def test_python_m_fashionlens_on_bad_input_exits_2_with_one_line(tmp_path: Path) -> None:
    source = str(Path(fashionlens.__file__).resolve().parents[1])  # the fashionlens under test, not another install
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [source, os.environ.get("PYTHONPATH")])),
           "OMP_NUM_THREADS": "1"}
    missing = tmp_path / "no-such-model"
    done = subprocess.run([sys.executable, "-m", "fashionlens", "tag", "evaluate", "--model", str(missing),
                           "--manifest", str(tmp_path / "m.parquet")], capture_output=True, text=True, env=env,
                          timeout=300)
    assert done.returncode == 2, done.stderr
    assert str(missing) in _one_error_line(done.stderr)
    assert done.stdout == ""


@pytest.mark.parametrize(
    ("args", "culprit"),
    [
        (["data", "build", "no-such-layout", ".", "--out", "{tmp}/m.parquet"], "unknown dataset 'no-such-layout'"),
        (["data", "info", "{tmp}/absent.parquet"], "absent.parquet"),
        (["tag", "predict", "{tmp}/photo.jpg", "--model", "{tmp}/m", "--out", "{tmp}/p.txt"], "use .csv or .jsonl"),
        (["index", "info", "--index", "{tmp}/no-index"], "no-index"),
        (["export", "onnx", "--model", "{tmp}/no-model", "--out", "{tmp}/x.onnx"], "no-model"),
    ],
    ids=["unknown-layout", "missing-manifest", "bad-output-suffix", "missing-index", "missing-model"],
)
def test_bad_input_is_one_line_and_exit_2(run_cli: Callable[..., Any], tmp_path: Path, args: list[str],
                                          culprit: str) -> None:
    outcome = run_cli(*[a.replace("{tmp}", str(tmp_path)) for a in args])
    assert outcome.exit_code == 2, outcome
    assert culprit in _one_error_line(outcome.stderr)


def test_a_good_command_exits_0(run_cli: Callable[..., Any]) -> None:
    outcome = run_cli("data", "--help")
    assert outcome.exit_code == 0 and "build" in outcome.stdout


def test_version_prints_the_package_version() -> None:
    from typer.testing import CliRunner

    from fashionlens.cli import app

    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"fashionlens {fashionlens.__version__}"
