"""The attack's search precision: float32 on graphs with convolutions or residual
connections (``dtype="auto"``), float64 on chains; a lower precision changes which points
are found, never what is reported as a counterexample. A box leaves the search once its
counterexample is confirmed; no step is taken past the call's time limit."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

import oracles.attack as attack_module
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
    """Boxes whose best point is confirmed misclassified leave the batch: fewer points are
    evaluated, such a box still answers FALSIFIED with a confirmed counterexample, and the
    other boxes take every step with the same points as when no box leaves (float64)."""
    g = small_cnn(seed=0)
    x = np.random.default_rng(0).random((3, g.n_inputs))
    label = int(g.predict(x[:1])[0])
    x[1] = x[0]
    x[2] = x[0] + np.random.default_rng(1).uniform(-1e-3, 1e-3, g.n_inputs)
    radii = np.array([1e-6, 0.5, 1e-6])  # the point alone (robust), nearly the whole domain, a point nearby
    lo, hi = np.clip(x - radii[:, None], 0, 1), np.clip(x + radii[:, None], 0, 1)
    assert (g.predict(np.concatenate([lo[[0, 2]], hi[[0, 2]]])) == label).all()
    attack = AttackOracle(g, dtype=dtype, steps=10, restarts=2)
    rows = []
    module_forward = attack.module.forward
    attack.module.forward = lambda t: rows.append(len(t)) or module_forward(t)
    answers = attack.verify(lo, hi, label)
    assert [a.verdict for a in answers] == [Verdict.UNKNOWN, Verdict.FALSIFIED, Verdict.UNKNOWN]
    assert g.misclassified(answers[1].counterexample[None], label)[0]
    k = attack.restarts + 2
    assert len(rows) == attack.steps + 1 and rows[0] == 3 * k and rows[-1] == 2 * k  # the robust boxes' copies go on
    # the elements (copy-major: copy * boxes + box) that go on are the other boxes' copies
    best_x = torch.tensor(np.tile(np.where([[False], [True], [False]], answers[1].counterexample, x), (k, 1)))
    best_m = torch.tensor(np.tile([1.0, -1.0, 1.0], k))
    done, tried = np.zeros(3, dtype=bool), np.full(3, np.inf)
    live = attack._retire(best_x, best_m, lo, hi, label, done, tried, None)
    assert done.tolist() == [False, True, False] and live.tolist() == [e for e in range(3 * k) if e % 3 != 1]
    if dtype == "float64":  # the boxes that stay: the points of a search in which no box leaves
        points, _ = AttackOracle(g, dtype=dtype, steps=10, restarts=2).search(lo, hi, label)
        kept = AttackOracle(g, dtype=dtype, steps=10, restarts=2)
        kept._retire = lambda *args: args[-1]  # never retire
        np.testing.assert_array_equal(points[[0, 2]], kept.search(lo, hi, label)[0][[0, 2]])


def test_no_step_is_taken_once_the_time_limit_has_passed(monkeypatch):
    """A call's time limit bounds the search: past it the points evaluated so far are the
    answer (here the starting points alone: the clock reads past the deadline after the
    first evaluation), and its UNKNOWN answers say they timed out; without a limit, or with
    one it does not reach, every step is taken and nothing timed out. (A few-input model's
    attack, 10,000 starts of a large net, ran 1.5 s past `verify --timeout` before; then,
    cut short, it answered as if it had searched to the end.)"""
    g = small_cnn(seed=0)
    x = np.random.default_rng(0).random((1, g.n_inputs))
    label = int(g.predict(x)[0])
    lo, hi = np.clip(x - 1e-3, 0, 1), np.clip(x + 1e-3, 0, 1)
    for limit, evaluations, timed_out in ((None, 6, False), (1e9, 6, False), (5.0, 1, True)):
        attack = AttackOracle(g, dtype="float64", steps=5, restarts=2)
        rows = []
        module_forward = attack.module.forward
        attack.module.forward = lambda t, rows=rows, f=module_forward: rows.append(len(t)) or f(t)
        clock = iter(np.arange(0.0, 1e6, 10.0))  # the attack's clock: each reading 10 s after the last
        monkeypatch.setattr(attack_module, "time", SimpleNamespace(perf_counter=lambda: float(next(clock))))
        with attack.time_limited(limit):
            (answer,) = attack.verify(lo, hi, label)
        assert answer.verdict is Verdict.UNKNOWN and len(rows) == evaluations
        assert answer.timed_out is timed_out and ("time limit" in answer.reason) is timed_out
        assert attack.stats.timeouts == int(timed_out)


def test_an_empty_batch_has_no_answers():
    attack = AttackOracle(small_cnn(seed=0), dtype="float64", steps=3)
    empty = np.zeros((0, attack.network.n_inputs))
    assert list(attack.verify(empty, empty, 0)) == [] and attack.stats.errors == 0
