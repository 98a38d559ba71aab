"""Image transforms for training and evaluation, driven by the backbone's preprocessing settings.

Evaluation resizes the *whole* image to the network's square input (no centre crop): product photos are framed
tightly and a crop would cut off sleeves, hems and shoes. Training adds the augmentation used by the seed papers
(small rotations, shifts, horizontal flips, colour jitter) plus a mild random-resized crop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol, overload

import torch
from PIL import Image
from torchvision.transforms import v2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class PreprocessLike(Protocol):
    """What a transform needs to know about a backbone's expected input (read-only, so frozen settings fit)."""

    @property
    def input_size(self) -> int: ...

    @property
    def mean(self) -> tuple[float, float, float]: ...

    @property
    def std(self) -> tuple[float, float, float]: ...


@dataclass(frozen=True)
class AugmentConfig:
    """Training augmentation strengths (zero disables one)."""

    rotation_degrees: float = 10.0
    shift_fraction: float = 0.1
    horizontal_flip: float = 0.5
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2
    hue: float = 0.02
    min_crop_scale: float = 0.7


@overload
def eval_transform(preprocess: PreprocessLike, separate: Literal[False] = False) -> v2.Compose: ...


@overload
def eval_transform(preprocess: PreprocessLike, separate: Literal[True]) -> tuple[v2.Compose, v2.Compose]: ...


def eval_transform(preprocess: PreprocessLike, separate: bool = False) -> v2.Compose | tuple[v2.Compose, v2.Compose]:
    """Deterministic transform: resize to the square input, to float tensor, normalise.

    With ``separate`` (as timm's ``create_transform(separate=True)``) the two stages come apart: the CPU side (PIL
    image → resized ``uint8`` tensor, run in decode workers) and the model side (``uint8`` batch → normalised float,
    run beside the network). Decode workers then ship a quarter of the bytes of float32, and running both stages in
    order gives exactly the single transform's tensor.
    """
    size = int(preprocess.input_size)
    cpu_side = v2.Compose([
        v2.PILToTensor(),
        v2.Resize((size, size), interpolation=v2.InterpolationMode.BILINEAR, antialias=True),
    ])
    model_side = v2.Compose([
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(list(preprocess.mean), list(preprocess.std)),
    ])
    if separate:
        return cpu_side, model_side
    return v2.Compose([*cpu_side.transforms, *model_side.transforms])


def train_transform(preprocess: PreprocessLike, augment: AugmentConfig | None = None) -> v2.Compose:
    """Random transform for training: the seeds' rotation, shift, flip and colour jitter."""
    augment = augment or AugmentConfig()
    size = int(preprocess.input_size)
    steps: list[torch.nn.Module] = [
        v2.PILToTensor(),
        v2.RandomResizedCrop((size, size), scale=(augment.min_crop_scale, 1.0), ratio=(0.8, 1.25), antialias=True),
    ]
    if augment.rotation_degrees or augment.shift_fraction:
        shift = (augment.shift_fraction, augment.shift_fraction) if augment.shift_fraction else None
        steps.append(v2.RandomAffine(degrees=augment.rotation_degrees, translate=shift, fill=255))
    if augment.horizontal_flip:
        steps.append(v2.RandomHorizontalFlip(augment.horizontal_flip))
    if any((augment.brightness, augment.contrast, augment.saturation, augment.hue)):
        steps.append(v2.ColorJitter(augment.brightness, augment.contrast, augment.saturation, augment.hue))
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(preprocess.mean), list(preprocess.std))]
    return v2.Compose(steps)


def describe(transform: v2.Compose) -> str:
    """A stable text description of a transform, used in feature-cache keys."""
    return " | ".join(repr(step).replace("\n", " ") for step in transform.transforms)


def to_tensor(image: Image.Image, transform: v2.Compose) -> torch.Tensor:
    """Apply ``transform`` to a PIL image and return a (3, H, W) float tensor."""
    return transform(image)
