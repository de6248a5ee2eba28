"""``marabou``: the Marabou SMT-based verifier (maraboupy 2.0), the original system's oracle.

The IR is written directly as a Marabou input query (variables for the inputs, every
pre-activation, every ReLU output and the logits; one equation per affine output; one
ReLU constraint per neuron; input bounds from the box). Marabou runs in a worker process
(``_marabou_worker.py``): it can end its process on some queries, which must not end
the tool's; a worker that dies or overruns its time limit is replaced, and the query is
UNKNOWN. For each class ``j`` that CROWN
cannot already rule out, Marabou is asked for a point with
``logit_j - logit_label >= -PROOF_MARGIN``:

* ``unsat`` proves ``logit_label - logit_j > PROOF_MARGIN`` on the whole box — on nets with
  one hidden layer, and only from a Marabou build that does not snap narrow variable
  ranges to a point (:func:`snaps_narrow_ranges`; the maraboupy 2.0.0 wheel does, so with
  it the oracle verifies nothing: it falsifies, with confirmed counterexamples);
* ``sat`` gives a candidate, re-checked by a float64 forward pass (FALSIFIED only if it
  is really misclassified);
* ``TIMEOUT``/``ERROR``/``UNKNOWN`` are UNKNOWN — unlike the original system, which counted
  Marabou time-outs as proofs, and which only excluded counterexamples that beat the label
  by at least 1.

It is declared complete only where its ``unsat`` is a proof (``unsat_is_proof`` in its
settings): elsewhere it proves no more than CROWN. Marabou's own time limit counts whole
seconds, so a query may overrun a fractional limit by up to a second (still UNKNOWN).

Optional: ``pip install maraboupy==2.0.0`` (installed by the ``dev`` and ``marabou`` extras).
"""

from __future__ import annotations

import functools
import math
import pickle
import select
import struct
import subprocess
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from parallelepipedonn.errors import OracleError
from parallelepipedonn.network import Network
from parallelepipedonn.tolerances import PROOF_MARGIN, solver_trusted

from .base import Answer, FloatArray, Oracle, Verdict
from .bounds import NetworkTensors, crown_bound, intermediate_bounds, margin_spec, term_magnitude


def marabou_available() -> bool:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import maraboupy  # noqa: F401
    except ImportError:
        return False
    return True


_TIMEOUT = object()


#: Why an ``unsat`` of Marabou is not taken as a proof on nets with several hidden layers:
#: maraboupy 2.0 (registry wheel) answered ``unsat`` for boxes around MNIST test digits on
#: the default 784-100-100-10 net in which the attack and branch and bound found
#: counterexamples confirmed by forward passes (tests/test_oracle_agreement.py checks it).
#: Upstream reports the same on MNIST nets (Marabou issues #568, #820): the preprocessor
#: snaps variables whose bounds lie within PREPROCESSOR_ALMOST_FIXED_THRESHOLD = 1e-5 of
#: each other and then declares equations infeasible at that tolerance; the constant is
#: compiled into the 2.0.0 wheel (v2.0.0 src/configuration/GlobalConfiguration.cpp), and
#: the maintainers' fix is a rebuild with a smaller one. On one-hidden-layer nets every
#: answer checked so far agreed with milp and branch and bound.
UNTRUSTED_UNSAT = ("marabou: unsat not trusted on nets with several hidden layers "
                   "(maraboupy 2.0 returned wrong unsat answers there)")
