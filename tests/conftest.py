"""Shared fixtures: the read-only ../shared folder beside the checkout."""

import os
from pathlib import Path

import numpy as np
import pytest

from browser import browser  # noqa: F401  (the fixture of every browser test: a chromium that records errors)

SHARED = Path(os.environ.get("BILAF_SHARED", Path(__file__).resolve().parents[2] / "shared"))


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not (SHARED / "testdata").is_dir():
        pytest.fail(f"shared test data not found at {SHARED}; set BILAF_SHARED to the shared/ folder")
    return SHARED


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
