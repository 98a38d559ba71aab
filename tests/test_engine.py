"""The shared training loop: it learns, keeps the best epoch, stops early, and resumes exactly where it stopped."""

from __future__ import annotations

import io
import itertools
import json
import random
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from rich.console import Console
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fashionlens.engine import EvaluateFn, TrainConfig, Trainer, training_history
from fashionlens.errors import ConfigError, ModelError

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Interrupted(Exception):
    """Stands in for a crash (or Ctrl-C) in the middle of a job."""


def quiet() -> Console:
    return Console(file=io.StringIO())


def config(**changes: Any) -> TrainConfig:
    settings: dict[str, Any] = {"epochs": 4, "batch_size": 8, "lr": 0.05, "scheduler": "none", "device": "cpu",
                                "early_stop_patience": None, "monitor": "train_loss", "seed": 3}
    return TrainConfig(**{**settings, **changes})


def regression_data(n: int = 48) -> tuple[torch.Tensor, torch.Tensor]:
    """Deterministic inputs with a linear target (no RNG involved)."""
    x = torch.linspace(-1, 1, n * 4).reshape(n, 4).roll(shifts=7)
    y = x @ torch.tensor([[1.5], [-2.0], [0.5], [1.0]]) + 0.3
    return x, y


def classification_data(n: int = 48) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = regression_data(n)
    return x, (y[:, 0] > y.median()).long() + (y[:, 0] > y.quantile(0.8)).long()


def mse(model: nn.Module, batch: Sequence[torch.Tensor], device: torch.device) -> torch.Tensor:
    x, y = batch
    return F.mse_loss(model(x.to(device)), y.to(device))


def cross_entropy(model: nn.Module, batch: Sequence[torch.Tensor], device: torch.device) -> torch.Tensor:
    x, y = batch
    return F.cross_entropy(model(x.to(device)), y.to(device))


def loader(data: tuple[torch.Tensor, torch.Tensor]) -> DataLoader[tuple[torch.Tensor, ...]]:
    return DataLoader(TensorDataset(*data), batch_size=8, shuffle=False)


def mlp(outputs: int = 1, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, outputs))


def scripted(values: Sequence[float], name: str = "val_score", snapshots: list[dict[str, torch.Tensor]] | None = None,
             ) -> EvaluateFn:
    """An evaluate callback returning ``values`` one epoch after another (recording the weights it saw)."""
    remaining: Iterator[float] = iter(values)

    def evaluate(model: nn.Module) -> dict[str, float]:
        if snapshots is not None:
            snapshots.append({k: v.clone() for k, v in model.state_dict().items()})
        return {name: next(remaining)}

    return evaluate


def interrupt_after(epochs: int, evaluate: EvaluateFn) -> EvaluateFn:
    """``evaluate`` for ``epochs`` epochs, then a crash during the next epoch's validation."""
    calls = itertools.count()

    def wrapped(model: nn.Module) -> dict[str, float]:
        if next(calls) >= epochs:
            raise Interrupted
        return evaluate(model)

    return wrapped


def assert_same_weights(a: nn.Module, b: nn.Module) -> None:
    for (name, left), right in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        torch.testing.assert_close(left, right, rtol=0, atol=0, msg=name)


@pytest.mark.parametrize(("task", "outputs", "data"), [
    (mse, 1, regression_data), (cross_entropy, 3, classification_data)], ids=["regression", "classification"])
def test_tiny_model_learns(task: Callable[..., torch.Tensor], outputs: int,
                           data: Callable[[], tuple[torch.Tensor, torch.Tensor]]) -> None:
    model = mlp(outputs)
    result = Trainer(model, config(epochs=12, optimizer="adam", lr=0.02), task, None, console=quiet(),
                     show_progress=False).fit(loader(data()))
    losses = [row["train_loss"] for row in result.history]
    assert len(losses) == 12
    assert losses[-1] < 0.5 * losses[0]
    assert result.best_epoch == 1 + min(range(12), key=losses.__getitem__)
    assert result.best_value == pytest.approx(min(losses))


