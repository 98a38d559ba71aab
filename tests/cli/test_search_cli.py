"""``fashionlens embed / index / search / similar`` on a dozen real catalogue photos, including bad input."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner, Result

from fashionlens.cli import app
from fashionlens.data.readers import read_fashion_product_images
from fashionlens.data.records import Manifest
from fashionlens.tasks.retrieval import Embedder, evaluate_similar_items

runner = CliRunner()
TYPES = ("Watches", "Casual Shoes", "Tshirts")


def _run(*args: str | Path) -> Result:
    return runner.invoke(app, [str(a) for a in args])


def _ok(*args: str | Path) -> str:
    result = _run(*args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output


def _fails(run_cli: Callable[..., Any], *args: str | Path) -> str:
    """Run a command that must be refused: exit status 2 and one ``error:`` line (returned), no traceback."""
    outcome = run_cli(*args)
    lines = [line for line in outcome.stderr.splitlines() if line.strip()]
    assert outcome.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), outcome
    return str(lines[0])


def _json_lines(output: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def _json_block(output: str) -> dict[str, object]:
    """The indented JSON document in ``output`` (progress lines from stderr come before it)."""
    lines = output.splitlines()
    start = lines.index("{")
    return dict(json.loads("\n".join(lines[start:lines.index("}", start) + 1])))


@pytest.fixture(scope="module")
def catalogue(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Manifest, Path]:
    """Six products of three article types (3 train, 2 val, 1 test each), one spare product, and a baseline index."""
    products = read_fashion_product_images(shared_data / "fashion-product-images")
    types = products.class_column("articleType")
    chosen = np.concatenate([np.flatnonzero(types == t)[:6] for t in TYPES])
    manifest = products.subset(np.isin(np.arange(len(products)), chosen))
    manifest.frame["split"] = manifest.frame.groupby("class:articleType").cumcount().map(
        lambda i: "train" if i < 3 else "val" if i < 5 else "test")
    spare = products.subset(np.arange(len(products)) == np.flatnonzero(types == "Watches")[6])
    folder = tmp_path_factory.mktemp("cli")
    manifest.save(folder / "catalogue.parquet")
    spare.save(folder / "spare.parquet")
    _ok("index", "build", "--manifest", folder / "catalogue.parquet", "--out", folder / "index")
    return folder, manifest, folder / "index"


def test_index_info_similar_and_search(catalogue: tuple[Path, Manifest, Path]) -> None:
    _, manifest, index = catalogue
    info = _json_block(_ok("index", "info", "--index", index))
    assert info["count"] == 18 and info["dim"] == 1280 and "articleType" in info["fields"]
    item = manifest.frame["item_id"].iloc[0]
    similar = _json_lines(_ok("similar", item, "--index", index, "--k", "3", "--json"))
    assert [hit["rank"] for hit in similar] == [1, 2, 3] and item not in {hit["item_id"] for hit in similar}
    watches = _json_lines(_ok("similar", item, "--index", index, "--k", "4", "--filter", "articleType=Watches",
                              "--json"))
    assert len(watches) == 4 and {hit["articleType"] for hit in watches} == {"Watches"}
    photo = manifest.frame["path"].iloc[7]
    found = _json_lines(_ok("search", photo, "--index", index, "--k", "2", "--json"))
    assert found[0]["item_id"] == manifest.frame["item_id"].iloc[7]  # a catalogue photo finds itself first
    assert "rank" in _ok("search", photo, "--index", index, "--k", "2")  # the table view


def test_bad_queries_fail_with_clear_errors(catalogue: tuple[Path, Manifest, Path], tmp_path: Path,
                                            run_cli: Callable[..., Any]) -> None:
    _, manifest, index = catalogue
    item = manifest.frame["item_id"].iloc[0]
    assert "colour" in _fails(run_cli, "similar", item, "--index", index, "--filter", "colour=red")
    assert "k=50" in _fails(run_cli, "similar", item, "--index", index, "--k", "50")
    broken = tmp_path / "broken.jpg"
    broken.write_text("not an image")
    assert "broken.jpg" in _fails(run_cli, "search", broken, "--index", index)


def test_remove_and_add_items(catalogue: tuple[Path, Manifest, Path], tmp_path: Path,
                              run_cli: Callable[..., Any]) -> None:
    folder, manifest, _ = catalogue
    copy = tmp_path / "index"
    _ok("index", "build", "--manifest", folder / "catalogue.parquet", "--out", copy)
    item = manifest.frame["item_id"].iloc[0]
    _ok("index", "remove", item, "--index", copy)
    assert _json_block(_ok("index", "info", "--index", copy))["count"] == 17
    assert "no-such-item" in _fails(run_cli, "index", "remove", "no-such-item", "--index", copy)
    assert _json_block(_ok("index", "info", "--index", copy))["count"] == 17
    _ok("index", "add", "--index", copy, "--manifest", folder / "spare.parquet")
    assert _json_block(_ok("index", "info", "--index", copy))["count"] == 18


def test_trained_model_evaluates_and_is_refused_by_a_baseline_index(catalogue: tuple[Path, Manifest, Path],
                                                                     run_cli: Callable[..., Any]) -> None:
    folder, manifest, index = catalogue
    model = folder / "embedder"
    metrics = _json_block(_ok("embed", "train", "--manifest", folder / "catalogue.parquet", "--out", model,
                              "--identity", "articleType", "--category", "masterCategory", "--epochs", "1"))
    assert metrics["epochs_run"] == 1 and "val_map" in metrics
    output = _ok("embed", "evaluate", "--manifest", folder / "catalogue.parquet", "--model", model, "--split", "val",
                 "--k", "1", "--grid", folder / "grid.png")
    scores = _json_block(output)
    expected = evaluate_similar_items(Embedder.load(model), manifest, "val", k=1, show_progress=False)
    assert scores == pytest.approx(expected, nan_ok=True) and scores["queries"] == 6  # the API's figures, printed
    assert f"results grid: {folder / 'grid.png'}" in output.replace("\n", "")
    assert (folder / "grid.png").is_file()
    mismatch = _fails(run_cli, "search", manifest.frame["path"].iloc[0], "--index", index, "--model", model)
    assert "built with embedding model" in mismatch


def test_search_says_which_box_it_searched(catalogue: tuple[Path, Manifest, Path], shared_data: Path,
                                           tmp_path: Path) -> None:
    from PIL import Image

    _, manifest, index = catalogue
    photo = manifest.frame["path"].iloc[7]
    width, height = Image.open(photo).size
    whole = _json_lines(_ok("search", photo, "--index", index, "--k", "2", "--json", "--crop", "none"))
    assert len(whole) == 2 and whole[0]["crop"] == {"box": [0, 0, width, height], "box_text": f"0,0,{width},{height}",
                                                    "mode": "none", "fallback": False, "reason": None}
    given = _json_lines(_ok("search", photo, "--index", index, "--k", "1", "--json", "--crop", "10,20,100,120"))
    assert given[0]["crop"]["box"] == [10, 20, 100, 120] and given[0]["crop"]["mode"] == "box"
    street = sorted((shared_data / "clothing-attributes" / "images").glob("*.jpg"))[0]
    found = _json_lines(_ok("search", street, "--index", index, "--k", "1", "--json"))[0]["crop"]  # auto by default
    street_width, street_height = Image.open(street).size
    x0, y0, x1, y1 = found["box"]
    assert found["mode"] == "auto" and not found["fallback"]
    assert 0 <= x0 < x1 <= street_width and 0 <= y0 < y1 <= street_height
    assert (x1 - x0) * (y1 - y0) < street_width * street_height  # the garment, not the whole photo
    assert f"searched box {found['box_text']} (auto)" in " ".join(_ok("search", street, "--index", index, "--k",
                                                                        "1").split())  # rich wraps long lines
    blank = tmp_path / "blank.png"
    Image.new("RGB", (200, 300), (255, 255, 255)).save(blank)
    table = " ".join(_ok("search", blank, "--index", index, "--k", "1").split())
    assert "searched the whole photo (no garment found" in table


@pytest.mark.parametrize(("crop", "fragment"), [("abc", "is malformed"), ("1,2,3", "is malformed"),
                                                ("5,5,5,9", "is empty"), ("0,0,5000,10", "lies outside the")])
def test_bad_crops_fail_with_one_line(catalogue: tuple[Path, Manifest, Path], run_cli: Callable[..., Any],
                                      crop: str, fragment: str) -> None:
    _, manifest, index = catalogue
    assert fragment in _fails(run_cli, "search", manifest.frame["path"].iloc[0], "--index", index, "--crop", crop)
