"""Exact (MILP) encodings of the IR with pyomo, and their solution by HiGHS.

For a box of inputs and sound pre-activation bounds ``l <= z <= u`` of every ReLU
(from interval/CROWN propagation over the same box):

* stable neurons need no binary: ``a = z`` (``l >= 0``) or ``a = 0`` (``u <= 0``);
* a neuron with a fixed *phase* (a branch of branch-and-bound): ``a = z, z >= 0`` or
  ``a = 0, z <= 0``;
* every other neuron: big-M with a binary ``d`` —
  ``a >= z, a >= 0, a <= z - l (1 - d), a <= u d``;
  or its LP relaxation (``d`` in [0, 1]) when ``relax=True``.

The encoding is exact: its feasible ``(x, logits)`` are exactly the network's graph over
the box (restricted to the fixed phases). Results are turned into proofs only through
:func:`solve`, which reports the solver's *proven* bound, never an incumbent as a bound.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyomo.environ as pe
from numpy.typing import NDArray
from pyomo.contrib.appsi.base import TerminationCondition
from pyomo.contrib.appsi.solvers.highs import Highs
from pyomo.core.expr.numeric_expr import LinearExpression

from parallelepipedonn.network import Network
from parallelepipedonn.tolerances import (
    DROPPED_ROW_SHARE,
    FRAGILE_ROW_SHIFT,
    HIGHS_RELIABLE_COEFFICIENT,
    HIGHS_SMALL_MATRIX_VALUE,
    solver_tolerance,
)
from parallelepipedonn.tolerances import PROOF_MARGIN as _PROOF_MARGIN

FloatArray = NDArray[np.float64]

#: A solver bound counts as a proof of ``value > 0`` only when it exceeds this (and the
#: solver error model's margin at the problem's scale, see :mod:`parallelepipedonn.tolerances`).
PROOF_MARGIN = _PROOF_MARGIN


@dataclass
class Encoding:
    """A pyomo model of the network over a box: ``x`` (inputs), ``logits`` (linear
    expressions), and the variables of every layer."""

    model: pe.ConcreteModel
    x: list
    logits: list
    binaries: dict[tuple[int, int], Any]  # (layer, neuron) -> binary variable
    n_unstable: int

    def fix_phases(self, phases: Sequence[NDArray[np.int8]]) -> None:
        """Fix the binaries of neurons with a phase (+1 active, -1 inactive) and free the
        others: with its binary fixed, the big-M constraints encode the phase exactly."""
        for (layer, k), d in self.binaries.items():
            p = int(phases[layer][k])
            if p:
                d.fix(1.0 if p > 0 else 0.0)
            elif d.fixed:
                d.unfix()


def _linear(const: float, coefs: np.ndarray, variables: list) -> LinearExpression:
    nz = np.flatnonzero(coefs)
    return LinearExpression(constant=float(const), linear_coefs=coefs[nz].tolist(),
                            linear_vars=[variables[i] for i in nz])


def encode(network: Network, lower: FloatArray, upper: FloatArray, bounds: Sequence[tuple[FloatArray, FloatArray]],
           phases: Sequence[NDArray[np.int8]] | None = None, relax: bool = False,
           minimize_last: FloatArray | None = None) -> Encoding:
    """Encode ``network`` on the box ``[lower, upper]``.

    ``bounds[i] = (l_i, u_i)`` must be sound bounds of the i-th ReLU layer's input over the
    box; ``phases[i]`` (optional) fixes neurons: +1 active, -1 inactive, 0 free.

    ``minimize_last`` (optional): the coefficients ``v`` of the last ReLU layer's outputs
    in an objective that will only be *minimised* (or constrained from above). An
    unstable neuron with ``v_k >= 0`` then needs no binary: its epigraph
    ``a >= max(z, 0)`` is exact at any optimum (lowering ``a`` only lowers the
    objective). Such an encoding is exact for that objective only.
    """
    m = pe.ConcreteModel()
    n = network.n_inputs
    m.x = pe.Var(range(n), bounds=lambda _, i: (float(lower[i]), float(upper[i])))
    m.cons = pe.ConstraintList()
    prev = [m.x[i] for i in range(n)]
    binaries: dict[tuple[int, int], Any] = {}
    n_unstable = 0
    affines = network.affines
    for li, (lo_b, hi_b) in enumerate(bounds):
        w, b = affines[li].weight, affines[li].bias
        width = w.shape[0]
        phase = phases[li] if phases is not None else np.zeros(width, dtype=np.int8)
        a = pe.Var(range(width), domain=pe.NonNegativeReals)
        m.add_component(f"a{li}", a)
        for k in range(width):
            z = _linear(b[k], w[k], prev)
            lk, uk = float(lo_b[k]), float(hi_b[k])
            if phase[k] < 0 or uk <= 0:
                a[k].fix(0.0)
                if phase[k] < 0 and uk > 0:
                    m.cons.add(z <= 0)
            elif phase[k] > 0 or lk >= 0:
                a[k].setub(max(uk, 0.0))
                m.cons.add(a[k] == z)
                if phase[k] > 0 and lk < 0:
                    m.cons.add(z >= 0)
            else:
                n_unstable += 1
                a[k].setub(uk)
                m.cons.add(a[k] >= z)
                convex = minimize_last is not None and li == len(bounds) - 1 and minimize_last[k] >= 0
                if convex:
                    continue
                if relax:
                    m.cons.add(a[k] <= uk / (uk - lk) * (z - lk))
                else:
                    d = pe.Var(domain=pe.Binary)
                    m.add_component(f"d{li}_{k}", d)
                    binaries[(li, k)] = d
                    m.cons.add(a[k] <= z - lk * (1 - d))
                    m.cons.add(a[k] <= uk * d)
        prev = [a[k] for k in range(width)]
    w, b = affines[-1].weight, affines[-1].bias
    logits = [_linear(b[j], w[j], prev) for j in range(w.shape[0])]
    return Encoding(m, [m.x[i] for i in range(n)], logits, binaries, n_unstable)


@dataclass(frozen=True)
class SolveResult:
    """What a solve proved: ``bound`` is a proven bound on the optimum (lower for
    minimisation, upper for maximisation; ``None`` if none), ``value`` the best feasible
    objective found and ``x`` its inputs (an incumbent, not a proof), ``status`` the
    solver's termination condition."""

    status: str
    bound: float | None
    value: float | None
    x: FloatArray | None
    seconds: float

    @property
    def optimal(self) -> bool:
        return self.status == "optimal"

    @property
    def infeasible(self) -> bool:
        return self.status == "infeasible"

    @property
    def timed_out(self) -> bool:
        return self.status == "maxTimeLimit"


