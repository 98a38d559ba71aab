"""ONNX export: onnxruntime gives PyTorch's outputs on real photos (taggers and embedders, frozen-feature and
fine-tuned backbones), the metadata describes the model, and bad input fails in one line without damaging files."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
import typer
from rich.console import Console
from typer.testing import CliRunner

from fashionlens import __version__
from fashionlens.cli.export import app as export_app
from fashionlens.data.readers import read_clothing_attributes, read_fashion_product_images
from fashionlens.data.splits import split_manifest
from fashionlens.engine import TrainConfig
from fashionlens.errors import ModelError
from fashionlens.export import OnnxModel, export_onnx, model_kind, verify_export
from fashionlens.models import create_backbone
from fashionlens.models.embedding import EmbeddingHead
from fashionlens.models.heads import TaggingHead
from fashionlens.tasks.hierarchy import HierarchyClassifier
from fashionlens.tasks.labels import LabelSpace
from fashionlens.tasks.retrieval import Embedder, RetrievalConfig
from fashionlens.tasks.tagging import Tagger, TaggingConfig, train_tagger

ATOL = 1e-4
QUIET = Console(quiet=True)


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> object:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def images(shared_data: Path) -> list[Path]:
    """Real photos of three kinds: 224 px catalogue shots, a 1800x2400 original (shrunk on decode), street photos."""
    catalogue = read_fashion_product_images(shared_data / "fashion-product-images").frame["path"].tolist()[:3]
    hires = sorted((shared_data / "fashion-product-images-hires").rglob("*.jpg"))[:1]
    street = read_clothing_attributes(shared_data / "clothing-attributes").frame["path"].tolist()[:2]
    return [Path(p) for p in [*catalogue, *hires, *street]]


@pytest.fixture(scope="module")
def tagger_dir(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small feature-mode tagger (3 tags + sleeve-length head) trained on 60 real street photos."""
    manifest = read_clothing_attributes(shared_data / "clothing-attributes")
    manifest = split_manifest(manifest.subset(np.arange(len(manifest)) < 60), seed=0)
    train = TrainConfig(epochs=5, lr=3e-3, batch_size=32, monitor="val_map", mode="max")
    config = TaggingConfig(tags=["gender", "pattern_solid", "black"], heads=["sleevelength"], hidden=32,
                           dropout=0.1, train=train)
    config.backbone.batch_size = 32
    config.backbone.num_workers = 0
    out = tmp_path_factory.mktemp("tagger") / "tagger"
    train_tagger(manifest, config, out, console=QUIET, show_progress=False)
    return out


@pytest.fixture(scope="module")
def exported_tagger(tagger_dir: Path, images: list[Path]) -> Path:
    result = export_onnx(tagger_dir, tagger_dir.parent / "tagger.onnx", verify_images=images[:2])
    assert result.max_abs_diff is not None and result.max_abs_diff <= ATOL and result.images_verified == 2
    return result.path


def test_tagger_onnx_matches_pytorch_on_real_images(tagger_dir: Path, exported_tagger: Path,
                                                    images: list[Path]) -> None:
    reference = Tagger.load(tagger_dir).predict_paths(images)
    model = OnnxModel(exported_tagger)
    outputs = model.predict(images, batch_size=4)  # batches of 4 and 2: the batch axis is dynamic
    assert set(outputs) == {"tags", "class:sleevelength"}
    np.testing.assert_allclose(outputs["tags"], reference.tags, atol=ATOL, rtol=0)
    np.testing.assert_allclose(outputs["class:sleevelength"], reference.heads["sleevelength"], atol=ATOL, rtol=0)
    assert outputs["tags"].std(axis=0).max() > 1e-3  # the photos get different answers: the check has teeth
    np.testing.assert_allclose(outputs["class:sleevelength"].sum(axis=1), 1.0, atol=1e-5)
    single = model.predict(images[3:4])  # the 2400 px original alone, batch of one
    np.testing.assert_allclose(single["tags"], outputs["tags"][3:4], atol=ATOL, rtol=0)
    np.testing.assert_array_equal(model.decide(outputs["tags"]), Tagger.load(tagger_dir).decide(reference))


