"""Atomic writes: the target is either the old or the new version, never half-written, and no temp files linger."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from fashionlens.errors import FashionlensError
from fashionlens.io import atomic_dir, atomic_path, save_torch, write_json, write_text


class Interrupted(Exception):
    """Stands in for a crash in the middle of a write."""


def test_atomic_path_writes_to_a_temp_sibling_then_replaces(tmp_path: Path) -> None:
    target = tmp_path / "nested" / "model.bin"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent
        assert tmp != target
        tmp.write_bytes(b"new")
        assert not target.exists()  # nothing visible until the block succeeds
    assert target.read_bytes() == b"new"
    assert sorted(p.name for p in target.parent.iterdir()) == ["model.bin"]


def test_atomic_path_failure_keeps_the_old_file_and_cleans_up(tmp_path: Path) -> None:
    target = tmp_path / "results.json"
    target.write_text("old")
    with pytest.raises(Interrupted), atomic_path(target) as tmp:
        tmp.write_text("half-writ")
        raise Interrupted
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_atomic_dir_replaces_the_whole_directory(tmp_path: Path) -> None:
    target = tmp_path / "model"
    target.mkdir()
    (target / "stale.txt").write_text("from the previous save")
    with atomic_dir(target) as tmp:
        (tmp / "weights.pt").write_text("w")
    assert sorted(p.name for p in target.iterdir()) == ["weights.pt"]
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # neither the temp nor the old copy is left


def test_atomic_dir_failure_keeps_the_old_directory(tmp_path: Path) -> None:
    target = tmp_path / "index"
    target.mkdir()
    (target / "vectors.npy").write_text("old")
    with pytest.raises(Interrupted), atomic_dir(target) as tmp:
        (tmp / "vectors.npy").write_text("partial")
        raise Interrupted
    assert (target / "vectors.npy").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["index"]


def test_write_json_text_and_torch_round_trip(tmp_path: Path) -> None:
    write_json(tmp_path / "a" / "metrics.json", {"map": 0.5, "path": tmp_path})  # Path via default=str
    assert json.loads((tmp_path / "a" / "metrics.json").read_text()) == {"map": 0.5, "path": str(tmp_path)}
    write_text(tmp_path / "note.txt", "héllo\n")
    assert (tmp_path / "note.txt").read_text(encoding="utf-8") == "héllo\n"
    save_torch(tmp_path / "w.pt", {"w": torch.arange(3)})
    assert torch.equal(torch.load(tmp_path / "w.pt")["w"], torch.arange(3))
    assert not list(tmp_path.rglob("*.tmp"))


def test_save_torch_failure_leaves_previous_checkpoint(tmp_path: Path) -> None:
    target = tmp_path / "last.pt"
    save_torch(target, {"epoch": 1})
    with pytest.raises(Exception):  # noqa: B017 -- whatever pickling raises, the old file must survive
        save_torch(target, {"epoch": 2, "bad": lambda: None})
    assert torch.load(target)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_errors_are_single_line() -> None:
    error = FashionlensError("bad value\n  in column 'x'\t(row 3)")
    assert str(error) == "bad value in column 'x' (row 3)"
