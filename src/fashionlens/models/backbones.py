"""Image backbones: one factory over timm that yields pooled features, with offline ImageNet weights by default.

Every task (attribute tags, categories, street-to-shop retrieval) starts from the same thing: a network that turns
an image into one feature vector. :func:`create_backbone` builds it from any timm architecture and is explicit about
where the weights come from (``weights_id``), because cached features are only valid for the weights that made them.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import safetensors.torch
import timm
import torch
from timm.data import resolve_data_config
from timm.models import group_modules
from torch import nn

from fashionlens.errors import ConfigError, ModelError, first_line
from fashionlens.models.efficientnet_lite import LITE_VARIANTS, create_classifier, resolve_variant
from fashionlens.runtime.devices import check_runtime

_WEIGHT_SUFFIXES = (".pth", ".pt", ".safetensors")
#: Accepted network input sides (pixels): below, the stages pool away the whole image; above, a CPU pass takes seconds.
MIN_INPUT_SIZE, MAX_INPUT_SIZE = 32, 1024


@dataclass(frozen=True)
class Preprocess:
    """How images must be prepared for a backbone's weights; the data pipeline builds its transforms from this.

    Attributes:
        input_size: Side of the square network input, in pixels.
        mean: Per-channel RGB mean subtracted from pixels scaled to 0..1.
        std: Per-channel RGB standard deviation dividing them.
        interpolation: Resize filter, as timm names it (``"bicubic"``, ``"bilinear"``, ...).
        crop_pct: Evaluation centre crop: resize the shorter side to ``input_size / crop_pct``, crop ``input_size``.
    """

    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str
    crop_pct: float

    @classmethod
    def from_model(cls, model: nn.Module) -> Preprocess:
        """The preprocessing recorded in a timm model's ``pretrained_cfg``."""
        config = resolve_data_config(model=model)
        mean, std = (tuple(float(v) for v in config[key]) for key in ("mean", "std"))
        return cls(
            input_size=int(config["input_size"][-1]),
            mean=(mean[0], mean[1], mean[2]),
            std=(std[0], std[1], std[2]),
            interpolation=str(config["interpolation"]),
            crop_pct=float(config["crop_pct"]),
        )


