"""The training plumbing of every task (``tasks/common/training.py``): one engine run, batched raw outputs."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from torch import nn

from fashionlens.engine import TrainConfig
from fashionlens.tasks.common.loaders import tensor_loader
from fashionlens.tasks.common.training import fit, predict_outputs


class _Named(nn.Module):
    """A linear model whose output is named, as task heads' are."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 1)

    def forward(self, inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"score": self.linear(inputs)}


def test_fit_trains_resumably_into_the_run_folder_and_returns_the_model_on_the_cpu_in_eval_mode(
        tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    inputs = rng.normal(size=(64, 4)).astype(np.float32)
    targets = torch.as_tensor(inputs @ np.array([1.0, -2.0, 0.5, 0.0], dtype=np.float32))

    def loss(model: nn.Module, batch: Sequence[torch.Tensor], device: torch.device) -> torch.Tensor:
        return nn.functional.mse_loss(model(batch[0].to(device))["score"][:, 0], targets[batch[1]].to(device))

    def mse(model: nn.Module) -> dict[str, float]:
        outputs, _ = predict_outputs(model, tensor_loader([inputs, np.arange(64)], 16, shuffle=False), 64,
                                     torch.device("cpu"))
        return {"val_loss": float(((outputs["score"][:, 0] - targets.numpy()) ** 2).mean())}

    torch.manual_seed(0)
    model = _Named()
    before = mse(model)["val_loss"]
    config = TrainConfig(epochs=3, lr=0.05, batch_size=16, device="cpu", amp=False)
    trained, result = fit(model, loss, mse, tensor_loader([inputs, np.arange(64)], 16, shuffle=True), config,
                          tmp_path / "m.run", Console(quiet=True), show_progress=False)
    assert len(result.history) == 3 and 1 <= result.best_epoch <= 3
    assert not trained.training and next(trained.parameters()).device.type == "cpu"
    assert mse(trained)["val_loss"] < before / 2  # it learnt
    assert (tmp_path / "m.run" / "history.json").is_file()