def test_best_epoch_weights_are_restored() -> None:
    snapshots: list[dict[str, torch.Tensor]] = []
    model = mlp()
    evaluate = scripted([3.0, 1.0, 2.0, 4.0], snapshots=snapshots)
    result = Trainer(model, config(monitor="val_score"), mse, evaluate, console=quiet(),
                     show_progress=False).fit(loader(regression_data()))
    assert (result.best_epoch, result.best_value) == (2, 1.0)
    assert len(result.history) == 4
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, snapshots[1][name])
    assert not torch.equal(snapshots[1]["0.weight"], snapshots[3]["0.weight"])  # training did move on


def test_mode_max_and_nan_metric_never_best() -> None:
    result = Trainer(mlp(), config(monitor="val_map", mode="max"), mse, scripted([0.2, float("nan"), 0.5, 0.4],
                     name="val_map"), console=quiet(), show_progress=False).fit(loader(regression_data()))
    assert (result.best_epoch, result.best_value) == (3, 0.5)


def test_early_stopping() -> None:
    result = Trainer(mlp(), config(epochs=10, monitor="val_score", early_stop_patience=3), mse,
                     scripted([1.0, 1.5, 1.2, 0.5, 0.9, 0.8, 0.7, 0.1]), console=quiet(),
                     show_progress=False).fit(loader(regression_data()))
    assert [row["epoch"] for row in result.history] == [1, 2, 3, 4, 5, 6, 7]  # the count restarts at epoch 4
    assert result.best_epoch == 4


def validation_loss(data: tuple[torch.Tensor, torch.Tensor]) -> EvaluateFn:
    def evaluate(model: nn.Module) -> dict[str, float]:
        return {"val_loss": float(F.mse_loss(model(data[0]), data[1]))}
    return evaluate


@pytest.mark.parametrize("scheduler", ["plateau", "step", "cosine"])
def test_interrupted_run_resumes_to_identical_weights(tmp_path: Path, scheduler: str) -> None:
    train, val = loader(regression_data()), validation_loss(regression_data(16))
    settings = config(monitor="val_loss", scheduler=scheduler, step_size=3, gamma=0.5, plateau_patience=0)
    reference_model = mlp()
    reference = Trainer(reference_model, settings, mse, val, console=quiet(), show_progress=False).fit(train)

    run_dir = tmp_path / "run"
    with pytest.raises(Interrupted):
        Trainer(mlp(), settings, mse, interrupt_after(2, val), run_dir=run_dir, console=quiet(),
                show_progress=False).fit(train)
    assert len(json.loads((run_dir / "history.json").read_text())) == 2

    resumed_model = mlp(seed=99)  # different initial weights: everything must come from the checkpoint
    resumed = Trainer(resumed_model, settings, mse, val, run_dir=run_dir, console=quiet(),
                      show_progress=False).fit(train)
    assert resumed.resumed_from == 2
    assert [row["epoch"] for row in resumed.history] == [1, 2, 3, 4]
    assert [row["train_loss"] for row in resumed.history] == [row["train_loss"] for row in reference.history]
    assert [row["lr"] for row in resumed.history] == [row["lr"] for row in reference.history]
    assert resumed.best_epoch == reference.best_epoch
    assert_same_weights(resumed_model, reference_model)


def test_resume_keeps_the_early_stopping_count(tmp_path: Path) -> None:
    values = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]  # never improves after epoch 1: patience 2 stops after epoch 3
    settings = config(epochs=6, monitor="val_score", early_stop_patience=2)
    train = loader(regression_data())
    uninterrupted = Trainer(mlp(), settings, mse, scripted(values), console=quiet(), show_progress=False).fit(train)
    assert len(uninterrupted.history) == 3

    run_dir = tmp_path / "run"
    with pytest.raises(Interrupted):
        Trainer(mlp(), settings, mse, interrupt_after(2, scripted(values)), run_dir=run_dir, console=quiet(),
                show_progress=False).fit(train)
    resumed = Trainer(mlp(), settings, mse, scripted(values[2:]), run_dir=run_dir, console=quiet(),
                      show_progress=False).fit(train)
    assert len(resumed.history) == 3


