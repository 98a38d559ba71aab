"""Where and how networks run: devices and seeding (:mod:`~fashionlens.runtime.devices`), the inference runtimes
(PyTorch, onnxruntime) behind one interface, and the one batched forward pass every prediction path goes through."""

from fashionlens.runtime.batches import SINGLE_OUTPUT, forward_batches, named_outputs
from fashionlens.runtime.devices import RUNTIMES, check_runtime, default_workers, resolve_device, seed_everything

__all__ = [
    "RUNTIMES",
    "SINGLE_OUTPUT",
    "check_runtime",
    "default_workers",
    "forward_batches",
    "named_outputs",
    "resolve_device",
    "seed_everything",
]
