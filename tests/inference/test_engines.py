"""Batch inference on real catalogue photos: the Ray engine (a local, in-process Ray instance on loopback) gives the
local engine's results; jobs resume shard by shard, refuse another job's folder, report unreadable images; the index
built from shards is the index built the usual way; the CLI's sharded paths give the CLI's usual output."""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from fashionlens.catalogue import build_catalogue_index, open_index
from fashionlens.data.readers import read_fashion_product_images
from fashionlens.data.records import Manifest
from fashionlens.errors import ConfigError, DataError, ModelError
from fashionlens.inference import (
    JobResult,
    LocalEngine,
    ModelSpec,
    catalogue_index_from_shards,
    embeddings_from_shards,
    hierarchy_from_shards,
    predictions_from_shards,
    read_arrays,
    read_table,
    run_job,
    shard_folder,
)
from fashionlens.inference.ray_engine import LOOPBACK, RayEngine, init_local_ray
from fashionlens.models.heads import TaggingHead
from fashionlens.tasks.hierarchy import HierarchyClassifier
from fashionlens.tasks.labels import LabelSpace
from fashionlens.tasks.retrieval import Embedder
from fashionlens.tasks.tagging import Tagger, TaggingConfig

pytestmark = pytest.mark.slow

SHARD = 16
TYPES = ("Tshirts", "Casual Shoes", "Watches", "Jeans")


@pytest.fixture(scope="module")
def catalogue(shared_data: Path) -> Manifest:
    """40 real product photos, 10 of each of 4 article types (3 shards of 16, 16 and 8)."""
    products = read_fashion_product_images(shared_data / "fashion-product-images")
    types = products.class_column("articleType")
    chosen = np.sort(np.concatenate([np.flatnonzero(types == t)[:10] for t in TYPES]))
    return Manifest(products.frame.iloc[chosen].reset_index(drop=True), name="catalogue-40")


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("batch")


@pytest.fixture(scope="module")
def tagger_dir(work: Path) -> Path:
    """A tiny tagger (seeded random head on EfficientNet-Lite0 features): 3 tags at distinct thresholds + a head."""
    torch.manual_seed(0)
    labels = LabelSpace(tags=["casual", "formal", "summer"], heads={"colour": ["Black", "Blue", "White", "Red"]})
    head = TaggingHead(1280, 3, {"colour": 4}, hidden=32, dropout=0.0)
    Tagger(TaggingConfig(hidden=32, dropout=0.0), labels, head, np.array([0.3, 0.5, 0.7], np.float32)).save(
        work / "tagger")
    return work / "tagger"


@pytest.fixture(scope="module")
def ray_instance() -> Iterator[None]:
    ray = pytest.importorskip("ray")
    started = not ray.is_initialized()
    if started:
        assert init_local_ray(ray, num_cpus=2) == LOOPBACK  # the engine's own start: loopback only
        assert [node["NodeManagerAddress"] for node in ray.nodes()] == [LOOPBACK]
    yield
    if started:
        ray.shutdown()


def _ray_engine() -> RayEngine:
    return RayEngine(batch_size=16, decode_batch_size=8)


@pytest.fixture(scope="module")
def local_tags(catalogue: Manifest, tagger_dir: Path, work: Path) -> JobResult:
    return run_job(catalogue, ModelSpec("tag", str(tagger_dir)), work / "local-tags", LocalEngine(), SHARD,
                   show_progress=False)


@pytest.fixture(scope="module")
def ray_tags(catalogue: Manifest, tagger_dir: Path, work: Path, ray_instance: None) -> JobResult:
    return run_job(catalogue, ModelSpec("tag", str(tagger_dir)), work / "ray-tags", _ray_engine(),
                   SHARD, show_progress=False)


def test_ray_tags_equal_local_engine_and_in_process_prediction(catalogue: Manifest, tagger_dir: Path,
                                                              local_tags: JobResult, ray_tags: JobResult) -> None:
    assert local_tags.computed == ray_tags.computed == [0, 1, 2]
    local, distributed = predictions_from_shards(local_tags.directory), predictions_from_shards(ray_tags.directory)
    assert local.tags.shape == (40, 3) and local.heads["colour"].shape == (40, 4)
    assert np.isfinite(local.tags).all()
    np.testing.assert_allclose(distributed.tags, local.tags, atol=1e-5)
    np.testing.assert_allclose(distributed.heads["colour"], local.heads["colour"], atol=1e-5)
    tagger = Tagger.load(tagger_dir)
    reference = tagger.predict(catalogue, show_progress=False)  # today's path: features through the shared cache
    np.testing.assert_allclose(local.tags, reference.tags, atol=1e-5)
    decisions = read_arrays(ray_tags.directory).columns["decisions"]
    np.testing.assert_array_equal(decisions, tagger.decide(distributed))
    table = read_table(ray_tags.directory)
    assert table["path"].tolist() == catalogue.frame["path"].tolist()  # manifest order, across shards
    assert table["ok"].all()