def no_more_epochs(model: nn.Module) -> dict[str, float]:
    raise AssertionError("a finished job ran another epoch")


@pytest.mark.parametrize(("patience", "values"), [(None, [3.0, 1.0, 2.0]), (1, [3.0, 1.0, 2.0, 0.5])],
                         ids=["completed", "early-stopped"])
def test_rerunning_a_finished_job_trains_nothing(tmp_path: Path, patience: int | None, values: list[float]) -> None:
    train = loader(regression_data())
    settings = config(epochs=len(values), monitor="val_score", early_stop_patience=patience)
    first_model = mlp()
    first = Trainer(first_model, settings, mse, scripted(values), run_dir=tmp_path, console=quiet(),
                    show_progress=False).fit(train)
    assert len(first.history) == 3
    again_model = mlp(seed=5)
    again = Trainer(again_model, settings, mse, no_more_epochs, run_dir=tmp_path, console=quiet(),
                    show_progress=False).fit(train)
    assert again.history == first.history
    assert again.best_epoch == 2
    assert_same_weights(again_model, first_model)


def test_run_dir_holds_complete_files_only(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    Trainer(mlp(), config(epochs=3), mse, None, run_dir=run_dir, console=quiet(), show_progress=False).fit(
        loader(regression_data()))
    assert sorted(p.name for p in run_dir.iterdir()) == ["best.pt", "history.json", "last.pt"]
    state = torch.load(run_dir / "last.pt", weights_only=True)
    assert state["epoch"] == 2
    assert len(state["result"]["history"]) == 3
    assert set(torch.load(run_dir / "best.pt")) == set(mlp().state_dict())


@pytest.mark.parametrize("damage", ["truncated", "text", "other-model"])
def test_unusable_checkpoint_is_a_model_error(tmp_path: Path, damage: str) -> None:
    run_dir = tmp_path / "run"
    Trainer(mlp(), config(epochs=1), mse, None, run_dir=run_dir, console=quiet(), show_progress=False).fit(
        loader(regression_data()))
    last = run_dir / "last.pt"
    if damage == "truncated":
        last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    elif damage == "text":
        last.write_text("not a checkpoint")
    model = mlp() if damage != "other-model" else nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
    trainer = Trainer(model, config(epochs=2), mse, None, run_dir=run_dir, console=quiet(), show_progress=False)
    with pytest.raises(ModelError, match=r"last\.pt") as raised:
        trainer.fit(loader(regression_data()))
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "sgd"])
@pytest.mark.parametrize(("scheduler", "second_lr"), [("none", 0.1), ("step", 0.05), ("cosine", 0.05),
                                                      ("plateau", 0.1)])
def test_optimizers_and_schedules(optimizer: str, scheduler: str, second_lr: float) -> None:
    settings = config(epochs=2, lr=0.1, optimizer=optimizer, scheduler=scheduler, step_size=1, gamma=0.5,
                      grad_clip=1.0)
    result = Trainer(mlp(), settings, mse, None, console=quiet(), show_progress=False).fit(loader(regression_data()))
    assert [row["lr"] for row in result.history] == pytest.approx([0.1, second_lr])


def test_missing_monitor_is_a_config_error() -> None:
    trainer = Trainer(mlp(), config(monitor="val_acc"), mse, scripted([0.5], name="val_map"), console=quiet(),
                      show_progress=False)
    with pytest.raises(ConfigError, match="val_acc") as raised:
        trainer.fit(loader(regression_data()))
    assert "val_map" in str(raised.value)


@pytest.mark.parametrize(("changes", "culprit"), [
    ({"epochs": 0}, "epochs"), ({"lr": 0.0}, "lr"), ({"lr": -1e-3}, "lr"), ({"optimizer": "rmsprop"}, "rmsprop"),
    ({"scheduler": "cyclic"}, "cyclic"), ({"mode": "up"}, "mode"),
])
def test_bad_config_values(changes: dict[str, Any], culprit: str) -> None:
    with pytest.raises(ConfigError, match=culprit):
        config(**changes)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_divergence_is_a_model_error(bad: float) -> None:
    def diverging(model: nn.Module, batch: Sequence[torch.Tensor], device: torch.device) -> torch.Tensor:
        return mse(model, batch, device) * bad

    with pytest.raises(ModelError, match="diverged at epoch 1"):
        Trainer(mlp(), config(), diverging, None, console=quiet(), show_progress=False).fit(loader(regression_data()))


