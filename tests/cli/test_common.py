"""The shared CLI helpers: the one block of sharded batch-job options."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from fashionlens.cli.common import BatchJob, batch_job_options


def test_batch_job_options_become_one_job() -> None:
    """The six options are parsed in the command's ``job`` place and arrive as one :class:`BatchJob`."""
    app = typer.Typer()
    seen: list[tuple[str, BatchJob]] = []

    @app.command()
    @batch_job_options
    def run(name: str = typer.Option("x"), *, job: BatchJob, last: int = typer.Option(0)) -> None:
        seen.append((name, job))

    result = CliRunner().invoke(app, ["--name", "y", "--engine", "ray", "--shards", "s", "--shard-size", "7",
                                      "--actors", "3", "--runtime", "onnx", "--last", "1"])
    assert result.exit_code == 0, result.output
    assert seen == [("y", BatchJob("ray", Path("s"), 7, None, 3, "onnx"))]
    assert seen[0][1].sharded
    help_text = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "200"}).output
    order = [help_text.index(f"--{name}") for name in ("name", "engine", "ray-address", "runtime", "last")]
    assert order == sorted(order)
    CliRunner().invoke(app, [])
    assert seen[-1][1] == BatchJob("local", None, 1024, None, None, "auto") and not seen[-1][1].sharded


def test_batch_job_options_need_a_job_parameter() -> None:
    with pytest.raises(TypeError, match="job"):
        batch_job_options(lambda name="x": None)


def test_load_embedder_takes_a_shipped_models_name() -> None:
    from fashionlens.cli.common import load_embedder
    from fashionlens.pretrained import load_pretrained

    shipped = load_pretrained("street2shop-embedder")
    assert load_embedder(Path("street2shop-embedder"), "efficientnet_lite0").model_id == shipped.model_id
