"""``kill -9`` at random points of ``index build``, ``tag train`` and a model save: the previous output survives.

Each run is a real ``fashionlens`` command line (or a loop of :func:`save_model_dir`) in its own process, killed
with SIGKILL at a point drawn from a seeded RNG: half at a random time after the start, half a few milliseconds
after the run's first temporary appears beside the output (the writing window, which timed kills rarely hit).
After every kill the output directory must exist, load, and be a complete version (the previous one, or the
killed run's own when the kill came after the swap); every checkpoint left must load; the next run must complete
and clear the dead run's temporaries.

Runs are forked from a server process that has already imported fashionlens (importing torch, timm and faiss
takes ~10 s on a busy 2-core box, the runs themselves 1-3 s), so the SIGKILL lands in the command's own code.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import pytest
import torch

import fashionlens
from fashionlens.data.readers import read_fashion_product_images
from fashionlens.index import CatalogueIndex
from fashionlens.io import load_torch
from fashionlens.tasks.common import read_model_dir, save_model_dir
from fashionlens.tasks.tagging import Tagger

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not hasattr(os, "fork"), reason="the runs are forked from a server process")]

# Reads one JSON request per line, forks a child (its own process group, output to the request's log) that runs the
# command line or the save loop, and answers the child's pid and then how it ended.
_SERVER = r"""
import json, os, sys, traceback
import torch
import fashionlens.tasks.retrieval, fashionlens.tasks.tagging
from fashionlens.cli import main
from fashionlens.tasks.common import save_model_dir

def save_forever(out):
    for i in range(1, 10**9):  # every directory is consistent: its weights are all i and config.json says i
        save_model_dir(out, {"head": {"w": torch.full((128, 128), float(i))}}, {"config": {"i": i}})

print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    request = json.loads(line)
    pid = os.fork()
    if pid == 0:
        os.setpgid(0, 0)
        log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(log, 1)
        os.dup2(log, 2)
        code = 0
        try:
            if request["args"] == ["save-forever"]:
                save_forever(request["out"])
            sys.argv = ["fashionlens", *request["args"]]
            main()
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else 1
        except BaseException:
            traceback.print_exc()
            code = 1
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    try:
        os.setpgid(pid, pid)  # also here, so that the group exists before the test can signal it
    except OSError:
        pass
    print(json.dumps({"pid": pid}), flush=True)
    _, status = os.waitpid(pid, 0)
    print(json.dumps({"signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
                      "code": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None}), flush=True)
