"""The ``gmm`` oracle: the cheapest sound answer for the latent-mixture classifiers of
:mod:`parallelepipedonn.gmm` (an encoder, then the mixture's Bayes rule as one affine
layer), and for any other network.

* **A linear classifier** (the IR is one affine map ``W x + b``: a linear encoder such as
  PCA, then the mixture head, composed by the importer): each margin
  ``m_j(x) = (W_c - W_j) x + (b_c - b_j)`` is affine, so its minimum over a box is
  attained at a vertex and is exact in closed form,
  ``sum_i min(a_i lo_i, a_i hi_i) + c``. The float64 value is moved outward by a proven
  bound of its rounding error (:func:`affine_box_min`). A box is VERIFIED when every
  margin's lower bound is > 0 and FALSIFIED (at the minimising vertex, confirmed by the
  base class) when some margin's upper bound is <= 0: complete, except for boxes whose
  minimum margin lies within the rounding bound of 0 (UNKNOWN).
* **Any other network** (a ReLU encoder): CROWN on encoder and head together
  (:class:`~oracles.crown.CrownOracle`, sound and incomplete).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from parallelepipedonn.network import Network
from parallelepipedonn.tolerances import ABS_SLACK, relative_slack, smallest_subnormal

from .base import Answer, FloatArray, Oracle, Verdict


def linear_map(network: Any) -> tuple[FloatArray, FloatArray] | None:
    """``(W, b)`` when the classifier is one affine map (a chain :class:`Network` of one
    layer, or a graph that is one), else ``None``."""
    chain = network if isinstance(network, Network) else getattr(network, "as_network", lambda: None)()
    if chain is None or len(chain.layers) != 1:
        return None
    layer = chain.layers[0]
    return layer.weight, layer.bias


def margin_rows(weight: FloatArray, bias: FloatArray, label: int) -> tuple[FloatArray, FloatArray, FloatArray]:
    """The margins ``logit_label - logit_j`` of an affine classifier as affine maps
    ``A x + c`` (rows: the classes ``j != label`` in increasing order, also returned). The
    float64 differences are off by at most one rounding (``u |A|``, ``u |c|``), an error
    that :func:`affine_box_min`'s slack covers."""
    others = np.array([j for j in range(weight.shape[0]) if j != label])
    return weight[label] - weight[others], bias[label] - bias[others], others


def affine_box_min(a: FloatArray, c: FloatArray, lower: FloatArray, upper: FloatArray,
                   parts: tuple[FloatArray, FloatArray, FloatArray] | None = None
                   ) -> tuple[FloatArray, FloatArray, FloatArray]:
    """For rows ``a`` (``(m, n)``) and offsets ``c`` (``(m,)``), over each box
    ``[lower[b], upper[b]]`` (``(B, n)``): proven lower and upper bounds of
    ``min_x a_j x + c_j`` (shape ``(B, m)`` each: the exact minimum, in real arithmetic on
    the float64 numbers, lies between them) and the float64 value.

    The minimum is exact in closed form (each coordinate at the end its coefficient's sign
    selects); the rounding error of the sum of ``n + 1`` terms (and of the rows' own
    rounding, one relative ``u`` each) is at most ``relative_slack(n + 1)`` times the
    magnitude ``sum_i |a_i| max(|lo_i|, |hi_i|) + |c|``, plus ``n + 1`` subnormal spacings
    and :data:`~parallelepipedonn.tolerances.ABS_SLACK`. Not finite where the float64 sum
    overflows (callers treat that as proving nothing). ``parts``: ``(max(a, 0), min(a, 0),
    |a|)`` if the caller has them."""
    n = a.shape[1]
    a_pos, a_neg, a_abs = parts if parts is not None else (np.maximum(a, 0.0), np.minimum(a, 0.0), np.abs(a))
    with np.errstate(over="ignore", invalid="ignore"):
        value = lower @ a_pos.T + upper @ a_neg.T + c
        magnitude = np.maximum(np.abs(lower), np.abs(upper)) @ a_abs.T + np.abs(c)
        err = relative_slack(n + 1) * magnitude + (n + 2) * smallest_subnormal() + ABS_SLACK
        low, high = value - err, value + err
    bad = ~(np.isfinite(low) & np.isfinite(high))
    return np.where(bad, -np.inf, low), np.where(bad, np.inf, high), value


def minimizing_vertex(a_row: FloatArray, lower: FloatArray, upper: FloatArray) -> FloatArray:
    """The vertex of the box where ``a_row x`` is smallest."""
    return np.where(a_row > 0, lower, upper)


class GmmOracle(Oracle):
    """Closed form on linear classifiers (exact, complete up to rounding), CROWN otherwise."""

    name = "gmm"
    sound = True
    complete = False  # True on instances bound to a linear classifier
    batched = True
    reads_graphs = True

    def __init__(self, network: Network, *, device: str = "cpu", time_limit: float | None = None) -> None:
        super().__init__(network, time_limit=time_limit)
        self.linear = linear_map(network)
        self.crown = None
        if self.linear is None:
            from .crown import CrownOracle

            self.crown = CrownOracle(network, device=device, time_limit=time_limit)
        else:
            self.complete = True  # type: ignore[misc]
        self.device = self.crown.device if self.crown is not None else device

    @property
    def method(self) -> str:
        return "closed-form" if self.linear is not None else "crown"

    def settings(self) -> dict[str, Any]:
        extra = {} if self.crown is None else {"crown": self.crown.settings()}
        return {**super().settings(), "method": self.method, **extra}

    def _verify(self, lower: FloatArray, upper: FloatArray, label: int) -> Sequence[Answer]:
        if self.crown is not None:
            return self.crown._verify(lower, upper, label)
        weight, bias = self.linear  # type: ignore[misc]
        a, c, others = margin_rows(weight, bias, label)
        low, high, _ = affine_box_min(a, c, lower, upper)
        answers = []
        for b in range(len(lower)):
            worst = float(low[b].min())
            if worst > 0:
                answers.append(Answer(Verdict.VERIFIED, margin=worst, reason="closed form"))
                continue
            j = int(np.argmin(high[b]))
            if high[b, j] <= 0:  # the exact minimum of margin j over the box is <= 0: its vertex
                cex = minimizing_vertex(a[j], lower[b], upper[b])
                answers.append(Answer(Verdict.FALSIFIED, counterexample=cex, margin=float(high[b, j]),
                                      reason=f"closed form: class {int(others[j])} wins at a vertex"))
            else:
                answers.append(Answer(Verdict.UNKNOWN, margin=worst,
                                      reason="closed form: the minimum margin is within its rounding bound of 0"))
        return answers