#: Why no ``unsat`` of a Marabou build that snaps narrow ranges is a proof: its preprocessor
#: fixes a variable whose bounds lie within PREPROCESSOR_ALMOST_FIXED_THRESHOLD of each other
#: at its lower bound, dropping the rest of its range — on one-hidden-layer nets too (an
#: adversarial review: boxes 1e-5 wide, or hidden values spanning less than that on a wide
#: box, verified while they held points misclassified exactly, also on the embedded
#: 784-32-10 MNIST net). :func:`snaps_narrow_ranges` probes the installed build once.
SNAPPED_UNSAT = ("marabou: unsat not trusted: this Marabou build treats variable ranges narrower than its "
                 "PREPROCESSOR_ALMOST_FIXED_THRESHOLD (1e-5 in the maraboupy 2.0.0 wheel) as fixed, which loses "
                 "solutions (a probe query with a solution got unsat); Marabou built with a smaller threshold is trusted")

#: The probe: x in [0, 1e-7], logit_1 = 1e7 relu(x) - 0.5, logit_0 = 0; its only points with
#: logit_1 - logit_0 >= -1e-4 have x >= 0.49999e-7, none at x = 0.
_PROBE = ([np.array([[1e7]]), np.array([[0.0], [1.0]])], [np.zeros(1), np.array([0.0, -0.5])], 1e-7)


@functools.lru_cache(maxsize=1)
def snaps_narrow_ranges() -> bool:
    """Whether the installed Marabou misses the solutions of a variable whose range is
    narrower than 1e-5 (it answers the probe with anything but ``sat``): then none of its
    ``unsat`` answers is a proof. Asked once per process (a worker process, about 0.2 s)."""
    weights, biases, width = _PROBE
    worker = _Worker(weights, biases)
    try:
        code, _ = worker.solve(np.zeros(1), np.array([width]), 0, 1, -PROOF_MARGIN, 60.0, 0)
    except OracleError:
        return True
    finally:
        worker.close()
    return code != "sat"


