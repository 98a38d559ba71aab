"""Offline EfficientNet-Lite weights: the key mapping, equality with the source implementation, and real photos."""

from __future__ import annotations

import dataclasses

import pytest
import skimage.data
import timm
import torch
from PIL import Image
from timm.data import create_transform

from fashionlens.errors import ModelError
from fashionlens.models import Preprocess, create_classifier
from fashionlens.models.efficientnet_lite import LITE_VARIANTS, map_state_dict

VARIANTS = list(LITE_VARIANTS)

#: Real photos shipped with scikit-image and the ImageNet classes that count as right for them. Every variant takes
#: the coffee photo for espresso with a wide margin (measured softmax: Lite0 0.95, Lite1 0.54, Lite2 0.89; the
#: runner-up, cup, at most 0.04), as the README says; the cat is any of the cat classes (the variants disagree on
#: which, at 0.4-0.6).
PHOTOS = {
    "chelsea": set(range(281, 286)),  # tabby, tiger cat, Persian, Siamese, Egyptian cat
    "coffee": {967},  # espresso
}


def _source_state(name: str) -> dict[str, torch.Tensor]:
    path = LITE_VARIANTS[name].weights_path()
    state: dict[str, torch.Tensor] = torch.load(path, map_location="cpu", weights_only=True)
    return state


@pytest.mark.parametrize("name", VARIANTS)
def test_mapping_agrees_with_positional_alignment(name: str) -> None:
    target = timm.create_model(LITE_VARIANTS[name].arch).state_dict()
    mapped = map_state_dict(_source_state(name), target, "test")
    # Both layouts list tensors in forward order, so the renaming must pair the i-th source with the i-th timm key.
    assert list(mapped) == list(target)
    assert all(mapped[key].shape == target[key].shape for key in target)


def _drop_tensor(state: dict[str, torch.Tensor]) -> None:
    del state["_blocks.3._bn1.running_var"]


def _add_tensor(state: dict[str, torch.Tensor]) -> None:
    state["_blocks.99._bn1.weight"] = torch.ones(8)


def _reshape_tensor(state: dict[str, torch.Tensor]) -> None:
    state["_conv_stem.weight"] = torch.zeros(16, 3, 3, 3)


@pytest.mark.parametrize(
    ("corrupt", "culprit"),
    [
        # Flat block 3 of Lite0 (stage depths 1, 2, 2, ...) is timm's blocks.2.0; its post-depthwise BN is timm's bn2.
        (_drop_tensor, "timm blocks.2.0.bn2.running_var not filled"),
        (_add_tensor, "_blocks.99._bn1.weight has no timm counterpart"),
        (_reshape_tensor, "_conv_stem.weight (16, 3, 3, 3) vs conv_stem.weight (32, 3, 3, 3)"),
    ],
)
def test_mapping_fails_loudly_on_any_mismatch(corrupt, culprit: str) -> None:
    state = _source_state("efficientnet_lite0")
    corrupt(state)
    target = timm.create_model("tf_efficientnet_lite0").state_dict()
    with pytest.raises(ModelError, match="cannot map") as info:
        map_state_dict(state, target, "/weights/lite0.pth")
    assert culprit in str(info.value) and "/weights/lite0.pth" in str(info.value)


def test_mapping_rejects_another_variant() -> None:
    target = timm.create_model("tf_efficientnet_lite0").state_dict()
    with pytest.raises(ModelError, match=r"lite2\.pth"):
        map_state_dict(_source_state("efficientnet_lite2"), target, "lite2.pth")


def test_damaged_install_fails_its_checksum(monkeypatch: pytest.MonkeyPatch) -> None:
    variant = LITE_VARIANTS["efficientnet_lite0"]
    monkeypatch.setitem(LITE_VARIANTS, variant.name, dataclasses.replace(variant, sha256="0" * 64))
    with pytest.raises(ModelError, match="sha256"):
        create_classifier("efficientnet_lite0")


def test_classifier_only_for_offline_variants() -> None:
    with pytest.raises(ModelError, match="efficientnet_lite0"):
        create_classifier("resnet18")


@pytest.mark.parametrize("name", VARIANTS)
def test_logits_equal_the_reference_implementation(name: str) -> None:
    reference_package = pytest.importorskip(
        "efficientnet_lite_pytorch", reason="reference efficientnet-lite-pytorch (dev dependency) not installed"
    )
    variant = LITE_VARIANTS[name]
    reference = reference_package.EfficientNet.from_pretrained(
        name.replace("_", "-"), weights_path=str(variant.weights_path())
    ).eval()
    size = variant.input_size  # the reference pads for this size only
    images = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(create_classifier(name)(images), reference(images), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", VARIANTS)
def test_classifier_recognises_real_photos(name: str) -> None:
    model = create_classifier(name)
    preprocess = Preprocess.from_model(model)
    transform = create_transform(
        input_size=preprocess.input_size,
        interpolation=preprocess.interpolation,
        mean=preprocess.mean,
        std=preprocess.std,
        crop_pct=preprocess.crop_pct,
    )
    images = torch.stack([transform(Image.fromarray(getattr(skimage.data, photo)())) for photo in PHOTOS])
    with torch.no_grad():
        predicted = model(images).argmax(dim=1).tolist()
    for (photo, classes), top1 in zip(PHOTOS.items(), predicted, strict=True):
        assert top1 in classes, f"{name} took {photo} for ImageNet class {top1}"