class _Highs(Highs):
    """pyomo's persistent HiGHS interface, with its options set before the model is
    passed: pyomo sets them only before each solve, after the rows were added, so that
    HiGHS would drop matrix entries under its default ``small_matrix_value`` (1e-9).
    The entries HiGHS drops (at or below :data:`HIGHS_SMALL_MATRIX_VALUE`) or may lose
    (below :data:`HIGHS_RELIABLE_COEFFICIENT`) are kept per row, with their variables, for
    :meth:`dropped_shift`."""

    def add_block(self, block) -> None:
        for key, option in self.highs_options.items():
            self._solver_model.setOptionValue(key, option)
        super().add_block(block)

    def _add_constraints(self, cons: list) -> None:
        highs, rows = self._solver_model, []

        def watched(n, lbs, ubs, nnz, starts, index, values, add=highs.addRows):
            rows.append((np.asarray(starts), np.asarray(index), np.asarray(values, dtype=np.float64)))
            return add(n, lbs, ubs, nnz, starts, index, values)

        highs.addRows = watched  # the rows pyomo passes, as HiGHS receives them
        try:
            super()._add_constraints(cons)
        finally:
            del highs.addRows
        dropped = getattr(self, "_dropped", {})
        self._dropped = dropped
        by_index = None
        for starts, index, values in rows:
            small = np.flatnonzero((values != 0) & (np.abs(values) < HIGHS_RELIABLE_COEFFICIENT))
            if not len(small):
                continue
            if by_index is None:
                by_index = {i: self._vars[v][0] for v, i in self._pyomo_var_to_solver_var_map.items()}
            for r, e in zip((np.searchsorted(starts, small, side="right") - 1).tolist(), small.tolist()):
                dropped.setdefault(cons[r], []).append((by_index[int(index[e])], float(values[e])))

    def _remove_constraints(self, cons: list) -> None:
        for con in cons:
            getattr(self, "_dropped", {}).pop(con, None)
        super()._remove_constraints(cons)

    def dropped_shift(self) -> tuple[float, float]:
        """The most the entries HiGHS drops (at or below :data:`HIGHS_SMALL_MATRIX_VALUE`),
        and those it may lose (below :data:`HIGHS_RELIABLE_COEFFICIENT`), can move a row:
        per row, the sum of ``|coefficient| * max(|lb|, |ub|)`` of their variables (a fixed
        one: its value; an unbounded one: ``inf``)."""
        dropped = fragile = 0.0
        for entries in getattr(self, "_dropped", {}).values():
            row = [0.0, 0.0]
            for var, coef in entries:
                if var.fixed:
                    reach = abs(float(var.value))
                elif var.lb is None or var.ub is None:
                    reach = math.inf
                else:
                    reach = max(abs(float(var.lb)), abs(float(var.ub)))
                row[abs(coef) > HIGHS_SMALL_MATRIX_VALUE] += abs(coef) * reach
            dropped, fragile = max(dropped, row[0]), max(fragile, row[1])
        return dropped, fragile


