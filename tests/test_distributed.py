"""Data-parallel training: sharded epoch order, single-process fall-backs, and real ``torchrun`` runs on CPU (gloo)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch.utils.data import DataLoader, TensorDataset

from fashionlens import distributed
from fashionlens.errors import ConfigError
from fashionlens.tasks.common import read_weights


def _loader(n: int, batch_size: int, shuffle: bool) -> DataLoader[tuple[torch.Tensor, ...]]:
    return DataLoader(TensorDataset(torch.arange(n)), batch_size=batch_size, shuffle=shuffle)


def _batches(loader: DataLoader[tuple[torch.Tensor, ...]], epoch: int) -> list[list[int]]:
    loader.sampler.set_epoch(epoch)  # type: ignore[attr-defined]
    return [batch[0].tolist() for batch in loader]


@pytest.mark.parametrize("shuffle", [True, False])
def test_global_batches_hold_the_same_rows_on_any_number_of_processes(shuffle: bool) -> None:
    single = distributed.shard_loader(_loader(96, 32, shuffle), seed=3, replicas=1, shard=0)
    shards = [distributed.shard_loader(_loader(96, 32, shuffle), seed=3, replicas=4, shard=r) for r in range(4)]
    for epoch in (0, 1):
        whole = _batches(single, epoch)
        parts = [_batches(shard, epoch) for shard in shards]
        assert [len(p) for p in parts] == [len(whole)] * 4
        for k, batch in enumerate(whole):
            assert sorted(batch) == sorted(row for part in parts for row in part[k])
    assert (_batches(single, 0) != _batches(single, 1)) == shuffle  # a new order each epoch, from the seed


def test_sharding_rejects_a_batch_that_does_not_divide_and_custom_samplers() -> None:
    with pytest.raises(ConfigError, match="batch_size 30"):
        distributed.shard_loader(_loader(96, 30, True), seed=0, replicas=4, shard=0)
    custom = DataLoader(TensorDataset(torch.arange(8)), sampler=[3, 1, 2], batch_size=2)
    assert distributed.shard_loader(custom, seed=0, replicas=1, shard=0) is custom
    with pytest.raises(ConfigError, match="sampler"):
        distributed.shard_loader(custom, seed=0, replicas=2, shard=0)


def test_a_single_process_needs_no_process_group(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert distributed.init_distributed() is False
    assert (distributed.world_size(), distributed.rank(), distributed.is_main_process()) == (1, 0, True)
    assert distributed.broadcast_from_main({"a": 1.0}) == {"a": 1.0}
    assert distributed.mean_over_processes(2.5) == 2.5
    with distributed.main_process_first():
        pass


def test_a_half_configured_launch_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("RANK", raising=False)
    with pytest.raises(ConfigError, match="RANK"):
        distributed.init_distributed()


# ---------------------------------------------------------------------------------------------------- torchrun
CONFIG = {
    # Every row labelled: a mean over a process's labelled rows then equals the mean over the global batch.
    "heads": [], "expand_heads": ["gender", "usage"], "min_class_count": 1, "hidden": 64, "dropout": 0.0,
    "backbone": {"batch_size": 32, "num_workers": 0},
    "train": {"batch_size": 32, "lr": 3e-3, "scheduler": "none", "early_stop_patience": None,
              "monitor": "train_loss", "mode": "min", "device": "cpu", "seed": 5},
}


@pytest.fixture(scope="module")
def job(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small Fashion Product Images manifest and a tagging config for the CLI runs."""
    from fashionlens.data.readers import read_fashion_product_images
    from fashionlens.data.splits import split_manifest

    folder = tmp_path_factory.mktemp("ddp")
    products = read_fashion_product_images(shared_data / "fashion-product-images")
    split_manifest(products.subset(np.arange(len(products)) < 224), seed=0).save(folder / "manifest.parquet")
    (folder / "config.yaml").write_text(yaml.safe_dump(CONFIG), encoding="utf-8")
    return folder


def _train(job: Path, out: str, processes: int, epochs: int,
           task: tuple[str, ...] = ("tag", "train", "-c", "config.yaml")) -> dict[str, torch.Tensor]:
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1",
                 "--nproc_per_node", str(processes)] if processes > 1 else [sys.executable])
    arguments = [str(job / a) if a.endswith(".yaml") else a for a in task]
    command = [*launcher, "-m", "fashionlens", *arguments, "-m", str(job / "manifest.parquet"),
               "-o", str(job / out), "--epochs", str(epochs)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "FASHIONLENS_CACHE": str(job / "cache")}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    state = read_weights(job / out)
    return {k: v for k, v in _flatten(state).items() if isinstance(v, torch.Tensor)}


def _flatten(state: dict[str, object], prefix: str = "") -> dict[str, object]:
    flat: dict[str, object] = {}
    for key, value in state.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat


def _assert_same_weights(one: dict[str, torch.Tensor], other: dict[str, torch.Tensor]) -> None:
    assert one.keys() == other.keys() and one
    for name in one:
        torch.testing.assert_close(one[name], other[name], atol=2e-5, rtol=1e-4, msg=name)


@pytest.fixture(scope="module")
def single(job: Path) -> dict[str, torch.Tensor]:
    """The reference: one process, three epochs."""
    return _train(job, "single", processes=1, epochs=3)


@pytest.mark.slow
def test_two_gloo_processes_train_the_same_tagger_as_one(job: Path, single: dict[str, torch.Tensor]) -> None:
    _assert_same_weights(single, _train(job, "double", processes=2, epochs=3))
    one_epoch = _train(job, "short", processes=1, epochs=1)
    assert any(not torch.allclose(one_epoch[k], single[k], atol=1e-3) for k in single)  # training moved them


@pytest.mark.slow
def test_a_two_process_run_resumes_on_one_process(job: Path, single: dict[str, torch.Tensor]) -> None:
    _train(job, "resumed", processes=2, epochs=2)
    assert (job / "resumed.run" / "last.pt").is_file()
    _assert_same_weights(single, _train(job, "resumed", processes=1, epochs=3))


@pytest.mark.slow
def test_the_hierarchy_task_trains_under_two_processes(job: Path) -> None:
    """HMCN-F's loss reaches the head through the DDP wrapper; rank 0 alone writes the model directory."""
    from fashionlens.tasks.hierarchy import HierarchyClassifier

    weights = _train(job, "hierarchy", processes=2, epochs=2,
                     task=("hierarchy", "train", "--levels", "masterCategory,subCategory", "--variant", "hmcn_mtl",
                           "--min-count", "2", "--device", "cpu"))
    assert any("weighting" in name for name in weights)  # the learned uncertainty weights were trained and saved
    classifier = HierarchyClassifier.load(job / "hierarchy")
    assert classifier.metrics["epochs_run"] == 2 and classifier.metrics["val"]["top1"] > 0.5
    assert sorted(p.name for p in job.iterdir() if p.name.startswith("hierarchy")) == ["hierarchy", "hierarchy.run"]