def test_frozen_model_is_a_model_error() -> None:
    model = mlp()
    model.requires_grad_(False)
    with pytest.raises(ModelError, match="trainable"):
        Trainer(model, config(), mse, None, console=quiet(), show_progress=False)


def test_planted_checkpoint_runs_no_code(tmp_path: Path, planted_pickle: Callable[[Path], Path]) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    marker = planted_pickle(run_dir / "last.pt")
    trainer = Trainer(mlp(), config(epochs=1), mse, None, run_dir=run_dir, console=quiet(), show_progress=False)
    with pytest.raises(ModelError, match=r"last\.pt.*posix\.system.*delete it to start over") as raised:
        trainer.fit(loader(regression_data()))
    assert not marker.exists()
    assert "\n" not in str(raised.value)


def test_checkpoint_holds_plain_values_and_restores_every_generator(tmp_path: Path) -> None:
    def draws() -> tuple[float, float, float]:
        return random.random(), float(np.random.rand()), float(torch.rand(1))

    def numpy_metric(model: nn.Module) -> dict[str, float]:  # metrics from NumPy/sklearn are np.float64
        return {"val_loss": np.float64(float(F.mse_loss(model(regression_data(16)[0]), regression_data(16)[1])))}

    settings = config(epochs=2, monitor="val_loss", scheduler="plateau")
    Trainer(mlp(), settings, mse, numpy_metric, run_dir=tmp_path, console=quiet(), show_progress=False).fit(
        loader(regression_data()))
    after_training = draws()
    state = torch.load(tmp_path / "last.pt", weights_only=True)  # nothing but tensors and plain values
    assert isinstance(state["scheduler"]["best"], float) and isinstance(state["rng"]["numpy"][1], torch.Tensor)
    finished = Trainer(mlp(), settings, mse, no_more_epochs, run_dir=tmp_path, console=quiet(), show_progress=False)
    finished.fit(loader(regression_data()))  # seeds everything afresh, then restores the checkpoint's generators
    assert draws() == after_training


def test_checkpoint_of_an_earlier_version_asks_to_start_over(tmp_path: Path) -> None:
    Trainer(mlp(), config(epochs=1), mse, None, run_dir=tmp_path, console=quiet(), show_progress=False).fit(
        loader(regression_data()))
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    state["rng"]["numpy"] = np.random.get_state()  # what earlier versions saved: NumPy arrays need unpickling code
    torch.save(state, tmp_path / "last.pt")
    trainer = Trainer(mlp(), config(epochs=2), mse, None, run_dir=tmp_path, console=quiet(), show_progress=False)
    with pytest.raises(ModelError, match=r"last\.pt: it references numpy.*delete it to start over"):
        trainer.fit(loader(regression_data()))


