"""Compiled backbones: a backbone's forward pass on the fastest runtime this machine offers.

Every model kind (tagger, ensemble, hierarchy, embedder) is a head on a backbone's pooled features, and the backbone
is nearly all of the cost, so the backbone is what gets compiled; the heads stay PyTorch (microseconds on features)
and one compiled backbone serves every model, and the feature cache, that share it. :func:`compile_backbone` picks:

* ``torch`` -- PyTorch, channels-last on CPU (1.5-1.8x eager NCHW there) and AMP on CUDA;
* ``onnx`` -- onnxruntime on CPU (2-3x PyTorch eager on our 2-core box, more when it is busy). The backbone is
  exported once per (name, weights id, input size, exporter recipe, torch/timm versions) to
  ``<cache>/onnx/<name>-<digest>.onnx``, fine-tuned backbones included (their weights id is a fingerprint of their
  weights). The file records its key; a file that does not load (corrupt) or holds another key (stale) is rebuilt,
  never used. The first time a file is used it is checked against PyTorch on the first real batch it sees, and the
  result is written beside it, so the check runs once per file, not once per process;
* ``auto`` -- ``onnx`` on CPU, ``torch`` on CUDA. When the export fails (some timm architecture the exporter cannot
  trace) or the check finds a difference above tolerance, it falls back to ``torch`` with one warning line.

Backbones with random weights (``weights_id == "random"``) are never written to the cache: ``auto`` runs them with
PyTorch, and an explicit ``onnx`` exports them to memory.
"""

from __future__ import annotations

import hashlib
import io
import json
import warnings
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import onnx
import onnxruntime as ort
import timm
import torch
from torch import nn

from fashionlens.errors import ConfigError, ModelError, first_line
from fashionlens.io import atomic_path, default_cache_dir
from fashionlens.runtime.devices import check_runtime, resolve_device

ONNX_OPSET = 17
INPUT_NAME = "images"
FEATURES_OUTPUT = "features"
EXPORT_RECIPE = "backbone-v1"
"""Bumped whenever the way backbones are exported changes, so older cached files become stale and are rebuilt."""
VERIFY_IMAGES = 4
"""Images of the first real batch on which a fresh ONNX file is checked against PyTorch."""
TOLERANCE = 1e-4
"""Largest accepted difference from PyTorch, relative to the largest feature magnitude (at least 1): float32 kernels
of the two runtimes sum in different orders, which moves features by about 1e-6."""
KEY_PROPERTY = "fashionlens_key"
CHANNELS_LAST_ON_CPU = True
"""Whether the ``torch`` runtime runs channels-last on the CPU by default (benchmarks switch it off to measure the
eager NCHW baseline)."""


class CompilableBackbone(Protocol):
    """A backbone as compilation and feature extraction see it (see :class:`fashionlens.models.Backbone`)."""

    name: str
    weights_id: str
    num_features: int

    @property
    def preprocess(self) -> Any: ...

    def __call__(self, images: torch.Tensor) -> torch.Tensor: ...

    def eval(self) -> nn.Module: ...


# ---------------------------------------------------------------------------------------------------- runtimes
class TorchForward:
    """A PyTorch module in inference mode: channels-last on CPU, float16 autocast on CUDA.

    Converting the module's weights to channels-last changes their strides, not their values: state dicts, weight
    fingerprints and saved models are unaffected.
    """

    runtime = "torch"

    def __init__(self, module: nn.Module, device: torch.device, channels_last: bool | None = None):
        self.device = device
        self.channels_last = (device.type == "cpu" and CHANNELS_LAST_ON_CPU) if channels_last is None else channels_last
        # Never inside inference mode: the moved weights would become inference tensors that cannot train again.
        with torch.inference_mode(False):
            self.module = module.eval().to(device)
            if self.channels_last:
                self.module.to(memory_format=torch.channels_last)  # type: ignore[call-overload]

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        images = torch.as_tensor(images).to(self.device, non_blocking=True)
        if self.channels_last and images.dim() == 4:
            images = images.contiguous(memory_format=torch.channels_last)
        if self.device.type == "cuda":
            with torch.autocast("cuda", dtype=torch.float16):
                return self.module(images).float()  # type: ignore[no-any-return]
        return self.module(images)  # type: ignore[no-any-return]


