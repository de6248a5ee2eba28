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


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_box_stops_stepping_once_its_counterexample_is_confirmed(dtype):
    """Boxes whose best point is misclassified (in the search's dtype and in a float64
    pass) leave the batch: fewer points are evaluated, and each such box still answers
    FALSIFIED with a confirmed counterexample; the others take every step."""
    g = small_cnn(seed=0)
    x = np.random.default_rng(0).random((1, g.n_inputs))
    label = int(g.predict(x)[0])
    radii = np.array([1e-6, 0.5])  # the point alone (robust), then nearly the whole domain
    lo, hi = np.clip(x - radii[:, None], 0, 1), np.clip(x + radii[:, None], 0, 1)
    attack = AttackOracle(g, dtype=dtype, steps=10, restarts=2)
    rows = []
    module_forward = attack.module.forward
    attack.module.forward = lambda t: rows.append(len(t)) or module_forward(t)
    answers = attack.verify(lo, hi, label)
    assert [a.verdict for a in answers] == [Verdict.UNKNOWN, Verdict.FALSIFIED]
    assert g.misclassified(answers[1].counterexample[None], label)[0]
    k = attack.restarts + 2
    assert len(rows) == attack.steps + 1 and rows[0] == 2 * k and rows[-1] == k  # the robust box's copies go on
