"""Both packages import cleanly, in either order, in a fresh interpreter."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize("statement", [
    "import oracles; import parallelepipedonn",
    "import parallelepipedonn; import oracles",
    "from oracles.milp import MilpOracle",
    "from parallelepipedonn.search import make_search",
    "from parallelepipedonn.cli import main",
])
def test_import_order_does_not_matter(statement):
    proc = subprocess.run([sys.executable, "-c", statement], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
