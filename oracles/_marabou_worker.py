"""Marabou worker process: builds and solves input queries sent by ``oracles.marabou``.

Run as a script (``python _marabou_worker.py``), not imported: Marabou can terminate its
process (a native ``exit``) on some queries, so it lives in its own process, which the
oracle restarts. Messages are length-prefixed pickles on stdin/stdout:

* ``("network", weights, biases)`` — the IR's affine maps (numpy arrays);
* ``("solve", lower, upper, label, j, threshold, timeout, verbosity)`` — is there an input
  in the box with ``logit_j - logit_label >= threshold``? Answered with
  ``(exit_code, input_values_or_None)``.
"""

from __future__ import annotations

import math
import os
import pickle
import struct
import sys
import warnings


def _read(stream):
    head = stream.read(8)
    if len(head) < 8:
        return None
    (size,) = struct.unpack("<Q", head)
    return pickle.loads(stream.read(size))


def _write(stream, obj) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(struct.pack("<Q", len(data)) + data)
    stream.flush()


def _equation(core, ipq, weights, inputs, out, scalar) -> None:
    eq = core.Equation()  # sum w_i x_i - out = -bias
    for w, var in zip(weights, inputs):
        if w != 0.0:
            eq.addAddend(float(w), var)
    eq.addAddend(-1.0, out)
    eq.setScalar(float(scalar))
    ipq.addEquation(eq)


def _query(core, weights, biases, lower, upper, label, j, threshold):
    ipq = core.InputQuery()
    n = len(lower)
    hidden = [w.shape[0] for w in weights[:-1]]
    ipq.setNumberOfVariables(n + 2 * sum(hidden) + weights[-1].shape[0])
    for i in range(n):
        ipq.setLowerBound(i, float(lower[i]))
        ipq.setUpperBound(i, float(upper[i]))
    prev, nxt = list(range(n)), n
    for w, b in zip(weights[:-1], biases[:-1]):
        width = w.shape[0]
        pre, post = list(range(nxt, nxt + width)), list(range(nxt + width, nxt + 2 * width))
        nxt += 2 * width
        for k in range(width):
            _equation(core, ipq, w[k], prev, pre[k], -b[k])
            core.addReluConstraint(ipq, pre[k], post[k])
            ipq.setLowerBound(post[k], 0.0)
        prev = post
    logits = list(range(nxt, nxt + weights[-1].shape[0]))
    for c in range(len(logits)):
        _equation(core, ipq, weights[-1][c], prev, logits[c], -biases[-1][c])
    prop = core.Equation(core.Equation.GE)  # logit_j - logit_label >= threshold
    prop.addAddend(1.0, logits[j])
    prop.addAddend(-1.0, logits[label])
    prop.setScalar(float(threshold))
    ipq.addEquation(prop)
    return ipq


def main() -> None:
    out = sys.stdout.buffer
    # Marabou prints to the process's stdout: keep the protocol stream on a private copy
    proto = os.fdopen(os.dup(out.fileno()), "wb")
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from maraboupy import MarabouCore as core
    weights = biases = None
    while True:
        msg = _read(sys.stdin.buffer)
        if msg is None:
            return
        if msg[0] == "network":
            weights, biases = msg[1], msg[2]
            _write(proto, ("ok", None))
            continue
        _, lower, upper, label, j, threshold, timeout, verbosity = msg
        options = core.Options()
        options._timeoutInSeconds = 0 if timeout is None or math.isinf(timeout) else max(int(math.ceil(timeout)), 1)
        options._verbosity = verbosity
        code, values, _ = core.solve(_query(core, weights, biases, lower, upper, label, j, threshold), options,
                                     os.devnull)
        inputs = [values[i] for i in range(len(lower))] if code == "sat" else None
        _write(proto, (code, inputs))


if __name__ == "__main__":
    main()