def test_tagger_metadata_describes_labels_thresholds_and_preprocessing(tagger_dir: Path,
                                                                       exported_tagger: Path) -> None:
    tagger = Tagger.load(tagger_dir)
    model = OnnxModel(exported_tagger)
    meta = model.metadata
    assert (meta["kind"], meta["fashionlens_version"], meta["backbone"]) == ("tagger", __version__,
                                                                             "efficientnet_lite0")
    assert meta["outputs"] == ["tags", "class:sleevelength"]
    assert model.tags == tagger.labels.tags == ["gender", "pattern_solid", "black"]
    assert model.heads == tagger.labels.heads
    np.testing.assert_allclose(model.thresholds, tagger.thresholds)
    preprocess = create_backbone("efficientnet_lite0").preprocess
    record = meta["preprocessing"]
    assert record["input_size"] == preprocess.input_size == 224
    assert tuple(record["mean"]) == preprocess.mean and tuple(record["std"]) == preprocess.std
    assert (record["interpolation"], record["resize"], record["max_side"]) == ("bilinear", [224, 224], 1024)
    assert record["crop"].startswith("none")
    graph = onnx.load(exported_tagger)
    assert max(o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")) >= 17
    assert graph.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"


@pytest.mark.parametrize("variant", ["untrained_normalised", "projection_raw"])
def test_embedder_onnx_matches_pytorch(variant: str, images: list[Path], tmp_path: Path) -> None:
    if variant == "untrained_normalised":
        embedder = Embedder.untrained()
    else:  # a projection head without normalisation, as the paper's best model
        torch.manual_seed(0)
        weights_id = create_backbone("efficientnet_lite0").weights_id
        embedder = Embedder(RetrievalConfig(dim=32, normalize=False), EmbeddingHead(1280, 32, None, False), weights_id)
    embedder.save(tmp_path / "embedder")
    result = export_onnx(tmp_path / "embedder", tmp_path / "embedder.onnx")
    model = OnnxModel(result.path)
    vectors = model.predict(images)["embeddings"]
    reference = Embedder.load(tmp_path / "embedder").embed_paths(images)
    np.testing.assert_allclose(vectors, reference, atol=ATOL, rtol=0)
    norms = np.linalg.norm(vectors, axis=1)
    if embedder.config.normalize:
        np.testing.assert_allclose(norms, 1.0, atol=1e-5)
    else:
        assert vectors.shape == (len(images), 32) and not np.allclose(norms, 1.0, atol=1e-2)
    assert model.metadata["model_id"] == embedder.model_id  # matches what a catalogue index built in PyTorch records
    assert model.metadata["metric"] == embedder.metric and model.kind == "embedder"
    assert verify_export(tmp_path / "embedder", result.path, images[:2]) <= ATOL


def test_finetuned_tagger_exports_its_saved_backbone(images: list[Path], tmp_path: Path) -> None:
    torch.manual_seed(0)
    backbone = create_backbone("efficientnet_lite0", freeze="all").eval()
    with torch.no_grad():
        conv_head: Any = backbone.model.conv_head
        conv_head.weight.mul_(1.5)  # no longer the pretrained weights a rebuild would load
    labels = LabelSpace(tags=["a", "b"], heads={"shape": ["round", "square", "flat"]})
    head = TaggingHead(backbone.num_features, 2, {"shape": 3}, hidden=16, dropout=0.0)
    Tagger(TaggingConfig(mode="finetune", hidden=16), labels, head, np.array([0.3, 0.6]),
           backbone=backbone).save(tmp_path / "finetuned")
    assert export_onnx(tmp_path / "finetuned", tmp_path / "f.onnx").max_abs_diff is None
    model = OnnxModel(tmp_path / "f.onnx")
    outputs = model.predict(images[:3])
    with torch.no_grad():
        pixels = torch.as_tensor(model.preprocess_images([model.load(p) for p in images[:3]]))
        expected = torch.sigmoid(head(backbone(pixels))["tags"]).numpy()
    np.testing.assert_allclose(outputs["tags"], expected, atol=ATOL, rtol=0)
    assert verify_export(tmp_path / "finetuned", tmp_path / "f.onnx", images[:3]) <= ATOL


def test_hierarchy_onnx_matches_pytorch_on_real_images(images: list[Path], tmp_path: Path,
                                                        save_small_hierarchy: Callable[..., Path]) -> None:
    save_small_hierarchy(tmp_path / "hierarchy")
    result = export_onnx(tmp_path / "hierarchy", tmp_path / "h.onnx", verify_images=images)
    assert result.kind == "hierarchy" and result.outputs == ["level:master", "level:article"]
    assert result.max_abs_diff is not None and result.max_abs_diff <= ATOL
    model = OnnxModel(result.path)
    assert model.metadata["levels"] == ["master", "article"] and model.metadata["decoding"] == "consistent"
    reference = HierarchyClassifier.load(tmp_path / "hierarchy").predict_paths(images)
    outputs = model.predict(images)
    for name, expected in zip(result.outputs, reference.probabilities, strict=True):
        np.testing.assert_allclose(outputs[name], expected, atol=ATOL, rtol=0)


def test_bad_model_directories_are_one_line_errors(tmp_path: Path, tagger_dir: Path) -> None:
    with pytest.raises(ModelError, match="not found") as error:
        export_onnx(tmp_path / "missing", tmp_path / "x.onnx")
    assert str(tmp_path / "missing") in str(error.value)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "config.json").write_text("{}")
    with pytest.raises(ModelError) as error:
        model_kind(tmp_path / "notes")
    assert str(tmp_path / "notes") in str(error.value) and "\n" not in str(error.value)
    (tmp_path / "ensemble").mkdir()
    (tmp_path / "ensemble" / "ensemble.json").write_text("{}")
    with pytest.raises(ModelError, match="ensemble"):
        model_kind(tmp_path / "ensemble")
    assert model_kind(tagger_dir) == "tagger"
    assert not (tmp_path / "x.onnx").exists()