"""


@dataclass
class KillLog:
    """What happened to the runs of one target (``mid_write``: kills that left a temporary of the output)."""

    killed: int = 0
    mid_write: int = 0
    finished_first: int = 0
    kept_old: int = 0
    got_new: int = 0
    offsets_ms: list[float] = field(default_factory=list)


class ForkServer:
    """Runs fashionlens command lines in forked children that can be SIGKILLed at chosen moments."""

    def __init__(self, process: subprocess.Popen[str], logs: Path):
        self.process = process
        self.logs = logs
        self.runs = 0

    def _send(self, request: dict[str, Any]) -> int:
        stdin, stdout = self.process.stdin, self.process.stdout
        assert stdin is not None and stdout is not None
        stdin.write(json.dumps(request) + "\n")
        stdin.flush()
        return int(json.loads(stdout.readline())["pid"])

    def _ending(self) -> dict[str, int | None]:
        stdout: IO[str] | None = self.process.stdout
        assert stdout is not None
        return dict(json.loads(stdout.readline()))

    def run(self, args: list[str], out: Path) -> None:
        """Run to the end; it must succeed."""
        self.runs += 1
        log = self.logs / f"run-{self.runs}.log"
        self._send({"args": args, "out": str(out), "log": str(log)})
        ending = self._ending()
        assert ending == {"signal": None, "code": 0}, log.read_text()

    def run_and_kill(self, args: list[str], out: Path, when: Callable[[float], bool]) -> tuple[bool, float]:
        """Start a run and SIGKILL it as soon as ``when(seconds_since_start)`` holds (polled every ~0.5 ms).

        Returns whether the kill landed (the run had not finished yet) and when, in seconds.
        """
        self.runs += 1
        log = self.logs / f"run-{self.runs}.log"
        pid = self._send({"args": args, "out": str(out), "log": str(log)})
        start = time.perf_counter()
        while True:
            elapsed = time.perf_counter() - start
            if when(elapsed):
                break
            time.sleep(0.0005)
        with contextlib.suppress(ProcessLookupError):  # it finished first
            os.killpg(pid, signal.SIGKILL)
        ending = self._ending()
        if ending["signal"] == signal.SIGKILL:
            return True, elapsed
        assert ending == {"signal": None, "code": 0}, log.read_text()
        return False, elapsed


@pytest.fixture
def fork_server(tmp_path: Path) -> Iterator[ForkServer]:
    source_root = Path(fashionlens.__file__).resolve().parents[1]  # the sources under test, not an installed copy
    env = {**os.environ, "PYTHONPATH": str(source_root), "FASHIONLENS_CACHE": str(tmp_path / "cache"),
           "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "COLUMNS": "200", "TERM": "dumb"}
    process = subprocess.Popen([sys.executable, "-c", _SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               text=True, env=env, cwd=tmp_path)
    try:
        assert process.stdout is not None
        assert json.loads(process.stdout.readline()) == {"ready": True}
        logs = tmp_path / "logs"
        logs.mkdir()
        yield ForkServer(process, logs)
    finally:
        process.kill()
        process.wait()


def _fingerprint(directory: Path) -> str:
    digest = hashlib.sha1()
    for file in sorted(p for p in directory.rglob("*") if p.is_file()):
        digest.update(file.name.encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()


def _temporaries(folder: Path, name: str) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(f".{name}."))


def _kill_condition(rng: random.Random, folder: Path, name: str, typical_s: float,
                    in_window: bool) -> Callable[[float], bool]:
    """A random time in the run, or a random few ms after the output's first temporary appears in ``folder``."""
    if not in_window:
        deadline = rng.uniform(0.02, 0.95) * typical_s
        return lambda elapsed: elapsed >= deadline
    delay = rng.uniform(0.0, 0.1)
    seen: list[float] = []
    earlier = set(_temporaries(folder, name))  # left by the previous killed run: this run removes them

    def when(elapsed: float) -> bool:
        if not seen and set(_temporaries(folder, name)) - earlier:
            seen.append(elapsed)
        return (bool(seen) and elapsed >= seen[0] + delay) or elapsed > 3 * typical_s
    return when


def _catalogue(shared_data: Path, folder: Path) -> Path:
    """32 real product photos of four article types (5 train, 2 val, 1 test each)."""
    products = read_fashion_product_images(shared_data / "fashion-product-images")
    types = products.class_column("articleType")
    chosen = np.concatenate([np.flatnonzero(types == t)[:8] for t in ("Watches", "Casual Shoes", "Tshirts",
                                                                      "Handbags")])
    manifest = products.subset(np.isin(np.arange(len(products)), chosen))
    manifest.frame["split"] = manifest.frame.groupby("class:articleType").cumcount().map(
        lambda i: "train" if i < 5 else "val" if i < 7 else "test")
    path = folder / "catalogue.parquet"
    manifest.save(path)
    return path


TAG_CONFIG = """\
heads: [articleType]
hidden: 16
dropout: 0.0
backbone: {num_workers: 0, batch_size: 16}
train: {epochs: 12, batch_size: 8, scheduler: none, monitor: val_loss, mode: min, early_stop_patience: null,
        device: cpu, num_workers: 0}
"""


KILLS = {"save": 8, "index build": 7, "tag train": 7}  # kill points wanted per target (a run may finish first)
MAX_ROUNDS = 30  # a quiet machine finishes many runs before their kill point: keep going until enough land


def _kill_round(server: ForkServer, rng: random.Random, log: KillLog, args: list[str], out_dir: Path,
                typical_s: float, in_window: bool, load: Callable[[Path], object],
                check_new: Callable[[], None]) -> None:
    """One run killed at a random point; the output must then load and be the old or the run's own version."""
    folder, name = out_dir.parent, out_dir.name
    before, earlier = _fingerprint(out_dir), set(_temporaries(folder, name))
    landed, at = server.run_and_kill(args, out_dir, _kill_condition(rng, folder, name, typical_s, in_window))
    log.killed += landed
    log.finished_first += not landed
    log.mid_write += bool(set(_temporaries(folder, name)) - earlier)
    log.offsets_ms.append(round(at * 1000, 1))
    load(out_dir)
    if _fingerprint(out_dir) == before:
        log.kept_old += 1
    else:
        check_new()
        log.got_new += 1


