from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import settings

from tests.nets import REFERENCE

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