class _Worker:
    """A Marabou process (``_marabou_worker.py``) answering one query at a time; restarted
    when it dies, killed when it overruns a query's time limit by more than ``grace``."""

    def __init__(self, weights: list, biases: list, grace: float = 10.0) -> None:
        self.weights, self.biases, self.grace = weights, biases, grace
        self.proc: subprocess.Popen | None = None

    def _start(self) -> None:
        script = Path(__file__).with_name("_marabou_worker.py")
        self.proc = subprocess.Popen([sys.executable, str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL)
        self._send(("network", self.weights, self.biases))
        if self._receive(120.0) in (None, _TIMEOUT):
            self.close()
            raise OracleError("the Marabou worker did not start")

    def _send(self, obj: Any) -> None:
        data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
        self.proc.stdin.write(struct.pack("<Q", len(data)) + data)
        self.proc.stdin.flush()

    def _receive(self, timeout: float) -> Any:
        """The next message; ``_TIMEOUT`` if none came in time, ``None`` if the worker is gone."""
        stream = self.proc.stdout
        ready, _, _ = select.select([stream], [], [], None if math.isinf(timeout) else timeout)
        if not ready:
            return _TIMEOUT
        head = stream.read(8)
        if len(head) < 8:
            return None
        (size,) = struct.unpack("<Q", head)
        return pickle.loads(stream.read(size))

    def close(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def solve(self, lower: FloatArray, upper: FloatArray, label: int, j: int, threshold: float,
              timeout: float | None, verbosity: int) -> tuple[str, list[float] | None]:
        if self.proc is None or self.proc.poll() is not None:
            self._start()
        try:
            self._send(("solve", lower, upper, label, j, threshold, timeout, verbosity))
            reply = self._receive(math.inf if timeout is None else timeout + self.grace)
        except (BrokenPipeError, OSError, EOFError, pickle.UnpicklingError):
            reply = None
        if reply is _TIMEOUT:
            self.close()
            return "TIMEOUT", None
        if reply is None:
            try:
                status = self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                status = "unknown"
            self.close()
            return f"ERROR (the Marabou process exited with code {status})", None
        return reply


class MarabouOracle(Oracle):
    """Marabou via maraboupy (see module docstring)."""

    name = "marabou"
    sound = True
    complete = True
    batched = False
    queries = frozenset({"verify"})

    def __init__(self, network: Network, *, time_limit: float | None = 60.0, verbosity: int = 0) -> None:
        super().__init__(network, time_limit=time_limit)
        if not marabou_available():
            raise OracleError("the marabou oracle needs maraboupy: pip install maraboupy==2.0.0")
        self.verbosity = verbosity
        # Marabou 2.0 answers unsat on boxes of 784-100-100-10 nets that hold confirmed
        # counterexamples (see UNTRUSTED_UNSAT): its unsat is a proof only with one hidden layer,
        # and only from a build that does not snap narrow ranges (SNAPPED_UNSAT)
        network = self.network  # a graph's chain expansion (see oracles.chain)
        self.snaps = snaps_narrow_ranges()
        self.trusts_unsat = len(network.affines) <= 2 and not self.snaps
        # complete only where its unsat is a proof: else it proves no more than CROWN does, and
        # callers that skip a complete oracle's fallbacks (certify's epsilon check, exact) must not
        self.complete = self.trusts_unsat  # type: ignore[misc]
        self.tensors = NetworkTensors.of(network)
        self._worker = _Worker([a.weight for a in network.affines], [a.bias for a in network.affines])

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "proof_margin": PROOF_MARGIN, "solver": "Marabou (maraboupy 2.0)",
                "process": "separate worker", "unsat_is_proof": self.trusts_unsat}

    def close(self) -> None:
        """Stop the Marabou worker process (it is also stopped when the oracle is deleted)."""
        self._worker.close()

    def __del__(self) -> None:
        worker = getattr(self, "_worker", None)
        if worker is not None:
            worker.close()

    def _verify(self, lower: FloatArray, upper: FloatArray, label: int) -> Sequence[Answer]:
        return [self._verify_box(lower[i], upper[i], label) for i in range(len(lower))]

    def _verify_box(self, lower: FloatArray, upper: FloatArray, label: int) -> Answer:
        deadline = math.inf if self.time_limit is None else time.perf_counter() + self.time_limit
        lo = torch.tensor(lower, dtype=torch.float64)[None]
        hi = torch.tensor(upper, dtype=torch.float64)[None]
        with torch.no_grad():
            inter = intermediate_bounds(self.tensors, lo, hi)
            spec = margin_spec(self.network.n_classes, label, 1, lo.dtype, lo.device)
            crown = crown_bound(self.tensors, spec, lo, hi, inter)[0].numpy()
            scale = term_magnitude(self.tensors, spec, lo, hi, inter)[0].numpy()
        others = [j for j in range(self.network.n_classes) if j != label]
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
                code, values = self._worker.solve(lower, upper, label, j, threshold,
                                                  None if math.isinf(remaining) else remaining, self.verbosity)
                if code == "unsat" and not self.trusts_unsat:
                    return Answer(Verdict.UNKNOWN, reason=SNAPPED_UNSAT if self.snaps else UNTRUSTED_UNSAT)
                if code == "unsat" and not solver_trusted(float(scale[row])):
                    return Answer(Verdict.UNKNOWN, reason=f"marabou: unsat for class {j} is no proof at this "
                                  f"network's scale ({scale[row]:.3g}; see tolerances.solver_trusted)")
                if code == "unsat":
                    break
                if code != "sat":
                    return Answer(Verdict.UNKNOWN, timed_out=code == "TIMEOUT", reason=f"marabou: {code}")
                x = np.clip(np.array(values, dtype=np.float64), lower, upper)
                if self.network.margins(x, label)[0] <= 0:
                    return Answer(Verdict.FALSIFIED, counterexample=x, reason=f"marabou sat for class {j}")
            if code != "unsat" or threshold != -PROOF_MARGIN:
                return Answer(Verdict.UNKNOWN, reason=f"marabou: the margin for class {j} is within "
                              f"{PROOF_MARGIN} of 0")
        return Answer(Verdict.VERIFIED)
