from __future__ import annotations

import os

# One torch thread, as the command line runs (parallelepipedonn.threads): torch's default
# pool spins on a loaded machine (pytest -n 2 on 2 cores). OpenMP reads OMP_NUM_THREADS
# once, when torch is first imported: set it before any import that loads torch.
os.environ.setdefault("OMP_NUM_THREADS", "1")

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import settings  # noqa: E402

from parallelepipedonn.threads import configure_threads  # noqa: E402
from tests.nets import REFERENCE  # noqa: E402

configure_threads(1)

settings.register_profile("default", deadline=None, max_examples=25, derandomize=True)
settings.load_profile("default")


@pytest.fixture(scope="session")
def reference() -> Path:
    """The original system's networks and inputs (../shared/reference), or skip."""
    if not (REFERENCE / "nets" / "mnist_nn-32.onnx").is_file():
        pytest.skip(f"reference data not found at {REFERENCE}")
    return REFERENCE


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)
