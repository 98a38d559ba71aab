"""Transforms: evaluation is the whole image, resized and normalised; training is random but shape-stable."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from PIL import Image

from fashionlens.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    AugmentConfig,
    describe,
    eval_transform,
    to_tensor,
    train_transform,
)


@dataclass
class Preprocess:
    input_size: int = 32
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD


def test_eval_transform_shape_and_normalisation() -> None:
    colour = (200, 100, 50)
    tensor = to_tensor(Image.new("RGB", (70, 45), colour), eval_transform(Preprocess()))
    assert tensor.shape == (3, 32, 32) and tensor.dtype == torch.float32
    expected = [(c / 255 - m) / s for c, m, s in zip(colour, IMAGENET_MEAN, IMAGENET_STD, strict=True)]
    torch.testing.assert_close(tensor.mean(dim=(1, 2)), torch.tensor(expected), atol=1e-4, rtol=0)
    assert float(tensor.std(dim=(1, 2)).max()) < 1e-4


def test_eval_transform_keeps_the_whole_image() -> None:
    image = Image.new("RGB", (64, 32), (255, 255, 255))
    image.paste((0, 0, 0), (0, 0, 8, 32))  # a black band at the left edge: a centre crop would cut it
    plain = Preprocess(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    tensor = eval_transform(plain)(image)
    assert float(tensor[:, :, :2].max()) < 0.1
    assert float(tensor[:, :, -2:].min()) > 0.9


def test_eval_transform_is_deterministic() -> None:
    image = Image.effect_noise((40, 30), 50).convert("RGB")
    transform = eval_transform(Preprocess())
    assert torch.equal(transform(image), transform(image))


def test_train_transform_is_random_but_shape_stable() -> None:
    torch.manual_seed(0)
    image = Image.effect_noise((50, 40), 60).convert("RGB")
    transform = train_transform(Preprocess(input_size=24))
    outputs = [transform(image) for _ in range(4)]
    assert all(out.shape == (3, 24, 24) and out.dtype == torch.float32 for out in outputs)
    assert not torch.equal(outputs[0], outputs[1])


def test_train_transform_without_augmentation_steps() -> None:
    off = AugmentConfig(rotation_degrees=0, shift_fraction=0, horizontal_flip=0, brightness=0, contrast=0,
                        saturation=0, hue=0, min_crop_scale=1.0)
    text = describe(train_transform(Preprocess(), off))
    assert "RandomAffine" not in text and "ColorJitter" not in text and "RandomHorizontalFlip" not in text
    assert "RandomAffine" in describe(train_transform(Preprocess()))


@pytest.mark.parametrize("change", [{"input_size": 64}, {"mean": (0.5, 0.5, 0.5)}, {"std": (0.5, 0.5, 0.5)}])
def test_describe_changes_with_the_preprocessing(change: dict[str, object]) -> None:
    base = describe(eval_transform(Preprocess()))
    assert base == describe(eval_transform(Preprocess()))
    assert "\n" not in base
    assert describe(eval_transform(Preprocess(**change))) != base  # type: ignore[arg-type]
