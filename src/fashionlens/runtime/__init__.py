"""Where and how networks run: devices and seeding (:mod:`~fashionlens.runtime.devices`), the inference runtimes
(PyTorch, onnxruntime) behind one interface, and the one batched forward pass every prediction path goes through."""

from fashionlens.runtime.devices import RUNTIMES, check_runtime, default_workers, resolve_device, seed_everything

__all__ = ["RUNTIMES", "check_runtime", "default_workers", "resolve_device", "seed_everything"]