class Backbone(nn.Module):
    """A timm network without its classifier: images ``(B, 3, H, W)`` → average-pooled features ``(B, num_features)``.

    Attributes:
        model: The timm network (``num_classes=0``, ``global_pool="avg"``); its state dict is timm's.
        name: Backbone name as given to :func:`create_backbone` (aliases resolved).
        num_features: Width of the output features.
        preprocess: Preprocessing the weights expect.
        weights_id: Where the weights came from: ``<package>==<version>``, ``sha256:<hex>`` of a weights file,
            ``timm-hub:<id>``, or ``random`` (not reproducible: never cache features under it).
        frozen: The freeze setting in force (see :meth:`freeze`).
    """

    def __init__(self, model: nn.Module, name: str, weights_id: str) -> None:
        super().__init__()
        self.model = model
        self.name = name
        self.weights_id = weights_id
        self.preprocess = Preprocess.from_model(model)
        # Some timm heads (e.g. MobileNetV3) widen the pooled features with a pre-logits layer.
        width: Any = getattr(model, "head_hidden_size", None) or getattr(model, "num_features", None)
        self.num_features = int(width)
        self.frozen: int | str | None = None
        self._frozen_modules: list[str] = []

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Pooled features of normalised ``images``."""
        features: torch.Tensor = self.model(images)
        return features

    def train(self, mode: bool = True) -> Self:
        """Set training mode, except for frozen parts, which stay in eval mode so their BatchNorm stats never move."""
        super().train(mode)
        for name in self._frozen_modules:
            self.model.get_submodule(name).eval()
        return self

    def freeze(self, spec: int | str | None) -> None:
        """Freeze nothing (None), the stem and the first ``spec`` stages (int), or everything (``"all"``).

        Stages are timm's coarse parameter groups (``model.group_matcher(coarse=True)``) in forward order: group 0
        is the stem, groups 1..K the stages. For (tf_)EfficientNets the stem is ``conv_stem`` + ``bn1`` and the
        stages are ``blocks.0`` … ``blocks.6``, with ``conv_head`` + ``bn2`` merged into the last one by timm, so
        ``0`` freezes the stem only and ``7`` every parameter; for ResNets the stages are ``layer1`` … ``layer4``.
        Frozen parameters get ``requires_grad=False`` and the layers holding them stay in eval mode even under
        :meth:`train`, so their BatchNorm running statistics, and hence the features they compute, do not change
        while the rest is trained (``"all"`` puts the whole network, dropout included, in eval mode).

        Raises:
            ConfigError: ``spec`` is not None, ``"all"`` or a stage count of this model.
        """
        if spec is None:
            modules = []
        elif spec == "all":
            modules = [""]
        elif isinstance(spec, int) and not isinstance(spec, bool):
            modules = self._stem_and_stages(spec)
        else:
            raise ConfigError(f"freeze={spec!r} is invalid: use None, a number of stages, or 'all'")
        self.model.requires_grad_(True)
        for name in modules:
            self.model.get_submodule(name).requires_grad_(False)
        self.frozen = spec
        self._frozen_modules = modules
        self.train(self.training)

    def _stem_and_stages(self, count: int) -> list[str]:
        """Names of the modules in the stem and the first ``count`` stages."""
        matcher = getattr(self.model, "group_matcher", None)
        if matcher is None:
            raise ConfigError(f"freeze={count} needs stages, which timm does not define for {self.name}; use 'all'")
        groups = group_modules(self.model, matcher(coarse=True))
        if not 0 <= count < len(groups):
            raise ConfigError(f"freeze={count} is out of range for {self.name}: use 0..{len(groups) - 1} or 'all'")
        return [module for group in sorted(groups)[: count + 1] for module in groups[group]]


def list_backbones() -> list[str]:
    """Backbone names whose pretrained weights are installed, so they work offline with ``pretrained=True``."""
    return list(LITE_VARIANTS)


def create_backbone(
    name: str = "efficientnet_lite0",
    pretrained: bool = True,
    weights: str | Path | None = None,
    freeze: int | str | None = None,
    input_size: int | None = None,
) -> Backbone:
    """Build a pooled-feature backbone from any timm architecture.

    Weights, by precedence: ``weights`` (a local file; ``pretrained`` is then ignored); else, for the offline names
    of :func:`list_backbones`, the ImageNet weights installed with fashionlens; else timm's hub weights
    (``pretrained=True``, needs network) or random initialisation (``pretrained=False``).

    Args:
        name: ``efficientnet_lite0/1/2`` (offline ImageNet weights mapped into timm's ``tf_efficientnet_lite0/1/2``,
            which the ``tf_`` names also select; timm's own ``efficientnet_lite*`` architectures are thus not
            reachable by these names), or any other ``timm.list_models()`` name.
        pretrained: Load pretrained weights (offline for EfficientNet-Lite, from timm's hub otherwise).
        weights: A ``.pth``/``.pt``/``.safetensors`` file holding a state dict of this architecture, either bare or
            under a checkpoint's ``"state_dict"`` or ``"model"`` key; a saved :class:`Backbone` works too.
            Classifier tensors are ignored.
        freeze: See :meth:`Backbone.freeze`.
        input_size: Side of the square network input (e.g. a paper's resolution); ``None``: the size the weights
            were trained at (timm's pretrained config). The pooled features work at any size; the feature cache and
            ONNX metadata follow the preprocessing, so each size has its own.

    Raises:
        ModelError: Unknown name (close matches are listed), unreadable or mismatched weights file, or hub weights
            that cannot be fetched.
        ConfigError: Invalid ``freeze`` or ``input_size``.
    """
    if input_size is not None and not MIN_INPUT_SIZE <= input_size <= MAX_INPUT_SIZE:
        raise ConfigError(f"backbone input_size must lie in [{MIN_INPUT_SIZE}, {MAX_INPUT_SIZE}] pixels, "
                          f"got {input_size}")
    variant = resolve_variant(name)
    if variant is not None:
        name = variant.name
    elif not timm.is_model(name):
        raise _unknown_name(name)
    if variant is not None and pretrained and weights is None:
        classifier = create_classifier(name)
        classifier.reset_classifier(0, "avg")
        model: nn.Module = classifier
        weights_id = variant.weights_id()
    else:
        hub = pretrained and weights is None
        model = _create_timm(variant.arch if variant else name, hub, variant.pretrained_cfg() if variant else None)
        weights_id = "random"
        if hub:
            config: Any = getattr(model, "pretrained_cfg", {})
            weights_id = f"timm-hub:{config.get('hf_hub_id') or config.get('url') or name}"
        if weights is not None:
            weights_id = _load_weights_file(model, Path(weights), name)
    backbone = Backbone(model, name, weights_id)
    if input_size is not None:
        backbone.preprocess = dataclasses.replace(backbone.preprocess, input_size=input_size)
    backbone.freeze(freeze)
    return backbone.train()


@dataclass
class BackboneConfig:
    """Which pretrained network turns images into features, how much of it a fine-tune trains, and how it runs.

    Attributes:
        name: Backbone name (see :func:`create_backbone`).
        pretrained: Load pretrained weights.
        weights: A local weights file (overrides ``pretrained``).
        freeze: What stays frozen when a task *fine-tunes* the backbone (``mode: finetune``): the stem and the first
            ``freeze`` stages (an int), nothing (``None``) or everything (``"all"``); see :meth:`Backbone.freeze`.
            Models on frozen features (``mode: features``/``per_label``) always use the backbone fully frozen.
        batch_size: Images per forward pass when extracting features.
        num_workers: Image-decoding workers (``None``: a default for this machine).
        input_size: Network input side (e.g. a paper's resolution); ``None`` keeps the size the weights were
            trained at.
        runtime: Inference runtime: ``auto``, ``torch`` or ``onnx`` (see :mod:`fashionlens.runtime`).
    """

    name: str = "efficientnet_lite0"
    pretrained: bool = True
    weights: str | None = None
    freeze: int | str | None = 2
    batch_size: int = 64
    num_workers: int | None = None
    input_size: int | None = None
    runtime: str = "auto"

    def __post_init__(self) -> None:
        check_runtime(self.runtime)
        if not (self.freeze is None or self.freeze == "all"
                or (isinstance(self.freeze, int) and not isinstance(self.freeze, bool) and self.freeze >= 0)):
            raise ConfigError(f"backbone.freeze={self.freeze!r} is invalid: use a number of stages (>= 0), "
                              f"null (nothing frozen) or 'all'")
        if self.batch_size < 1:
            raise ConfigError(f"backbone.batch_size must be >= 1, got {self.batch_size}")


def build_backbone(config: BackboneConfig, finetune: bool = False) -> Backbone:
    """The backbone ``config`` describes: fully frozen (for frozen features and inference), or, with ``finetune``,
    frozen as ``config.freeze`` says (for end-to-end training)."""
    return create_backbone(config.name, pretrained=config.pretrained, weights=config.weights,
                           freeze=config.freeze if finetune else "all", input_size=config.input_size)


def _create_timm(arch: str, hub: bool, pretrained_cfg: dict[str, Any] | None) -> nn.Module:
    """A timm model without classifier; a failure to fetch hub weights becomes a one-line :class:`ModelError`."""
    try:
        return timm.create_model(
            arch, pretrained=hub, num_classes=0, global_pool="avg", pretrained_cfg_overlay=pretrained_cfg
        )
    except (OSError, RuntimeError) as error:
        if not hub:
            raise
        raise ModelError(
            f"cannot get timm hub weights for {arch!r} ({type(error).__name__}: {first_line(error)}); "
            "pass weights=PATH to a local weights file, or pretrained=False"
        ) from error


def _load_weights_file(model: nn.Module, path: Path, name: str) -> str:
    """Load a weights file into ``model`` strictly (classifier tensors aside); return ``sha256:<hex>`` of the file."""
    state = _read_state_dict(path)
    if state and all(key.startswith("model.") for key in state):  # a saved Backbone
        state = {key.removeprefix("model."): tensor for key, tensor in state.items()}
    classifier: Any = getattr(model, "pretrained_cfg", {}).get("classifier") or ()
    heads = tuple(f"{head}." for head in ([classifier] if isinstance(classifier, str) else classifier))
    state = {key: tensor for key, tensor in state.items() if not key.startswith(heads)}
    target = model.state_dict()
    problems = [f"missing {key}" for key in target if key not in state]
    problems += [f"unexpected {key}" for key in state if key not in target]
    problems += [
        f"{key} {tuple(tensor.shape)} vs {tuple(target[key].shape)}"
        for key, tensor in state.items()
        if key in target and tensor.shape != target[key].shape
    ]
    if problems:
        shown = "; ".join(problems[:4]) + (f"; and {len(problems) - 4} more" if len(problems) > 4 else "")
        raise ModelError(f"weights file {path} does not fit backbone {name}: {shown}")
    model.load_state_dict(state)
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return f"sha256:{digest.hexdigest()}"


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a weights file: a bare state dict, or the one under a checkpoint's ``state_dict``/``model`` key."""
    if not path.is_file():
        raise ModelError(f"weights file not found: {path}")
    if path.suffix not in _WEIGHT_SUFFIXES:
        raise ModelError(f"weights file {path} must be one of {', '.join(_WEIGHT_SUFFIXES)}")
    try:
        if path.suffix == ".safetensors":
            data: Any = safetensors.torch.load_file(path)
        else:
            data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a damaged or foreign file fails in many library-specific ways
        raise ModelError(f"cannot read weights file {path}: {type(error).__name__}: {first_line(error)}") from error
    if isinstance(data, Mapping):
        data = next((data[key] for key in ("state_dict", "model") if isinstance(data.get(key), Mapping)), data)
    if not isinstance(data, Mapping) or not all(isinstance(value, torch.Tensor) for value in data.values()):
        raise ModelError(f"weights file {path} holds no state dict (names → tensors, or under 'state_dict'/'model')")
    return dict(data)


def _unknown_name(name: str) -> ModelError:
    """Error for a name neither offline nor in timm, suggesting close matches."""
    candidates = timm.list_models(f"*{name}*")[:5]
    candidates += difflib.get_close_matches(name, [*LITE_VARIANTS, *timm.list_models()], n=5, cutoff=0.6)
    close = list(dict.fromkeys(candidates))[:5]
    hint = f"; close matches: {', '.join(close)}" if close else ""
    return ModelError(f"unknown backbone {name!r}{hint} (offline: {', '.join(LITE_VARIANTS)}; or any timm model)")