def test_hierarchy_jobs_equal_in_process_prediction_on_both_engines(catalogue: Manifest, work: Path,
                                                                    local_tags: JobResult, ray_instance: None,
                                                                    save_small_hierarchy: Callable[..., Path]) -> None:
    save_small_hierarchy(work / "hierarchy")
    classifier = HierarchyClassifier.load(work / "hierarchy")
    reference = classifier.predict(catalogue, show_progress=False)
    spec = ModelSpec("hierarchy", str(work / "hierarchy"))
    for name, engine in (("local", LocalEngine()), ("ray", _ray_engine())):
        job = run_job(catalogue, spec, work / f"{name}-hierarchy", engine, SHARD, show_progress=False)
        predictions = hierarchy_from_shards(job.directory, classifier)
        np.testing.assert_array_equal(predictions.paths, reference.paths)
        for got, expected in zip(predictions.probabilities, reference.probabilities, strict=True):
            np.testing.assert_allclose(got, expected, atol=1e-5)
    with pytest.raises(DataError, match="not 'hierarchy'"):
        hierarchy_from_shards(local_tags.directory, classifier)


def test_ray_embeddings_equal_local_and_index_from_shards_equals_usual_index(catalogue: Manifest, work: Path,
                                                                            ray_instance: None) -> None:
    spec = ModelSpec("embed")  # the untrained ImageNet baseline
    local = run_job(catalogue, spec, work / "local-embed", LocalEngine(), SHARD, show_progress=False)
    distributed = run_job(catalogue, spec, work / "ray-embed", _ray_engine(), SHARD,
                          show_progress=False)
    vectors = embeddings_from_shards(distributed.directory)
    assert vectors.shape == (40, 1280)
    np.testing.assert_allclose(vectors, embeddings_from_shards(local.directory), atol=1e-5)

    embedder = Embedder.untrained()
    usual = build_catalogue_index(embedder, catalogue)
    from_shards = catalogue_index_from_shards(distributed.directory, embedder, catalogue, work / "index")
    queries = usual.search(vectors[::7], k=5)
    for expected, got in zip(queries, from_shards.search(vectors[::7], k=5), strict=True):
        assert [h.item_id for h in got] == [h.item_id for h in expected]
        np.testing.assert_allclose([h.score for h in got], [h.score for h in expected], atol=1e-5)
    with pytest.raises(DataError, match="another manifest"):
        catalogue_index_from_shards(distributed.directory, embedder, catalogue.subset(np.arange(40) < 39))


def test_resume_recomputes_only_the_missing_shard(catalogue: Manifest, tagger_dir: Path, work: Path,
                                                  local_tags: JobResult, ray_instance: None) -> None:
    folder = work / "resume"
    shutil.copytree(local_tags.directory, folder)
    before = predictions_from_shards(folder)
    (folder / "part-00001.parquet").unlink()
    kept = {name: (folder / name).stat().st_mtime_ns for name in ("part-00000.parquet", "part-00002.parquet")}
    resumed = run_job(catalogue, ModelSpec("tag", str(tagger_dir)), folder, _ray_engine(), SHARD,
                      show_progress=False)
    assert resumed.computed == [1]  # a local job resumed by the Ray engine: same shard format
    assert {name: (folder / name).stat().st_mtime_ns for name in kept} == kept
    np.testing.assert_allclose(predictions_from_shards(folder).tags, before.tags, atol=1e-5)
    again = run_job(catalogue, ModelSpec("tag", str(tagger_dir)), folder, LocalEngine(), SHARD, show_progress=False)
    assert again.computed == []


