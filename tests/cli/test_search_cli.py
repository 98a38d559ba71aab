"""``fashionlens embed / index / search / similar`` on a dozen real catalogue photos, including bad input."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from typer.testing import CliRunner, Result

from fashionlens.cli import app
from fashionlens.data.domains import load_domain_mapping
from fashionlens.data.readers import read_fashion_product_images
from fashionlens.data.records import Manifest
from fashionlens.models.backbones import BackboneConfig, build_backbone
from fashionlens.models.heads import TaggingHead
from fashionlens.tasks.labels import LabelSpace
from fashionlens.tasks.retrieval import Embedder, evaluate_similar_items
from fashionlens.tasks.tagging import Tagger, TaggingConfig

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
    assert "built with embedding model" in mismatch and "--model DIR" in mismatch  # names the fix
    # an index built with --model records it: --index alone searches, and a wrong --model names the recorded one
    recorded = folder / "trained-index"
    _ok("index", "build", "--manifest", folder / "catalogue.parquet", "--out", recorded, "--model", model)
    photo = manifest.frame["path"].iloc[7]
    found = _json_lines(_ok("search", photo, "--index", recorded, "--k", "2", "--json"))
    assert found[0]["item_id"] == manifest.frame["item_id"].iloc[7]
    wrong = _fails(run_cli, "search", photo, "--index", index, "--model", model)
    assert "--model DIR" in wrong
    wrong = _fails(run_cli, "search", photo, "--index", recorded, "--model", folder / "no-such-embedder")
    assert "no-such-embedder" in wrong
    _ok("index", "add", "--index", recorded, "--manifest", folder / "spare.parquet")  # uses the recorded embedder
    assert _json_block(_ok("index", "info", "--index", recorded))["models"] == {"embedder": str(model)}


def _street_tagger(directory: Path, heads: dict[str, list[str]], tags: list[str], sure: dict[str, str]) -> Path:
    """Save a tagger (tiny random backbone) whose outputs are constant: class ``sure[head]`` and tag ``sure['tag']``
    on with high probability, everything else unlikely."""
    torch.manual_seed(0)
    config = TaggingConfig(backbone=BackboneConfig(name="test_efficientnet", pretrained=False, num_workers=0),
                           hidden=8, dropout=0.0, tags=tags)
    width = build_backbone(config.backbone).num_features
    head = TaggingHead(width, len(tags), {name: len(classes) for name, classes in heads.items()}, hidden=8,
                       dropout=0.0)
    with torch.no_grad():
        for name, layer in [*head.heads.items(), ("tag", head.tags)]:
            assert layer is not None
            layer.weight.zero_()
            names = heads.get(name, tags)
            layer.bias.copy_(torch.tensor([6.0 if label == sure.get(name) else -6.0 for label in names]))
    labels = LabelSpace(tags=tags, heads=heads)
    Tagger(config, labels, head, np.full(len(tags), 0.5), weights_id="random").save(directory)
    return directory


@pytest.fixture(scope="module")
def mapped_catalogue(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Manifest]:
    """A baseline index over one product per articleType and baseColour the shipped domain mapping names."""
    mapping = load_domain_mapping()
    products = read_fashion_product_images(shared_data / "fashion-product-images")
    kinds, colours = products.class_column("articleType"), products.class_column("baseColour")
    wanted = [*{k for names in mapping.categories.values() for k in names}]
    chosen = {int(np.flatnonzero(kinds == kind)[0]) for kind in wanted}
    chosen |= {int(np.flatnonzero(colours == colour)[0]) for names in mapping.colours.values() for colour in names}
    manifest = products.subset(np.isin(np.arange(len(products)), sorted(chosen)))
    folder = tmp_path_factory.mktemp("mapped")
    manifest.save(folder / "catalogue.parquet")
    _ok("index", "build", "--manifest", folder / "catalogue.parquet", "--out", folder / "index")
    return folder / "index", manifest


@pytest.mark.slow  # ~7 CLI runs, each loading the backbones: about 30 s on a busy 2-core machine
def test_attributes_steer_the_search_towards_the_photos_kind(mapped_catalogue: tuple[Path, Manifest],
                                                            tmp_path: Path, run_cli: Callable[..., Any]) -> None:
    index, manifest = mapped_catalogue
    shirt = manifest.frame["path"][manifest.class_column("articleType") == "Shirts"].iloc[0]
    dress = _street_tagger(tmp_path / "dress", {"category": ["Dress", "Shirt"]}, ["blue", "red"],
                           {"category": "Dress", "tag": "blue"})
    plain = _json_lines(_ok("search", shirt, "--index", index, "--k", "3", "--json"))
    assert plain[0]["articleType"] == "Shirts"  # the photo itself
    off = _json_lines(_ok("search", shirt, "--index", index, "--k", "3", "--json", "--tagger", dress,
                          "--attributes", "off"))
    assert off == plain
    steered = _json_lines(_ok("search", shirt, "--index", index, "--k", "3", "--json", "--tagger", dress))
    assert {hit["articleType"] for hit in steered[:2]} <= {"Dresses", "Tunics"}  # the catalogue has one of each
    assert steered[0]["steered_by"]["category"]["label"] == "Dress"
    assert [hit["rank"] for hit in steered] == [1, 2, 3]
    assert "steered by Dress (1.00) -> Dresses, Tunics; blue" in _ok("search", shirt, "--index", index, "--tagger",
                                                                     dress).replace("\n", "")
    no_tagger = run_cli("search", shirt, "--index", index, "--k", "3", "--json")
    assert no_tagger.exit_code == 0 and "attribute steering off: no tagger" in no_tagger.stderr
    recorded = tmp_path / "index"  # the tagger recorded by index build steers without --tagger
    _ok("index", "build", "--manifest", index.parent / "catalogue.parquet", "--out", recorded, "--tagger", dress)
    assert _json_lines(_ok("search", shirt, "--index", recorded, "--k", "3", "--json")) == steered


@pytest.mark.slow  # as above
def test_attribute_search_refuses_unfit_taggers_and_catalogues(mapped_catalogue: tuple[Path, Manifest],
                                                               catalogue: tuple[Path, Manifest, Path],
                                                               tmp_path: Path, run_cli: Callable[..., Any]) -> None:
    index, manifest = mapped_catalogue
    photo = manifest.frame["path"].iloc[0]
    sleeves = _street_tagger(tmp_path / "sleeves", {"sleeve": ["long", "short"]}, ["blue"], {"sleeve": "long"})
    assert "no 'category' head" in _fails(run_cli, "search", photo, "--index", index, "--tagger", sleeves)
    dress = _street_tagger(tmp_path / "dress", {"category": ["Dress", "Shirt"]}, ["blue"], {"category": "Dress"})
    small = catalogue[2]  # watches, shoes and T-shirts: the mapping names articleTypes it lacks
    assert "the catalogue lacks" in _fails(run_cli, "search", photo, "--index", small, "--tagger", dress)
    assert "--attributes" in _fails(run_cli, "search", photo, "--index", index, "--attributes", "maybe")
    assert "no-tagger" in _fails(run_cli, "search", photo, "--index", index, "--tagger", tmp_path / "no-tagger")


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


def test_a_milvus_index_is_built_searched_and_edited_through_the_same_commands(
        catalogue: tuple[Path, Manifest, Path], tmp_path: Path, run_cli: Callable[..., Any]) -> None:
    pytest.importorskip("pymilvus", reason="the milvus extra is not installed")
    folder, manifest, faiss_index = catalogue
    index = tmp_path / "milvus-index"  # Milvus Lite, its database inside the index directory
    _ok("index", "build", "--manifest", folder / "catalogue.parquet", "--out", index, "--backend", "milvus")
    info = _json_block(_ok("index", "info", "--index", index))
    assert info["backend"] == "milvus" and info["count"] == 18
    photo = manifest.frame["path"].iloc[7]
    query = ("search", photo, "--k", "3", "--json", "--crop", "none")
    found = _json_lines(_ok(*query, "--index", index))
    assert [hit["item_id"] for hit in found] == [hit["item_id"] for hit in _json_lines(_ok(*query, "--index",
                                                                                            faiss_index))]
    _ok("index", "add", "--index", index, "--manifest", folder / "spare.parquet")
    assert _json_block(_ok("index", "info", "--index", index))["count"] == 19
    assert "--uri and --collection are for milvus" in _fails(
        run_cli, "index", "build", "--manifest", folder / "catalogue.parquet", "--out", tmp_path / "x", "--uri",
        "http://localhost:1")
    assert "use one of faiss, milvus" in _fails(
        run_cli, "index", "build", "--manifest", folder / "catalogue.parquet", "--out", tmp_path / "y", "--backend",
        "annoy")