def session_options(threads: int | None = None) -> ort.SessionOptions:
    """onnxruntime settings for fashionlens' CPU inference.

    Args:
        threads: Intra-op threads (``None``: as many as torch uses, so ``OMP_NUM_THREADS`` and
            ``torch.set_num_threads`` govern both runtimes alike). A service running several inference threads passes
            fewer.
    """
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.inter_op_num_threads = 1
    options.intra_op_num_threads = max(1, int(threads if threads is not None else torch.get_num_threads()))
    # Spinning threads burn the cores that decode workers and request threads need; sleeping costs little here.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


class OnnxForward:
    """An ONNX graph run by onnxruntime on the CPU: a batch in, its single output (or ``{name: output}``) out.

    Args:
        model: An ``.onnx`` file or its serialised bytes.
        threads: See :func:`session_options`.

    Raises:
        ModelError: The file is missing or onnxruntime cannot load it (named).
    """

    runtime = "onnx"

    def __init__(self, model: str | Path | bytes, threads: int | None = None):
        source = model if isinstance(model, bytes) else str(model)
        if not isinstance(model, bytes) and not Path(model).is_file():
            raise ModelError(f"ONNX model not found: {model}")
        try:
            self.session = ort.InferenceSession(source, session_options(threads), providers=["CPUExecutionProvider"])
        except Exception as error:  # onnxruntime raises its own pybind exception types
            shown = "<in memory>" if isinstance(model, bytes) else model
            raise ModelError(f"cannot load ONNX model {shown}: {first_line(error)}") from error
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [output.name for output in self.session.get_outputs()]
        self.metadata: dict[str, str] = dict(self.session.get_modelmeta().custom_metadata_map)

    def __call__(self, images: torch.Tensor | np.ndarray) -> np.ndarray | dict[str, np.ndarray]:
        batch = images.numpy(force=True) if isinstance(images, torch.Tensor) else images
        values = self.session.run(self.output_names, {self.input_name: np.ascontiguousarray(batch, np.float32)})
        if len(values) == 1:
            return np.asarray(values[0])
        return dict(zip(self.output_names, (np.asarray(v) for v in values), strict=True))


# ---------------------------------------------------------------------------------------------------- export
def export_graph(module: nn.Module, example: torch.Tensor, output_names: Sequence[str], opset: int = ONNX_OPSET,
                 dynamo: bool | None = None, metadata: dict[str, str] | None = None) -> bytes:
    """Serialised, checked ONNX of ``module`` (in eval mode) with a dynamic batch axis on input and outputs.

    Args:
        module: The graph to export; its outputs are positional, named by ``output_names``.
        example: An input batch of the right shape (its batch size does not matter).
        output_names: One name per output.
        opset: ONNX opset (17 or later).
        dynamo: ``False``: TorchScript exporter; ``True``: the torch.export-based one; ``None``: TorchScript, falling
            back to torch.export where it fails (TorchScript is simpler for timm's EfficientNets).
        metadata: ``metadata_props`` to record in the file.

    Raises:
        ModelError: Both exporters failed, or the result is not a valid ONNX model.
    """
    names = list(output_names)
    was_training = module.training
    module.eval()
    try:
        data = _export(module, example, names, opset, dynamo)
    finally:
        module.train(was_training)
    model = onnx.load_from_string(data)
    if metadata:
        onnx.helper.set_model_props(model, metadata)
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as error:
        raise ModelError(f"ONNX export is invalid: {str(error).splitlines()[0]}") from error
    return bytes(model.SerializeToString())


def _export(module: nn.Module, example: torch.Tensor, output_names: list[str], opset: int,
            dynamo: bool | None) -> bytes:
    buffer = io.BytesIO()
    errors: list[str] = []
    if dynamo is not True:
        axes = {name: {0: "batch"} for name in [INPUT_NAME, *output_names]}
        try:
            target: Any = buffer  # the TorchScript exporter writes to file objects too, though typed for paths
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice, on every export
                torch.onnx.export(module, (example,), target, dynamo=False, opset_version=opset,
                                  input_names=[INPUT_NAME], output_names=output_names, dynamic_axes=axes,
                                  do_constant_folding=True)
            return buffer.getvalue()
        except Exception as error:  # the legacy exporter is deprecated: any failure falls back to torch.export
            if dynamo is False:
                raise ModelError(f"ONNX export failed: {type(error).__name__}: {first_line(error)}") from error
            errors.append(f"TorchScript exporter: {type(error).__name__}: {first_line(error)}")
    try:
        batch = torch.export.Dim("batch", min=1)
        # torch.export emits opset 18 natively; asking for less makes it down-convert, which fails on Pad.
        program = torch.onnx.export(module, (example,), dynamo=True, opset_version=max(opset, 18), verbose=False,
                                    input_names=[INPUT_NAME], output_names=output_names,
                                    dynamic_shapes=({0: batch},), optimize=True)
        if program is None:
            raise RuntimeError("torch.onnx.export returned no program")
        return bytes(program.model_proto.SerializeToString())
    except Exception as error:  # exporter failures come in many library-specific types
        errors.append(f"torch.export exporter: {type(error).__name__}: {first_line(error)}")
        raise ModelError(f"ONNX export failed ({'; '.join(errors)})") from error