def test_failed_export_keeps_the_previous_file(tagger_dir: Path, exported_tagger: Path, images: list[Path],
                                               tmp_path: Path) -> None:
    out = tmp_path / "model.onnx"
    out.write_bytes(exported_tagger.read_bytes())
    before = out.read_bytes()
    with pytest.raises(ModelError):
        export_onnx(tmp_path / "missing", out)
    with pytest.raises(ModelError, match="differs from PyTorch"):  # the check fails after the graph was written
        export_onnx(tagger_dir, out, verify_images=images[:1], atol=-1.0)
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]  # no temporary file left behind


def test_runner_rejects_foreign_files_and_mismatched_pairs(tmp_path: Path, exported_tagger: Path,
                                                           images: list[Path]) -> None:
    (tmp_path / "garbage.onnx").write_bytes(b"not a protobuf")
    with pytest.raises(ModelError, match=r"garbage\.onnx"):
        OnnxModel(tmp_path / "garbage.onnx")
    graph = onnx.load(exported_tagger)
    del graph.metadata_props[:]
    onnx.save(graph, tmp_path / "plain.onnx")
    with pytest.raises(ModelError, match="no fashionlens metadata"):
        OnnxModel(tmp_path / "plain.onnx")
    Embedder.untrained().save(tmp_path / "embedder")
    with pytest.raises(ModelError, match="another model"):
        verify_export(tmp_path / "embedder", exported_tagger, images[:1])


def test_cli_exports_verifies_and_asks_for_images(tagger_dir: Path, images: list[Path], tmp_path: Path,
                                                  run_cli: Callable[..., Any]) -> None:
    cli = typer.Typer()
    cli.add_typer(export_app, name="export")
    runner = CliRunner()
    out = tmp_path / "cli.onnx"
    result = runner.invoke(cli, ["export", "onnx", "--model", str(tagger_dir), "--out", str(out),
                                 "--image", str(images[0]), "--image", str(images[4])])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "verified on 2 image(s)" in result.output and out.is_file()
    refused = run_cli("export", "onnx", "--model", tagger_dir, "--out", tmp_path / "b.onnx")
    lines = refused.stderr.strip().splitlines()
    assert refused.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and "--image" in lines[0]
    assert not (tmp_path / "b.onnx").exists()
    result = runner.invoke(cli, ["export", "onnx", "--model", str(tagger_dir), "--out", str(tmp_path / "c.onnx"),
                                 "--no-verify"])
    assert result.exit_code == 0 and "not verified" in result.output
