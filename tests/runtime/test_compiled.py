"""Compiled backbones: onnxruntime equals PyTorch, the cache is reused, corrupt and stale files are rebuilt, failed
exports and failed checks fall back to PyTorch with one warning (or fail when ONNX was asked for)."""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from fashionlens.errors import ConfigError, ModelError
from fashionlens.runtime import compiled
from fashionlens.runtime.compiled import compile_backbone, onnx_cache_path


@dataclass(frozen=True)
class Preprocess:
    input_size: int = 16
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.25, 0.25, 0.25)


class ConvBackbone(nn.Module):
    """A small conv + BN + pool network with what compilation needs."""

    def __init__(self, weights_id: str = "test-conv-1", seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.name, self.weights_id, self.preprocess = "conv", weights_id, Preprocess()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                  nn.Conv2d(8, 6, 3, stride=2), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.eval()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features: torch.Tensor = self.body(images)
        return features


class UntraceableBackbone(ConvBackbone):
    """Leaves the graph through NumPy: the exporter records a constant, so the graph is wrong for other inputs."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        shift = float(images.detach().numpy().mean())
        return super().forward(images) + shift


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "onnx"


def images(count: int = 5, seed: int = 1) -> torch.Tensor:
    return torch.randn(count, 3, 16, 16, generator=torch.Generator().manual_seed(seed))


def test_onnx_equals_torch_and_the_check_is_recorded(cache: Path) -> None:
    backbone = ConvBackbone()
    onnx_model = compile_backbone(backbone, "onnx", cache_dir=cache)
    torch_model = compile_backbone(ConvBackbone(), "torch")
    assert (onnx_model.runtime, torch_model.runtime) == ("onnx", "torch")
    batch = images()
    np.testing.assert_allclose(onnx_model(batch), torch_model(batch), atol=1e-5)
    path = onnx_cache_path(backbone, cache)
    assert onnx_model.path == path and path.is_file()
    record = json.loads(path.with_name(path.name + ".check.json").read_text())
    assert record["ok"] and record["max_abs_diff"] < 1e-5 and record["images"] == compiled.VERIFY_IMAGES


def test_auto_is_onnx_on_cpu_and_one_object_per_backbone_and_setting(cache: Path) -> None:
    backbone = ConvBackbone()
    first = compile_backbone(backbone, "auto", cache_dir=cache)
    assert first.runtime == "onnx"
    assert compile_backbone(backbone, "auto", cache_dir=cache) is first
    assert compile_backbone(backbone, "torch") is not first


def test_a_cached_file_is_reused_by_a_later_process(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    compile_backbone(ConvBackbone(), "onnx", cache_dir=cache)(images())
    path = onnx_cache_path(ConvBackbone(), cache)
    written = path.stat().st_mtime_ns

    def no_export(*args: object, **kwargs: object) -> bytes:
        raise AssertionError("the cached graph should have been used")

    monkeypatch.setattr(compiled, "_export_backbone", no_export)
    again = compile_backbone(ConvBackbone(), "onnx", cache_dir=cache)  # a new object, as in another process
    assert again.runtime == "onnx" and path.stat().st_mtime_ns == written
    np.testing.assert_allclose(again(images()), compile_backbone(ConvBackbone(), "torch")(images()), atol=1e-5)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "stale"])
def test_a_corrupt_or_stale_cached_file_is_rebuilt(cache: Path, damage: str) -> None:
    path = onnx_cache_path(ConvBackbone(), cache)
    compile_backbone(ConvBackbone(), "onnx", cache_dir=cache)(images())
    data = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(b"not an onnx file")
    else:  # a valid graph of another network under this name: its recorded key differs
        other = ConvBackbone("test-conv-2", seed=5)
        compile_backbone(other, "onnx", cache_dir=cache)
        path.write_bytes(onnx_cache_path(other, cache).read_bytes())
    rebuilt = compile_backbone(ConvBackbone(), "onnx", cache_dir=cache)
    assert rebuilt.runtime == "onnx" and path.read_bytes() != (b"not an onnx file" if damage == "garbage" else b"")
    np.testing.assert_allclose(rebuilt(images()), compile_backbone(ConvBackbone(), "torch")(images()), atol=1e-5)


def test_a_failed_export_falls_back_to_torch_with_one_warning(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def failing(*args: object, **kwargs: object) -> bytes:
        raise ModelError("ONNX export failed (unsupported operator)")

    monkeypatch.setattr(compiled, "_export", failing)
    with pytest.warns(RuntimeWarning, match="running PyTorch instead") as caught:
        model = compile_backbone(ConvBackbone(), "auto", cache_dir=cache)
    assert model.runtime == "torch" and len(caught) == 1
    with pytest.raises(ModelError, match="unsupported operator"):
        compile_backbone(ConvBackbone("test-conv-3"), "onnx", cache_dir=cache)


def test_a_graph_that_differs_from_torch_is_not_used(cache: Path) -> None:
    batch = images() * 3 + 2  # inputs whose mean differs from the zeros the graph was traced on
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        model = compile_backbone(UntraceableBackbone(), "auto", cache_dir=cache)
        with pytest.warns(RuntimeWarning, match="differs from PyTorch"):
            output = model(batch)
    assert model.runtime == "torch"
    np.testing.assert_allclose(output, UntraceableBackbone()(batch).detach().numpy(), atol=1e-5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        strict = compile_backbone(UntraceableBackbone("test-untraceable"), "onnx", cache_dir=cache)
    with pytest.raises(ModelError, match="differs from PyTorch"):
        strict(batch)


def test_random_weights_are_never_cached(cache: Path) -> None:
    assert compile_backbone(ConvBackbone("random"), "auto", cache_dir=cache).runtime == "torch"
    in_memory = compile_backbone(ConvBackbone("random"), "onnx", cache_dir=cache)
    assert in_memory.runtime == "onnx" and in_memory.path is None and not cache.exists()


def test_an_unknown_runtime_is_one_line() -> None:
    with pytest.raises(ConfigError, match="unknown runtime 'tensorrt'; use one of auto, torch, onnx"):
        compile_backbone(ConvBackbone(), "tensorrt")