def make_solver(time_limit: float | None, mip_rel_gap: float = 1e-6, threads: int = 1,
                options: dict[str, Any] | None = None, scale: float | None = None) -> Highs:
    """A persistent HiGHS interface. HiGHS ignores matrix entries at or below
    ``small_matrix_value``; it is set to its minimum (1e-12) before the model is passed
    (reference weights go down to 1e-37), and :func:`solve` proves nothing where the
    entries dropped, or those below HiGHS's default 1e-9, can move a row by more than
    :data:`DROPPED_ROW_SHARE` of the tolerance or :data:`FRAGILE_ROW_SHIFT` (a tiny weight
    on a large value is no small term). Feasibility tolerances (primal, dual, MIP) follow the problem's
    ``scale`` (:func:`~parallelepipedonn.tolerances.solver_tolerance`: 1e-7 on ordinary
    problems, down to 1e-9; 1e-9 when the scale is not given), not HiGHS's 1e-7/1e-6: a
    ReLU row ``a = z`` that slips by 1e-6 moves a margin by 1e-6 times the output weights,
    which reached the margin itself on a crafted network (output weight 2e6).
    ``options``: more HiGHS options. Its log goes to the ``pyomo`` logger at DEBUG level."""
    opt = _Highs()
    opt.config.load_solution = False
    opt.config.log_level = logging.DEBUG
    tol = solver_tolerance(scale)
    opt.highs_options = {"output_flag": False, "mip_rel_gap": mip_rel_gap, "threads": threads,
                         "small_matrix_value": HIGHS_SMALL_MATRIX_VALUE, "primal_feasibility_tolerance": tol,
                         "dual_feasibility_tolerance": tol, "mip_feasibility_tolerance": tol, **(options or {})}
    if time_limit is not None:
        opt.config.time_limit = max(float(time_limit), 0.01)
    return opt


def retune(opt: Highs, time_limit: float | None, scale: float | None) -> None:
    """A solver of :func:`make_solver`, kept for another problem on the same model: its
    time limit and its feasibility tolerances set for that problem's ``scale``."""
    tol = solver_tolerance(scale)
    opt.highs_options.update(primal_feasibility_tolerance=tol, dual_feasibility_tolerance=tol,
                             mip_feasibility_tolerance=tol)
    opt.config.time_limit = None if time_limit is None else max(float(time_limit), 0.01)