def test_another_job_in_the_same_folder_is_refused(catalogue: Manifest, tagger_dir: Path,
                                                   local_tags: JobResult) -> None:
    folder = local_tags.directory
    with pytest.raises(ConfigError, match="shard_size"):
        run_job(catalogue, ModelSpec("tag", str(tagger_dir)), folder, LocalEngine(), 8, show_progress=False)
    with pytest.raises(ConfigError, match="manifest_hash"):
        reordered = Manifest(catalogue.frame.iloc[::-1].reset_index(drop=True))
        run_job(reordered, ModelSpec("tag", str(tagger_dir)), folder, LocalEngine(), SHARD, show_progress=False)
    with pytest.raises(ConfigError, match="task, fingerprint"):
        run_job(catalogue, ModelSpec("embed"), folder, LocalEngine(), SHARD, show_progress=False)
    with pytest.raises(DataError, match="not 'embed'"):
        embeddings_from_shards(folder)
    ensemble = folder.parent / "ensemble"
    shutil.copytree(tagger_dir, ensemble)
    config = json.loads((ensemble / "config.json").read_text())
    (ensemble / "config.json").write_text(json.dumps({**config, "kind": "ensemble"}))
    with pytest.raises(ModelError, match="kind 'ensemble', not 'tagger'"):
        run_job(catalogue, ModelSpec("tag", str(ensemble)), folder.parent / "ens", LocalEngine(), SHARD)


def test_missing_ray_is_one_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from fashionlens.inference.ray_engine import import_ray

    monkeypatch.setitem(sys.modules, "ray", None)  # what an environment without the extra looks like to import
    with pytest.raises(ConfigError, match=r"pip install fashionlens\[ray\]"):
        import_ray()


def test_unreadable_image_is_named_and_its_shard_retried(shared_data: Path, catalogue: Manifest, tagger_dir: Path,
                                                         work: Path, ray_instance: None) -> None:
    broken = work / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    frame = pd.concat([catalogue.frame.iloc[:2], pd.DataFrame({"path": [str(broken)]})], ignore_index=True)
    manifest = Manifest(frame, name="with-broken")
    for name, engine in (("local", LocalEngine()), ("ray", _ray_engine())):
        folder = work / f"broken-{name}"
        result = run_job(manifest, ModelSpec("tag", str(tagger_dir)), folder, engine, 2,
                         show_progress=False)
        assert result.computed == [0, 1]
        np.testing.assert_array_equal(read_arrays(folder).ok, [True, True, False])
        with pytest.raises(DataError, match=r"broken\.jpg"):
            predictions_from_shards(folder)
        assert result.plan.pending() == [1]  # the shard with the bad image is tried again on the next run


def test_cli_sharded_paths_give_the_usual_outputs(catalogue: Manifest, tagger_dir: Path, work: Path,
                                                  ray_tags: JobResult, run_cli: Callable[..., Any]) -> None:
    from fashionlens.cli import app

    runner = CliRunner()
    manifest_file = work / "catalogue.parquet"
    catalogue.save(manifest_file)

    def invoke(*args: object) -> None:
        result = runner.invoke(app, [str(a) for a in args])
        assert result.exit_code == 0, result.output + repr(result.exception)

    invoke("tag", "predict", "--model", tagger_dir, "-m", manifest_file, "--out", work / "usual.csv")
    # the Ray job's shards are all there: the ray engine resumes it with nothing left to compute
    invoke("tag", "predict", "--model", tagger_dir, "-m", manifest_file, "--out", work / "sharded.csv",
           "--engine", "ray", "--shards", ray_tags.directory, "--shard-size", SHARD)
    usual, sharded = pd.read_csv(work / "usual.csv"), pd.read_csv(work / "sharded.csv")
    pd.testing.assert_frame_equal(sharded.drop(columns=[c for c in sharded if str(c).startswith("p:")]),
                                  usual.drop(columns=[c for c in usual if str(c).startswith("p:")]))
    np.testing.assert_allclose(sharded.filter(like="p:").to_numpy(), usual.filter(like="p:").to_numpy(), atol=2e-4)

    invoke("index", "build", "-m", manifest_file, "--out", work / "cli-index", "--domain", "", "--engine", "local",
           "--shards", work / "cli-shards", "--shard-size", SHARD)
    assert sorted(p.name for p in (work / "cli-shards").glob("part-*")) == [f"part-0000{i}.parquet" for i in range(3)]
    index = open_index(work / "cli-index", Embedder.untrained())
    vectors = embeddings_from_shards(work / "cli-shards")
    assert [h.item_id for h in index.search(vectors[:1], k=3)[0]] == [
        h.item_id for h in build_catalogue_index(Embedder.untrained(), catalogue).search(vectors[:1], k=3)[0]]
    assert shard_folder(None, work / "preds.csv") == work / "preds.shards"
    outcome = run_cli("index", "build", "-m", manifest_file, "--out", work / "x", "--engine", "spark")
    assert outcome.exit_code == 2 and outcome.stderr.count("\n") == 1 and "spark" in outcome.stderr