# ---------------------------------------------------------------------------------------------- channels-last
def image_data(n: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Deterministic 3x8x8 "images" with a class that depends on their colour balance (no RNG involved)."""
    x = torch.linspace(-1, 1, n * 3 * 8 * 8).reshape(n, 3, 8, 8).roll(shifts=11).sin()
    return x, (x[:, 0].mean(dim=(1, 2)) > x[:, 2].mean(dim=(1, 2))).long()


def convnet(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    # no conv bias before batch norm: its gradient is rounding noise, which Adam would blow up to full steps
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(8, 2))


def recording_layout(layouts: list[bool]) -> Callable[..., torch.Tensor]:
    """``cross_entropy`` that records whether the model's first conv weight was channels-last in each step."""
    def loss(model: nn.Module, batch: Sequence[torch.Tensor], device: torch.device) -> torch.Tensor:
        weight = next(model.parameters())
        layouts.append(weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous())
        return cross_entropy(model, batch, device)
    return loss


def image_loader() -> DataLoader[tuple[torch.Tensor, ...]]:
    return DataLoader(TensorDataset(*image_data()), batch_size=8, shuffle=False)


@pytest.mark.parametrize(("setting", "expected"), [(None, True), (False, False), (True, True)],
                         ids=["auto", "off", "on"])
def test_conv_model_trains_channels_last_on_cpu(setting: bool | None, expected: bool) -> None:
    layouts: list[bool] = []
    model = convnet()
    trainer = Trainer(model, config(epochs=2, optimizer="adam", lr=0.01, channels_last=setting),
                      recording_layout(layouts), None, console=quiet(), show_progress=False)
    assert trainer.channels_last is expected
    trainer.fit(image_loader())
    assert layouts == [expected] * 8  # every step of both epochs
    assert all(p.is_contiguous() for p in model.parameters())  # handed back in the default layout


def test_head_on_features_keeps_the_default_layout() -> None:
    trainer = Trainer(mlp(), config(channels_last=None), mse, None, console=quiet(), show_progress=False)
    assert trainer.channels_last is False


def test_channels_last_losses_match_the_default_layout() -> None:
    runs = {}
    for setting in (False, True):
        model = convnet()
        history = Trainer(model, config(epochs=3, optimizer="adam", lr=0.01, channels_last=setting), cross_entropy,
                          None, console=quiet(), show_progress=False).fit(image_loader()).history
        runs[setting] = ([row["train_loss"] for row in history], model.state_dict())
    assert runs[True][0] == pytest.approx(runs[False][0], rel=1e-4)
    assert runs[True][0][-1] < runs[True][0][0]  # it learned
    for name, value in runs[True][1].items():
        torch.testing.assert_close(value, runs[False][1][name], rtol=1e-3, atol=1e-4, msg=name)


def test_channels_last_checkpoints_resume_exactly_and_load_into_a_default_model(tmp_path: Path) -> None:
    images = image_data(16)

    def val(model: nn.Module) -> dict[str, float]:
        return {"val_loss": float(F.cross_entropy(model(images[0]), images[1]))}

    settings = config(monitor="val_loss", optimizer="adamw", lr=0.01, scheduler="cosine")
    reference_model = convnet()
    reference = Trainer(reference_model, settings, cross_entropy, val, console=quiet(),
                        show_progress=False).fit(image_loader())

    run_dir = tmp_path / "run"
    with pytest.raises(Interrupted):
        Trainer(convnet(), settings, cross_entropy, interrupt_after(2, val), run_dir=run_dir, console=quiet(),
                show_progress=False).fit(image_loader())
    saved = torch.load(run_dir / "last.pt", weights_only=True)
    assert not saved["model"]["0.weight"].is_contiguous()  # the file holds channels-last strided weights
    assert saved["model"]["0.weight"].is_contiguous(memory_format=torch.channels_last)

    resumed_model = convnet(seed=99)
    resumed = Trainer(resumed_model, settings, cross_entropy, val, run_dir=run_dir, console=quiet(),
                      show_progress=False).fit(image_loader())
    assert resumed.resumed_from == 2
    assert [row["train_loss"] for row in resumed.history] == [row["train_loss"] for row in reference.history]
    assert_same_weights(resumed_model, reference_model)

    default_model = convnet(seed=7)  # a default-layout model takes the channels-last best weights as they are
    default_model.load_state_dict(torch.load(run_dir / "best.pt", weights_only=True))
    assert all(p.is_contiguous() for p in default_model.parameters())
    assert_same_weights(default_model, resumed_model)


def test_training_history_reads_the_run_beside_the_model(tmp_path: Path) -> None:
    model_dir = tmp_path / "tagger"
    assert training_history(model_dir) is None  # no run folder: no history, not an error
    (tmp_path / "tagger.run").mkdir()
    (tmp_path / "tagger.run" / "history.json").write_text('[{"epoch": 0, "val_loss": 0.5}]')
    assert training_history(model_dir) == [{"epoch": 0, "val_loss": 0.5}]
    (tmp_path / "tagger.run" / "history.json").write_text("{broken")
    with pytest.raises(ModelError, match=r"cannot read the training history .*tagger\.run/history\.json"):
        training_history(model_dir)
