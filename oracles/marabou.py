"""``marabou``: the Marabou SMT-based verifier (maraboupy 2.0), the original system's oracle.

The IR is written directly as a Marabou input query (variables for the inputs, every
pre-activation, every ReLU output and the logits; one equation per affine output; one
ReLU constraint per neuron; input bounds from the box). For each class ``j`` that CROWN
cannot already rule out, Marabou is asked for a point with
``logit_j - logit_label >= -PROOF_MARGIN``:

* ``unsat`` proves ``logit_label - logit_j > PROOF_MARGIN`` on the whole box;
* ``sat`` gives a candidate, re-checked by a float64 forward pass (FALSIFIED only if it
  is really misclassified);
* ``TIMEOUT``/``ERROR``/``UNKNOWN`` are UNKNOWN — unlike the original system, which counted
  Marabou time-outs as proofs, and which only excluded counterexamples that beat the label
  by at least 1.

Optional: ``pip install maraboupy==2.0.0`` (installed by the ``dev`` and ``marabou`` extras).
"""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from parallelepipedonn.errors import OracleError
from parallelepipedonn.network import Network

from .base import Answer, FloatArray, Oracle, Verdict
from .bounds import NetworkTensors, backward, concretize, intermediate_bounds, margin_spec, relu_relaxation
from .milp_encoding import PROOF_MARGIN


def marabou_available() -> bool:
    try:
        _import()
    except ImportError:
        return False
    return True


def _import():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from maraboupy import MarabouCore
    return MarabouCore


class MarabouOracle(Oracle):
    """Marabou via maraboupy (see module docstring)."""

    name = "marabou"
    sound = True
    complete = True
    batched = False

    def __init__(self, network: Network, *, time_limit: float | None = 60.0, verbosity: int = 0) -> None:
        super().__init__(network, time_limit=time_limit)
        try:
            self._core = _import()
        except ImportError as exc:
            raise OracleError("the marabou oracle needs maraboupy: pip install maraboupy==2.0.0") from exc
        self.verbosity = verbosity
        self.tensors = NetworkTensors.of(network)

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "proof_margin": PROOF_MARGIN, "solver": "Marabou (maraboupy 2.0)"}

    def _query(self, lower: FloatArray, upper: FloatArray, label: int, j: int, threshold: float):
        core = self._core
        ipq = core.InputQuery()
        affines = self.network.affines
        n = self.network.n_inputs
        sizes = [n] + [a.out_features for a in affines[:-1]]
        total = n + 2 * sum(sizes[1:]) + affines[-1].out_features
        ipq.setNumberOfVariables(total)
        for i in range(n):
            ipq.setLowerBound(i, float(lower[i]))
            ipq.setUpperBound(i, float(upper[i]))
        prev = list(range(n))
        nxt = n
        for aff in affines[:-1]:
            pre = list(range(nxt, nxt + aff.out_features))
            post = list(range(nxt + aff.out_features, nxt + 2 * aff.out_features))
            nxt += 2 * aff.out_features
            for k in range(aff.out_features):
                self._equation(ipq, aff.weight[k], prev, pre[k], -float(aff.bias[k]))
                core.addReluConstraint(ipq, pre[k], post[k])
                ipq.setLowerBound(post[k], 0.0)
            prev = post
        last = affines[-1]
        logits = list(range(nxt, nxt + last.out_features))
        for c in range(last.out_features):
            self._equation(ipq, last.weight[c], prev, logits[c], -float(last.bias[c]))
        prop = core.Equation(core.Equation.GE)  # logit_j - logit_label >= threshold
        prop.addAddend(1.0, logits[j])
        prop.addAddend(-1.0, logits[label])
        prop.setScalar(threshold)
        ipq.addEquation(prop)
        return ipq

    def _equation(self, ipq, weights: FloatArray, inputs: list[int], out: int, scalar: float) -> None:
        eq = self._core.Equation()  # sum w_i x_i - out = -bias
        for w, var in zip(weights, inputs):
            if w != 0.0:
                eq.addAddend(float(w), var)
        eq.addAddend(-1.0, out)
        eq.setScalar(scalar)
        ipq.addEquation(eq)

    def _verify(self, lower: FloatArray, upper: FloatArray, label: int) -> Sequence[Answer]:
        return [self._verify_box(lower[i], upper[i], label) for i in range(len(lower))]

    def _verify_box(self, lower: FloatArray, upper: FloatArray, label: int) -> Answer:
        deadline = math.inf if self.time_limit is None else time.perf_counter() + self.time_limit
        lo = torch.tensor(lower, dtype=torch.float64)[None]
        hi = torch.tensor(upper, dtype=torch.float64)[None]
        with torch.no_grad():
            inter = intermediate_bounds(self.tensors, lo, hi)
            spec = margin_spec(self.network.n_classes, label, 1, lo.dtype, lo.device)
            crown = concretize(backward(self.tensors, spec, self.tensors.depth - 1,
                                        [relu_relaxation(a, b) for a, b in inter]), lo, hi)[0].numpy()
        others = [j for j in range(self.network.n_classes) if j != label]
        n = self.network.n_inputs
        for row in np.argsort(crown):
            if crown[row] > 0:
                break
            j = others[row]
            # ask for margin <= PROOF_MARGIN (unsat: proof); if the point found is not a real
            # counterexample, ask for margin <= -PROOF_MARGIN (a clearly misclassified point)
            for threshold in (-PROOF_MARGIN, PROOF_MARGIN):
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    return Answer(Verdict.UNKNOWN, timed_out=True, reason="marabou: time limit")
                code, values = self._solve(self._query(lower, upper, label, j, threshold), remaining)
                if code == "unsat":
                    break
                if code != "sat":
                    return Answer(Verdict.UNKNOWN, timed_out=code == "TIMEOUT", reason=f"marabou: {code}")
                x = np.clip(np.array([values[i] for i in range(n)], dtype=np.float64), lower, upper)
                if self.network.margins(x, label)[0] <= 0:
                    return Answer(Verdict.FALSIFIED, counterexample=x, reason=f"marabou sat for class {j}")
            if code != "unsat" or threshold != -PROOF_MARGIN:
                return Answer(Verdict.UNKNOWN, reason=f"marabou: the margin for class {j} is within "
                              f"{PROOF_MARGIN} of 0")
        return Answer(Verdict.VERIFIED)

    def _solve(self, ipq, remaining: float) -> tuple[str, dict]:
        options = self._core.Options()
        options._timeoutInSeconds = 0 if math.isinf(remaining) else max(int(math.ceil(remaining)), 1)
        options._verbosity = self.verbosity
        code, values, _ = self._core.solve(ipq, options, os.devnull)
        return code, values