def test_kill_nine_never_loses_the_previous_output(shared_data: Path, tmp_path: Path,
                                                   fork_server: ForkServer) -> None:
    rng = random.Random(15)
    started = time.perf_counter()
    catalogue = _catalogue(shared_data, tmp_path)
    (tmp_path / "tag.yaml").write_text(TAG_CONFIG)
    out = tmp_path / "out"
    out.mkdir()
    logs = {target: KillLog() for target in KILLS}

    # -- a model save, over and over: every directory seen must be one whole save (weights == config.json's i)
    save_dir = out / "saved"
    for _ in range(KILLS["save"]):
        earlier = set(_temporaries(out, "saved"))
        landed, at = fork_server.run_and_kill(["save-forever"], save_dir, _kill_condition(
            rng, out, "saved", 1.0, in_window=False))
        assert landed
        logs["save"].killed += 1
        logs["save"].mid_write += bool(set(_temporaries(out, "saved")) - earlier)
        logs["save"].offsets_ms.append(round(at * 1000, 1))
        state, documents = read_model_dir(save_dir, ["config"])
        assert torch.all(state["head"]["w"] == documents["config"]["i"])

    # -- index build: the split alternates, so the old (20 items) and new (32 items) versions differ
    index_dir = out / "index"

    def index_args(round_: int) -> list[str]:
        split = ["--split", "train"] if round_ % 2 else []
        return ["index", "build", "--manifest", str(catalogue), "--out", str(index_dir), *split]

    def index_holds(count: int) -> Callable[[], None]:
        def check() -> None:
            assert len(CatalogueIndex.load(index_dir)) == count
        return check

    fork_server.run(index_args(0), index_dir)  # fills the feature cache the later runs share
    t0 = time.perf_counter()
    fork_server.run(index_args(1), index_dir)
    typical = time.perf_counter() - t0
    log = logs["index build"]
    for round_ in range(2, 2 + MAX_ROUNDS):
        if log.killed >= KILLS["index build"]:
            break
        _kill_round(fork_server, rng, log, index_args(round_), index_dir, typical, round_ % 2 == 0,
                    CatalogueIndex.load,  # whole and consistent: the loader cross-checks every file
                    index_holds(20 if round_ % 2 else 32))

    # -- tag train: the seed changes each round (config.json records it); every other round trains afresh
    tagger_dir, run_dir = out / "tagger", out / "tagger.run"

    def tag_args(round_: int) -> list[str]:
        return ["tag", "train", "--manifest", str(catalogue), "--out", str(tagger_dir), "--config",
                str(tmp_path / "tag.yaml"), "--seed", str(round_)]

    def trained_with_seed(seed: int) -> Callable[[], None]:
        def check() -> None:
            assert json.loads((tagger_dir / "config.json").read_text())["train"]["seed"] == seed
        return check

    t0 = time.perf_counter()
    fork_server.run(tag_args(0), tagger_dir)
    typical = time.perf_counter() - t0
    log = logs["tag train"]
    for round_ in range(1, 1 + MAX_ROUNDS):
        if log.killed >= KILLS["tag train"]:
            break
        if round_ % 2:
            subprocess.run(["rm", "-rf", str(run_dir)], check=True)  # train from scratch, not resume a done run
        _kill_round(fork_server, rng, log, tag_args(round_), tagger_dir, typical, round_ % 2 == 0, Tagger.load,
                    trained_with_seed(round_))
        for checkpoint in ("last.pt", "best.pt"):  # the next run resumes from these: they must load
            if (run_dir / checkpoint).is_file():
                load_torch(run_dir / checkpoint)

    # -- reruns complete, and nothing the killed runs left behind survives them
    fork_server.run(index_args(0), index_dir)
    fork_server.run(tag_args(0), tagger_dir)
    assert len(CatalogueIndex.load(index_dir)) == 32 and Tagger.load(tagger_dir).labels.heads
    assert _temporaries(out, "index") == [] and _temporaries(out, "tagger") == []
    assert not [p.name for p in run_dir.iterdir() if p.name.startswith(".")]
    save_model_dir(save_dir, {"head": {"w": torch.zeros(1)}}, {"config": {"i": 0}})  # the save loop's "rerun"
    assert sorted(p.name for p in out.iterdir()) == ["index", "saved", "tagger", "tagger.run"]

    report: dict[str, Any] = {name: vars(log) for name, log in logs.items()}
    kills = sum(log.killed for log in logs.values())
    report["total"] = {"kill_points": kills, "seconds": round(time.perf_counter() - started, 1)}
    (tmp_path / "kill_report.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report))
    assert all(logs[target].killed >= wanted for target, wanted in KILLS.items()), report

