"""Shared test fixtures: the real data location, and skipping (or failing under CI) when it is absent."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

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