# ---------------------------------------------------------------------------------------------------- cache
def backbone_key(backbone: CompilableBackbone) -> str:
    """Everything an exported backbone graph depends on."""
    preprocess = backbone.preprocess
    return "|".join([backbone.name, backbone.weights_id, f"input={int(preprocess.input_size)}", EXPORT_RECIPE,
                     f"opset={ONNX_OPSET}", f"torch={torch.__version__}", f"timm={timm.__version__}"])


def onnx_cache_path(backbone: CompilableBackbone, cache_dir: str | Path | None = None) -> Path:
    """Where the compiled graph of ``backbone`` is cached."""
    digest = hashlib.sha1(backbone_key(backbone).encode()).hexdigest()[:16]
    return Path(cache_dir or default_cache_dir() / "onnx") / f"{backbone.name}-{digest}.onnx"


def _check_file(path: Path) -> Path:
    return path.with_name(path.name + ".check.json")


def _cached_session(backbone: CompilableBackbone, path: Path, threads: int | None) -> OnnxForward | None:
    """The cached graph when it loads and holds this backbone's key; ``None`` (and the file removed) otherwise."""
    if not path.is_file():
        return None
    try:
        forward = OnnxForward(path, threads)
    except ModelError:
        forward = None  # corrupt or truncated: rebuilt below
    if forward is not None and forward.metadata.get(KEY_PROPERTY) == backbone_key(backbone):
        return forward
    path.unlink(missing_ok=True)  # stale (another key) or unreadable: never used
    _check_file(path).unlink(missing_ok=True)
    return None


def _export_backbone(backbone: CompilableBackbone, path: Path | None) -> bytes:
    module: Any = backbone
    size = int(backbone.preprocess.input_size)
    data = export_graph(module, torch.zeros(2, 3, size, size), [FEATURES_OUTPUT],
                        metadata={KEY_PROPERTY: backbone_key(backbone)})
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path, durable=False) as tmp:
            tmp.write_bytes(data)
    return data


# ---------------------------------------------------------------------------------------------------- compiled
class CompiledBackbone:
    """A backbone's forward pass on the chosen runtime: normalised images ``(B, 3, H, W)`` → pooled features
    ``(B, F)`` float32 NumPy. Made by :func:`compile_backbone`.

    Attributes:
        runtime: ``torch`` or ``onnx``: what actually runs (``auto`` resolved, fallbacks applied).
        backbone: The PyTorch backbone (the reference, and the fallback).
        path: The cached ONNX file (``onnx`` runtime with reproducible weights), else ``None``.
    """

    def __init__(self, backbone: CompilableBackbone, forward: TorchForward | OnnxForward,
                 reference: TorchForward | None = None, path: Path | None = None, strict: bool = False):
        self.backbone = backbone
        self._forward = forward
        self._reference = reference  # set while the ONNX graph still awaits its check against PyTorch
        self.path = path
        self._strict = strict
        self.max_abs_diff: float | None = None

    @property
    def runtime(self) -> str:
        return self._forward.runtime

    def __call__(self, images: torch.Tensor) -> np.ndarray:
        if self._reference is not None and len(images):
            self._verify(images[:VERIFY_IMAGES])
        output = self._forward(images)
        if isinstance(output, torch.Tensor):
            return np.asarray(output.detach().float().cpu().numpy())
        assert isinstance(output, np.ndarray), "a backbone graph has one output"
        return output

    def warm_up(self, images: torch.Tensor) -> None:
        """Run a forward pass for its side effects only (lazy initialisation), without using it as the check of a
        fresh ONNX graph: that must see real images."""
        self._forward(images)

    def _verify(self, images: torch.Tensor) -> None:
        """Compare the fresh ONNX graph with PyTorch on real images; fall back to PyTorch when they differ."""
        reference = self._reference
        assert reference is not None
        self._reference = None
        expected = reference(images).float().cpu().numpy()
        got = self._forward(images)
        assert isinstance(got, np.ndarray)
        scale = max(1.0, float(np.abs(expected).max(initial=0.0)))
        diff = float(np.abs(got - expected).max(initial=0.0))
        self.max_abs_diff = diff
        ok = diff <= TOLERANCE * scale
        if self.path is not None:
            record = {"key": backbone_key(self.backbone), "max_abs_diff": diff, "scale": scale, "ok": ok,
                      "images": len(images)}
            with atomic_path(_check_file(self.path), durable=False) as tmp:
                tmp.write_text(json.dumps(record), encoding="utf-8")
        if not ok:
            message = (f"the ONNX graph of {self.backbone.name} differs from PyTorch by {diff:.3g} (tolerance "
                       f"{TOLERANCE * scale:.3g})")
            if self._strict:
                raise ModelError(f"{message}; use runtime 'torch'")
            warnings.warn(f"{message}; running PyTorch instead", RuntimeWarning, stacklevel=3)
            self._forward = reference