def _solve_without_presolve(opt: Highs, m: pe.ConcreteModel):  # noqa: ANN202 (pyomo's Results)
    """The same problem solved again with HiGHS's presolve off (the options restored after).
    HiGHS's presolve has called a feasible problem infeasible: an adversarial review found a
    branch-and-bound leaf (fixed phases of a 14-ReLU residual net, scale 550) with a point of
    the box 0.03 inside every fixed phase and a margin of -397 that presolve called
    infeasible, and that the solve without presolve solves (optimal, -397.2998)."""
    previous = opt.highs_options.get("presolve")
    opt.highs_options["presolve"] = "off"
    try:
        return opt.solve(m)
    finally:
        if previous is None:
            opt.highs_options.pop("presolve", None)
            opt._solver_model.setOptionValue("presolve", "choose")
        else:
            opt.highs_options["presolve"] = previous


def solve(opt: Highs, enc: Encoding, objective, sense=pe.minimize) -> SolveResult:
    """Set the objective, solve, and read the proven bound and the incumbent. An
    ``infeasible`` answer counts only when HiGHS finds it without its presolve too
    (:func:`_solve_without_presolve`)."""
    m = enc.model
    if m.component("objective") is not None:
        m.del_component("objective")
    m.objective = pe.Objective(expr=objective, sense=sense)
    start = time.perf_counter()
    try:
        res = opt.solve(m)
        if (res.termination_condition is TerminationCondition.infeasible and isinstance(opt, _Highs)
                and opt.highs_options.get("presolve", "choose") != "off"):
            res = _solve_without_presolve(opt, m)
    except Exception as exc:  # solver failure: nothing proven
        return SolveResult(f"error: {exc}", None, None, None, time.perf_counter() - start)
    status = res.termination_condition.name
    if isinstance(opt, _Highs):  # HiGHS solved another problem: its bound and its claims prove nothing
        dropped, fragile = opt.dropped_shift()
        if dropped > DROPPED_ROW_SHARE * float(opt.highs_options.get("primal_feasibility_tolerance", 0.0)):
            status = (f"error: coefficients at or below {HIGHS_SMALL_MATRIX_VALUE:g}, which HiGHS drops, move a row "
                      f"by up to {dropped:.3g}")
        elif fragile > FRAGILE_ROW_SHIFT:
            status = (f"error: coefficients below {HIGHS_RELIABLE_COEFFICIENT:g}, which HiGHS may lose, move a row "
                      f"by up to {fragile:.3g}")
    bound = res.best_objective_bound
    if bound is not None and (math.isnan(bound) or (sense == pe.minimize and bound == math.inf and status != "infeasible")):
        bound = None
    value = res.best_feasible_objective
    x = None
    if value is not None and res.termination_condition in (
            TerminationCondition.optimal, TerminationCondition.maxTimeLimit, TerminationCondition.objectiveLimit,
            TerminationCondition.maxIterations):
        # an input that appears in no constraint (it only feeds dead neurons, e.g. a pixel
        # outside every live receptive field) is not in the solver: any value of its bounds
        primals = opt.get_primals()
        x = np.array([primals[v] if v in primals else v.lb for v in enc.x], dtype=np.float64)
    if status == "infeasible":
        bound = math.inf if sense == pe.minimize else -math.inf
    elif status not in ("optimal", "maxTimeLimit", "objectiveLimit", "maxIterations"):
        bound = None
    elif status != "optimal" and not _has_integers(m):
        bound = None  # an LP stopped early: pyomo reports its current objective, not a bound
    return SolveResult(status, bound, value, x, time.perf_counter() - start)


def _has_integers(model: pe.ConcreteModel) -> bool:
    """Whether HiGHS solves ``model`` as a MIP (its reported bound is then the MIP's dual
    bound, valid at any stop) rather than as an LP."""
    return any(v.is_integer() or v.is_binary() for v in model.component_data_objects(pe.Var, active=True))
