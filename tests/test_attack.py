"""The attack's search precision: float32 on graphs with convolutions or residual
connections (``dtype="auto"``), float64 on chains; a lower precision changes which points
are found, never what is reported as a counterexample."""

import numpy as np
import pytest

from oracles import AttackOracle
from oracles.base import Verdict
from parallelepipedonn.errors import OracleError
from parallelepipedonn.graph import Graph
from tests.graph_nets import residual, small_cnn
from tests.nets import random_network


def test_auto_searches_in_float32_on_graphs_that_are_not_chains_and_in_float64_on_chains():
    chain = random_network(0, [4, 6, 3])
    assert AttackOracle(chain).dtype == "float64"
    assert AttackOracle(Graph.from_network(chain)).dtype == "float64"
    assert AttackOracle(small_cnn()).dtype == "float32"
    assert AttackOracle(residual(), dtype="float64").settings()["dtype"] == "float64"
    with pytest.raises(OracleError):
        AttackOracle(chain, dtype="float16")


@pytest.mark.parametrize("make", [small_cnn, residual])
def test_a_float32_search_reports_points_of_the_box_with_their_float64_margins(make):
    g = make(seed=1)
    rng = np.random.default_rng(0)
    x = rng.random((6, g.n_inputs))
    label = int(np.bincount(g.predict(x)).argmax())
    lo, hi = np.clip(x - 0.3, 0, 1), np.clip(x + 0.3, 0, 1)
    attack = AttackOracle(g, dtype="float32", steps=10, restarts=2)
    points, margins = attack.search(lo, hi, label)
    assert points.dtype == np.float64 and ((lo <= points) & (points <= hi)).all()
    np.testing.assert_array_equal(margins, g.margins(points, label))
    answers = attack.verify(lo, hi, label)
    assert {a.verdict for a in answers} <= {Verdict.FALSIFIED, Verdict.UNKNOWN}
    assert any(a.verdict is Verdict.FALSIFIED for a in answers)
    for a in answers:
        if a.verdict is Verdict.FALSIFIED:
            assert g.misclassified(a.counterexample[None], label)[0]