_COMPILED: weakref.WeakKeyDictionary[Any, dict[tuple[str, str, int | None, bool | None], CompiledBackbone]] = (
    weakref.WeakKeyDictionary())


def compile_backbone(backbone: CompilableBackbone, runtime: str = "auto", device: str | torch.device | None = None,
                     threads: int | None = None, cache_dir: str | Path | None = None,
                     channels_last: bool | None = None) -> CompiledBackbone:
    """The forward pass of ``backbone`` on ``runtime`` (see the module docstring), made once per backbone object
    and setting in this process.

    Args:
        backbone: A pooled-feature backbone (:func:`fashionlens.models.create_backbone`).
        runtime: ``auto``, ``torch`` or ``onnx``.
        device: ``cpu``, ``cuda`` or ``None``/``auto``. ``onnx`` runs on the CPU only.
        threads: onnxruntime intra-op threads (``None``: as many as torch uses).
        cache_dir: Where compiled graphs are cached (default ``<fashionlens cache>/onnx``).
        channels_last: PyTorch memory format (``None``: channels-last on CPU); for comparisons with eager NCHW.

    Raises:
        ConfigError: Unknown runtime, or ``onnx`` asked for on a CUDA device.
        ModelError: ``onnx`` asked for explicitly and the export fails.
    """
    check_runtime(runtime)
    torch_device = resolve_device(None if device in (None, "auto") else str(device))
    if runtime == "onnx" and torch_device.type != "cpu":
        raise ConfigError(f"runtime 'onnx' runs on the CPU; use runtime 'torch' (or 'auto') on {torch_device}")
    resolved = runtime
    if runtime == "auto":
        resolved = "onnx" if torch_device.type == "cpu" and backbone.weights_id != "random" else "torch"
    setting = (resolved, str(torch_device), threads, channels_last)
    made = _COMPILED.setdefault(backbone, {})
    if setting not in made:
        made[setting] = _compile(backbone, resolved, torch_device, threads, cache_dir, strict=runtime == "onnx",
                                 channels_last=channels_last)
    return made[setting]


def _compile(backbone: CompilableBackbone, runtime: str, device: torch.device, threads: int | None,
             cache_dir: str | Path | None, strict: bool, channels_last: bool | None = None) -> CompiledBackbone:
    module: Any = backbone
    if runtime == "torch":
        return CompiledBackbone(backbone, TorchForward(module, device, channels_last))
    path = None if backbone.weights_id == "random" else onnx_cache_path(backbone, cache_dir)
    forward = _cached_session(backbone, path, threads) if path is not None else None
    verified = forward is not None and path is not None and _checked(path, backbone)
    if forward is None:
        try:
            data = _export_backbone(backbone, path)
            forward = OnnxForward(path if path is not None else data, threads)
        except ModelError as error:
            if strict:
                raise
            warnings.warn(f"cannot run {backbone.name} with onnxruntime ({error}); running PyTorch instead",
                          RuntimeWarning, stacklevel=3)
            return CompiledBackbone(backbone, TorchForward(module, device))
    reference = None if verified else TorchForward(module, device)
    return CompiledBackbone(backbone, forward, reference, path, strict)


def _checked(path: Path, backbone: CompilableBackbone) -> bool:
    """Whether the cached graph already passed its check against PyTorch (a failed check is redone: it warns)."""
    try:
        record = json.loads(_check_file(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return bool(record.get("ok")) and record.get("key") == backbone_key(backbone)

