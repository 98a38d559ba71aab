"""Atomic writes: the target is either the old or the new version, never half-written, and no temp files linger."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from fashionlens import io as io_module
from fashionlens.errors import FashionlensError, ModelError
from fashionlens.io import (
    atomic_dir,
    atomic_path,
    load_torch,
    plain_values,
    remove_stale_temporaries,
    save_torch,
    write_json,
    write_text,
)


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


# ---------------------------------------------------------------------------------------------- hardening (issue 15)
HOST = io_module._HOST
OTHER_HOST = "0" * 8 if HOST != "0" * 8 else "1" * 8


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


@pytest.fixture
def umask() -> Iterator[Callable[[int], int]]:
    previous = os.umask(0o022)
    os.umask(previous)
    yield os.umask
    os.umask(previous)


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o002])
def test_written_files_and_directories_follow_the_umask(tmp_path: Path, umask: Callable[[int], int],
                                                       mask: int) -> None:
    umask(mask)
    write_text(tmp_path / "note.txt", "x")
    with atomic_dir(tmp_path / "model") as tmp:
        write_json(tmp / "config.json", {})
        save_torch(tmp / "model.pt", {"w": torch.zeros(2)})
        (tmp / "nested").mkdir()
    assert stat.S_IMODE((tmp_path / "note.txt").stat().st_mode) == 0o666 & ~mask
    assert stat.S_IMODE((tmp_path / "model").stat().st_mode) == 0o777 & ~mask
    for name in ("config.json", "model.pt"):
        assert stat.S_IMODE((tmp_path / "model" / name).stat().st_mode) == 0o666 & ~mask


@pytest.mark.skipif(io_module._renameat2 is None, reason="no renameat2 on this system")
def test_directory_swap_never_leaves_the_target_missing(tmp_path: Path) -> None:
    target = tmp_path / "index"
    with atomic_dir(target) as tmp:
        (tmp / "version").write_text("0")
    missing: list[int] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            if not (target / "version").is_file():
                missing.append(1)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        for version in range(1, 60):
            with atomic_dir(target) as tmp:
                (tmp / "version").write_text(str(version))
    finally:
        stop.set()
        watcher.join()
    assert not missing
    assert (target / "version").read_text() == "59"
    assert [p.name for p in tmp_path.iterdir()] == ["index"]


def test_fallback_swap_is_repaired_by_the_next_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Without RENAME_EXCHANGE, a kill between the two renames leaves only the moved-away old version.
    monkeypatch.setattr(io_module, "_exchange", lambda a, b: False)
    target = tmp_path / "model"
    with atomic_dir(target) as tmp:
        (tmp / "weights").write_text("v1")
    with atomic_dir(target) as tmp:  # the fallback itself completes and cleans up
        (tmp / "weights").write_text("v2")
    assert (target / "weights").read_text() == "v2" and [p.name for p in tmp_path.iterdir()] == ["model"]
    stranded = tmp_path / f".model.old-{HOST}-{_dead_pid()}-0123abcd"
    target.rename(stranded)
    assert remove_stale_temporaries(tmp_path) == []  # put back, not deleted
    assert (target / "weights").read_text() == "v2" and not stranded.exists()


def test_stale_temporaries_of_dead_processes_are_removed_and_live_ones_kept(tmp_path: Path) -> None:
    dead, day = _dead_pid(), 24 * 3600
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        stale = [tmp_path / f".model.{HOST}-{dead}.0123abcd.tmp",
                 tmp_path / f".results.json.{HOST}-{dead}.89abcdef.tmp",
                 tmp_path / f".model.old-{HOST}-{dead}-0123abcd", tmp_path / f".model.old-{dead}"]
        live = [tmp_path / f".model.{HOST}-{sleeper.pid}.0123abcd.tmp",
                tmp_path / f".model.{HOST}-{os.getpid()}.0123abcd.tmp",
                tmp_path / f".model.{OTHER_HOST}-{dead}.0123abcd.tmp"]  # a pid on another host: only age tells
        legacy_fresh, legacy_old = tmp_path / ".model.k2_9xq0z.tmp", tmp_path / ".model.a1b2c3d4.tmp"
        unrelated = [tmp_path / ".model.keep", tmp_path / "model.1234.0123abcd.tmp", tmp_path / ".gitignore"]
        (tmp_path / "model").mkdir()  # the old- directory's target exists: it is deleted, not restored
        for path in [*stale, *live, legacy_fresh, legacy_old, *unrelated]:
            if path.name.endswith(".tmp") and "json" not in path.name:
                path.mkdir()
                (path / "model.pt").write_bytes(b"partial")
            else:
                path.write_text("x")
        os.utime(legacy_old, (time.time() - day - 60,) * 2)
        old_live = tmp_path / f".index.{HOST}-{sleeper.pid}.fedcba98.tmp"  # a pid reused for a day-long process
        old_live.write_text("x")
        os.utime(old_live, (time.time() - day - 60,) * 2)
        removed = remove_stale_temporaries(tmp_path)
        assert sorted(removed) == sorted([*stale, legacy_old, old_live])
        assert all(p.exists() for p in [*live, legacy_fresh, *unrelated, tmp_path / "model"])
    finally:
        sleeper.kill()
        sleeper.wait()


def test_atomic_dir_cleans_up_after_a_killed_write_of_the_same_target(tmp_path: Path) -> None:
    leftover = tmp_path / f".model.{HOST}-{_dead_pid()}.0123abcd.tmp"
    leftover.mkdir()
    with atomic_dir(tmp_path / "model") as tmp:
        (tmp / "model.pt").write_text("w")
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to name fsynced descriptors")
def test_files_and_their_directories_are_fsynced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[str] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    with atomic_dir(tmp_path / "model") as tmp:
        write_json(tmp / "config.json", {"a": 1})
        (tmp / "labels.json").write_text("{}")  # written directly: still fsynced before the swap
    temp = re.escape(str(tmp_path)) + r"/\.model\.[0-9a-f]{8}-\d+\.[0-9a-f]{8}\.tmp"
    for written in ("/labels.json", "/config.json", ""):  # each file (written directly or not), then the folder
        assert any(re.fullmatch(temp + re.escape(written), path) for path in synced), (written, synced)
    assert synced[-1] == str(tmp_path)  # the parent, after the swap
    synced.clear()
    write_text(tmp_path / "report.md", "# r")
    assert len(synced) == 2 and synced[1] == str(tmp_path)  # the file, then its directory after the rename
    synced.clear()
    with atomic_path(tmp_path / "cache.npz", durable=False) as tmp_file:  # caches skip the fsyncs, not atomicity
        tmp_file.write_bytes(b"x")
    assert synced == [] and (tmp_path / "cache.npz").read_bytes() == b"x"


def test_loading_a_planted_pickle_runs_nothing_and_names_the_file(tmp_path: Path,
                                                                 planted_pickle: Callable[[Path], Path]) -> None:
    planted = tmp_path / "model.pt"
    marker = planted_pickle(planted)
    with pytest.raises(ModelError, match=r"model\.pt.*posix\.system") as raised:
        load_torch(planted)
    assert not marker.exists()
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize("damage", ["text", "pickle-opcodes", "empty", "truncated", "random"])
def test_damaged_files_are_one_line_model_errors(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "model.pt"
    save_torch(path, {"head": {"w": torch.arange(1000.0)}})
    whole = path.read_bytes()
    path.write_bytes({"text": b"this is not a torch file", "pickle-opcodes": b"\x80\x04not a torch file",
                      "empty": b"", "truncated": whole[: len(whole) // 2],
                      "random": np.random.default_rng(0).bytes(4096)}[damage])
    with pytest.raises(ModelError, match=r"model\.pt") as raised:
        load_torch(path)
    assert "\n" not in str(raised.value)


def test_save_torch_refuses_what_would_not_load_and_plain_values_converts(tmp_path: Path) -> None:
    rng_like = {"numpy": ("MT19937", np.arange(4, dtype=np.uint32), np.int64(3)), "best": np.float64(0.5)}
    with pytest.raises(TypeError, match=r"last\.pt\['numpy'\]\[1\] is a numpy\.ndarray"):
        save_torch(tmp_path / "last.pt", rng_like)
    with pytest.raises(TypeError, match=r"\['best'\] is a numpy\.float64"):
        save_torch(tmp_path / "last.pt", {"best": np.float64(0.5)})
    assert not list(tmp_path.iterdir())
    save_torch(tmp_path / "last.pt", plain_values(rng_like))
    loaded = load_torch(tmp_path / "last.pt")
    assert loaded["numpy"][0] == "MT19937" and loaded["numpy"][2] == 3 and loaded["best"] == 0.5
    assert torch.equal(loaded["numpy"][1], torch.arange(4, dtype=torch.int32).to(torch.uint32))


def test_run_dir_sits_beside_the_model_folder(tmp_path):
    assert io_module.run_dir(tmp_path / "models" / "tagger") == tmp_path / "models" / "tagger.run"
