"""Shared fixtures. What the tests need is in tests/data (a plain clone runs them); only
tests of the large shared files (the 50,000-image CIFAR-10 archive and its features) use
the read-only ../shared folder beside the checkout, and are skipped, with the reason in
the summary, where it is missing (CI has it and runs them all)."""

import os
from pathlib import Path

import numpy as np
import pytest

from browser import browser  # noqa: F401  (the fixture of every browser test: a chromium that records errors)

SHARED = Path(os.environ.get("BILAF_SHARED", Path(__file__).resolve().parents[2] / "shared"))


DATA = Path(__file__).resolve().parent / "data"
#: 400 real CIFAR-10 images (300 train, 100 test) in the full archive's format: a root for load_pool("cifar10").
CIFAR_IMAGES = DATA / "cifar10"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    return SHARED


def pytest_collection_modifyitems(config, items):
    """Tests of the large shared files are skipped, with the reason, without ../shared."""
    if (SHARED / "data" / "cifar10").is_dir():
        return
    reason = f"needs the large shared files at {SHARED} (set BILAF_SHARED to that folder); a plain clone has none"
    for item in items:
        if "shared_dir" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture
def blobs():
    """Three well separated 2-D Gaussian blobs of 60 points each, as float32."""
    rng = np.random.default_rng(0)
    centers = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    return np.concatenate([c + rng.standard_normal((60, 2)) for c in centers]).astype(np.float32)


@pytest.fixture(autouse=True)
def _private_run_store(tmp_path, monkeypatch):
    """Every test records runs in its own store, never in the user's."""
    monkeypatch.setenv("BILAF_STORE", str(tmp_path / "runs.sqlite"))
