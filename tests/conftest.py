"""Shared test fixtures: the real data location (skipping, or failing under CI, when it is absent), a feature cache
of the test session instead of the user's ``~/.cache/fashionlens``, and the ``fashionlens`` entry point run in-process.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

SHARED_DATA = Path(os.environ.get("FASHIONLENS_DATA", Path(__file__).resolve().parents[1] / ".." / "shared" / "data"))


def require_shared_data() -> Path:
    """Return the shared data folder; skip the test when it is absent, but fail under ``CI=true``."""
    root = SHARED_DATA.resolve()
    if not (root / "fashion-product-images" / "styles.csv").is_file():
        message = f"real data not found at {root} (set FASHIONLENS_DATA or place ../shared/data beside the project)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return root


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real data folder (``../shared/data``)."""
    return require_shared_data()


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """Tiny models run faster on one thread, and do not fight other test processes for the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class _Planted:
    """A pickle payload that runs ``touch marker`` if unpickled with code execution allowed."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def planted_pickle(tmp_path: Path) -> Callable[[Path], Path]:
    """``plant(path)`` writes a ``torch.save`` file at ``path`` whose loading would run code; returns the marker
    file that the code would create (it must stay absent)."""
    def plant(path: Path) -> Path:
        marker = tmp_path / f"code-ran-{path.name}"
        torch.save({"head": {"weight": torch.zeros(1)}, "payload": _Planted(marker)}, path)
        return marker
    return plant


@pytest.fixture(scope="session", autouse=True)
def _session_feature_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Every test reads and writes features in a cache of this session, never the user's ``~/.cache/fashionlens``,
    so results do not depend on earlier runs. ``FASHIONLENS_TEST_CACHE`` names a folder to use instead (kept between
    runs: faster locally, and shared by the runs of ``make mutation``)."""
    chosen = os.environ.get("FASHIONLENS_TEST_CACHE")
    cache = Path(chosen) if chosen else tmp_path_factory.mktemp("fashionlens-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FASHIONLENS_CACHE", str(cache))
        yield cache


@dataclass(frozen=True)
class CliOutcome:
    """Exit status and captured output of one ``fashionlens`` command."""

    exit_code: int
    stdout: str
    stderr: str


def _run_main(*args: str | Path) -> CliOutcome:
    from fashionlens.cli import main

    stdout, stderr = io.StringIO(), io.StringIO()
    argv = sys.argv
    sys.argv = ["fashionlens", *map(str, args)]
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            main()
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    finally:
        sys.argv = argv
    return CliOutcome(code, stdout.getvalue(), stderr.getvalue())


@pytest.fixture(scope="session")
def run_cli() -> Callable[..., CliOutcome]:
    """Run ``fashionlens <args>`` through its console-script entry point (``fashionlens.cli.main``), in-process.

    Unlike typer's ``CliRunner`` on the app, this goes through the one-line error handling of ``main``: bad input
    gives exit status 2 and an ``error:`` line on stderr. Any other exception propagates (and fails the test).
    """
    return _run_main


@dataclass
class BuiltBackbones:
    """The backbones the tasks built during a test, each with a copy of its state (parameters and buffers) then."""

    built: list[tuple[torch.nn.Module, dict[str, torch.Tensor]]]

    def assert_finetuned(self, frozen: tuple[str, ...]) -> None:
        """The first backbone built (the fine-tuned one) changed every parameter outside the ``frozen`` name
        prefixes, and left everything inside them -- parameters and BatchNorm statistics -- bit-identical."""
        assert self.built, "no backbone was built"
        network, initial = self.built[0]
        current = {**dict(network.named_parameters()), **dict(network.named_buffers())}
        parameters = {name for name, _ in network.named_parameters()}
        kept = sorted(name for name in initial if name.startswith(frozen))
        trained = sorted(name for name in initial if name in parameters and not name.startswith(frozen))
        assert kept and trained, f"frozen prefixes {frozen} split nothing: {sorted(initial)[:5]}..."
        changed = [name for name in kept if not torch.equal(current[name], initial[name])]
        assert not changed, f"frozen stages changed: {changed[:5]}"
        unchanged = [name for name in trained if torch.equal(current[name], initial[name])]
        assert not unchanged, f"{len(unchanged)} of {len(trained)} trainable parameters never moved: {unchanged[:5]}"


@pytest.fixture
def built_backbones(monkeypatch: pytest.MonkeyPatch) -> BuiltBackbones:
    """Record every backbone built through :func:`fashionlens.models.build_backbone` (the one way tasks create
    backbones)."""
    import fashionlens.models.backbones as backbones

    record = BuiltBackbones([])
    create = backbones.create_backbone

    def recording(*args: object, **kwargs: object) -> torch.nn.Module:
        network = create(*args, **kwargs)  # type: ignore[arg-type]
        state = {name: value.detach().clone() for name, value in network.state_dict(keep_vars=True).items()}
        record.built.append((network, state))
        return network

    monkeypatch.setattr(backbones, "create_backbone", recording)
    return record


@pytest.fixture(scope="session")
def save_small_hierarchy() -> Callable[..., Path]:
    """``save(directory, backbone=BackboneConfig())``: an untrained HMCN-F classifier (seeded head) over a two-level
    taxonomy (Apparel > Shirt, Jeans; Footwear > Shoe) saved to ``directory``, which it returns."""
    from fashionlens.models import BackboneConfig
    from fashionlens.tasks.hierarchy import HierarchyClassifier, HierarchyConfig, build_head
    from fashionlens.tasks.hierarchy.taxonomy import Taxonomy

    def save(directory: Path, backbone: BackboneConfig | None = None) -> Path:
        taxonomy = Taxonomy.from_json({"levels": ["master", "article"], "classes": [["Apparel", "Footwear"],
                                                                                    ["Shirt", "Jeans", "Shoe"]],
                                       "parents": [[], [0, 0, 1]]})
        config = HierarchyConfig(backbone=backbone or BackboneConfig(), hidden=16)
        torch.manual_seed(0)
        HierarchyClassifier(config, taxonomy, build_head(config, taxonomy, 1280)).save(directory)
        return directory

    return save

