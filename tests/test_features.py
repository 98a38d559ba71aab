"""Feature extraction: cache hits, invalidation when a file changes, resumable shards, damaged shards, bad images."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch import nn

from fashionlens.data.images import load_image
from fashionlens.data.records import Manifest
from fashionlens.data.transforms import eval_transform
from fashionlens.errors import ConfigError, DataError, ImageError
from fashionlens.features import FeatureResult, extract_features

COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (250, 250, 0), (40, 40, 40)]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@dataclass
class Preprocess:
    input_size: int = 8
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.25, 0.25, 0.25)


class TinyBackbone(nn.Module):
    """Two layers exposing what feature extraction needs; counts the images it embeds."""

    num_features = 4

    def __init__(self, weights_id: str = "test-weights-1") -> None:
        super().__init__()
        self.name = "tiny"
        self.weights_id = weights_id
        self.preprocess = Preprocess()
        generator = torch.Generator().manual_seed(0)
        self.conv = nn.Conv2d(3, self.num_features, 3)
        for parameter in self.conv.parameters():  # the same weights in every instance
            parameter.data = torch.randn(parameter.shape, generator=generator)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.images_seen = 0

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.images_seen += images.shape[0]
        return self.pool(self.conv(images)).flatten(1)


def write_images(folder: Path, count: int = len(COLOURS)) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        path = folder / f"{index}.png"
        image = Image.new("RGB", (12, 10), COLOURS[index % len(COLOURS)])
        image.putpixel((index, 0), (index * 40, 255 - index * 40, 128))
        image.save(path)
        paths.append(path)
    return paths


def manifest_of(paths: list[Path], name: str = "toy") -> Manifest:
    return Manifest(pd.DataFrame({"path": [str(p) for p in paths]}), name=name)


def extract(manifest: Manifest, backbone: TinyBackbone, cache: Path | None, **options: object) -> FeatureResult:
    # The torch runtime: these tests count the images a Python-side backbone sees, which a compiled graph cannot.
    settings: dict[str, object] = {"batch_size": 2, "num_workers": 0, "device": "cpu", "show_progress": False,
                                   "runtime": "torch"}
    return extract_features(manifest, backbone, cache_dir=cache, **{**settings, **options})  # type: ignore[arg-type]


def shards(cache: Path) -> list[Path]:
    return sorted(cache.rglob("shard-*.npz"))


def test_vectors_match_the_backbone_on_each_image(tmp_path: Path) -> None:
    paths = write_images(tmp_path / "images")
    backbone = TinyBackbone()
    result = extract(manifest_of(paths), backbone, None)
    assert result.vectors.shape == (5, 4) and result.vectors.dtype == np.float32
    assert (result.computed, result.cached, result.failed) == (5, 0, [])
    with torch.no_grad():
        direct = backbone(eval_transform(backbone.preprocess)(load_image(paths[3]))[None])[0].numpy()
    np.testing.assert_allclose(result.vectors[3], direct, rtol=1e-5, atol=1e-6)
    assert len({tuple(v) for v in result.vectors.round(5)}) == 5


def test_second_call_is_served_from_the_cache(tmp_path: Path) -> None:
    manifest = manifest_of(write_images(tmp_path / "images"))
    first = extract(manifest, TinyBackbone(), tmp_path / "cache")
    backbone = TinyBackbone()
    second = extract(manifest, backbone, tmp_path / "cache")
    assert (second.computed, second.cached) == (0, 5)
    assert backbone.images_seen == 0
    np.testing.assert_array_equal(second.vectors, first.vectors)


def test_cache_is_per_weights(tmp_path: Path) -> None:
    manifest = manifest_of(write_images(tmp_path / "images"))
    extract(manifest, TinyBackbone(), tmp_path / "cache")
    assert extract(manifest, TinyBackbone(weights_id="test-weights-2"), tmp_path / "cache").computed == 5


def test_cache_is_per_decoder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    manifest = manifest_of(write_images(tmp_path / "images"))
    extract(manifest, TinyBackbone(), tmp_path / "cache")
    assert extract(manifest, TinyBackbone(), tmp_path / "cache").computed == 0
    monkeypatch.setattr("fashionlens.features.DECODER_ID", "a-decoder-that-returns-other-pixels")
    assert extract(manifest, TinyBackbone(), tmp_path / "cache").computed == 5


def test_changed_file_is_recomputed(tmp_path: Path) -> None:
    paths = write_images(tmp_path / "images")
    manifest = manifest_of(paths)
    first = extract(manifest, TinyBackbone(), tmp_path / "cache")
    stat = paths[1].stat()
    os.utime(paths[1], ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # touched: same bytes, new mtime
    Image.new("RGB", (12, 10), (9, 99, 199)).save(paths[4])  # replaced by a different picture
    second = extract(manifest, TinyBackbone(), tmp_path / "cache")
    assert (second.computed, second.cached) == (2, 3)
    np.testing.assert_allclose(second.vectors[1], first.vectors[1], rtol=1e-6)
    assert not np.allclose(second.vectors[4], first.vectors[4])


def test_new_rows_of_an_overlapping_manifest_are_the_only_work(tmp_path: Path) -> None:
    paths = write_images(tmp_path / "images")
    extract(manifest_of(paths[:3]), TinyBackbone(), tmp_path / "cache")
    backbone = TinyBackbone()
    result = extract(manifest_of(paths), backbone, tmp_path / "cache")
    assert (result.computed, result.cached, backbone.images_seen) == (2, 3, 2)


def test_shards_make_extraction_resumable(tmp_path: Path) -> None:
    manifest = manifest_of(write_images(tmp_path / "images"))
    cache = tmp_path / "cache"
    reference = extract(manifest, TinyBackbone(), cache, shard_size=2)
    assert len(shards(cache)) == 3  # 2 + 2 + 1 images
    assert not list(cache.rglob("*.tmp"))
    shards(cache)[-1].unlink()  # as if the run had stopped before the last shard
    resumed = extract(manifest, TinyBackbone(), cache, shard_size=2)
    assert (resumed.computed, resumed.cached) == (1, 4)
    np.testing.assert_allclose(resumed.vectors, reference.vectors, rtol=1e-6)


class _ObservedBackbone(TinyBackbone):
    """Counts the cache shards on disk at each forward pass (what a kill at that moment would leave), and advances
    a fake clock by ten seconds per batch."""

    def __init__(self, cache: Path) -> None:
        super().__init__()
        self.cache = cache
        self.now = 0.0
        self.shards_seen: list[int] = []

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.shards_seen.append(len(shards(self.cache)))
        self.now += 10.0
        return super().forward(images)


def test_shards_are_flushed_by_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import time
    from types import SimpleNamespace

    manifest = manifest_of(write_images(tmp_path / "images"))
    cache = tmp_path / "cache"
    backbone = _ObservedBackbone(cache)
    clock = SimpleNamespace(monotonic=lambda: backbone.now, perf_counter=time.perf_counter, time_ns=time.time_ns)
    monkeypatch.setattr("fashionlens.features.time", clock)
    result = extract(manifest, backbone, cache, batch_size=1, shard_size=1000, flush_seconds=25.0)
    assert result.computed == 5
    # 10 s per image: the first three go to disk after 30 s, long before the shard size is reached
    assert backbone.shards_seen == [0, 0, 0, 1, 1]
    sizes = []
    for shard in shards(cache):
        with np.load(shard) as content:
            sizes.append(len(content["keys"]))
    assert sorted(sizes) == [2, 3]


def test_interrupted_extraction_keeps_what_it_computed(tmp_path: Path) -> None:
    class Interrupted(TinyBackbone):
        def forward(self, images: torch.Tensor) -> torch.Tensor:
            if self.images_seen >= 3:
                raise KeyboardInterrupt
            return super().forward(images)

    manifest = manifest_of(write_images(tmp_path / "images"))
    cache = tmp_path / "cache"
    with pytest.raises(KeyboardInterrupt):
        extract(manifest, Interrupted(), cache, batch_size=1, shard_size=1000, flush_seconds=3600.0)
    resumed = extract(manifest, TinyBackbone(), cache, batch_size=1)
    assert (resumed.computed, resumed.cached) == (2, 3)


def test_flush_every_batch_with_zero_seconds(tmp_path: Path) -> None:
    manifest = manifest_of(write_images(tmp_path / "images"))
    backbone = _ObservedBackbone(tmp_path / "cache")
    extract(manifest, backbone, tmp_path / "cache", batch_size=2, flush_seconds=0.0)
    assert backbone.shards_seen == [0, 1, 2]
    with pytest.raises(ConfigError, match="flush_seconds"):
        extract(manifest, TinyBackbone(), tmp_path / "cache", flush_seconds=-1.0)


@pytest.mark.parametrize("damage", ["text", "truncated"])
def test_damaged_shard_is_ignored_and_recomputed(tmp_path: Path, damage: str) -> None:
    manifest = manifest_of(write_images(tmp_path / "images"))
    cache = tmp_path / "cache"
    reference = extract(manifest, TinyBackbone(), cache, shard_size=2)
    shard = shards(cache)[0]
    if damage == "text":
        shard.write_text("this is not a numpy archive")
    else:
        shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    result = extract(manifest, TinyBackbone(), cache, shard_size=2)
    assert (result.computed, result.cached) == (2, 3)
    np.testing.assert_allclose(result.vectors, reference.vectors, rtol=1e-6)
    assert shard not in shards(cache)
    assert extract(manifest, TinyBackbone(), cache).computed == 0


def test_box_is_part_of_the_cache_key(tmp_path: Path) -> None:
    path = write_images(tmp_path / "images", count=1)[0]
    frame = pd.DataFrame({"path": [str(path)] * 2, "bbox_x0": [np.nan, 0.0], "bbox_y0": [np.nan, 0.0],
                          "bbox_x1": [np.nan, 4.0], "bbox_y1": [np.nan, 4.0]})
    result = extract(Manifest(frame), TinyBackbone(), tmp_path / "cache")
    assert result.computed == 2
    assert not np.allclose(result.vectors[0], result.vectors[1])


def test_bad_images_raise_or_are_reported(tmp_path: Path) -> None:
    paths = write_images(tmp_path / "images", count=3)
    broken = tmp_path / "images" / "broken.jpg"
    broken.write_text("not an image")
    manifest = manifest_of([paths[0], broken, paths[1], tmp_path / "gone.jpg", paths[2]])
    with pytest.raises(ImageError, match=r"broken\.jpg"):
        extract(manifest, TinyBackbone(), None)
    result = extract(manifest, TinyBackbone(), tmp_path / "cache", skip_bad_images=True)
    assert result.failed == [str(broken), str(tmp_path / "gone.jpg")]
    assert np.isnan(result.vectors[[1, 3]]).all()
    assert np.isfinite(result.vectors[[0, 2, 4]]).all()
    assert result.computed == 3
    again = extract(manifest, TinyBackbone(), tmp_path / "cache", skip_bad_images=True)
    assert (again.computed, again.cached, again.failed) == (0, 3, result.failed)  # failures are not cached


def test_empty_manifest_is_a_data_error() -> None:
    empty = Manifest(pd.DataFrame({"path": []}), name="nothing-here")
    with pytest.raises(DataError, match="nothing-here"):
        extract(empty, TinyBackbone(), None)


def test_images_per_second() -> None:
    vectors = np.zeros((1, 1), dtype=np.float32)
    assert FeatureResult(vectors, computed=10, cached=0, failed=[], seconds=2.0).images_per_second == 5.0
    assert np.isnan(FeatureResult(vectors, computed=0, cached=1, failed=[], seconds=0.0).images_per_second)
