"""Shared test fixtures: the real data location, and skipping (or failing under CI) when it is absent."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
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
