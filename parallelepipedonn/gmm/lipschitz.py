"""Proven upper bounds of spectral norms and of the L2 Lipschitz constants of ReLU chains.

A plain power iteration bounds a spectral norm from *below*; nothing here relies on one.
:func:`spectral_norm_upper` bounds ``||W||_2`` from above by three rigorous bounds, the
smallest of them:

* ``||G^k||_inf^(1/(2k))`` with ``G = W W^T`` (or ``W^T W``, the smaller) and ``k = 2^s``:
  for a symmetric positive semi-definite ``G``, ``||W||_2^2 = lambda_max(G) = rho(G)`` and
  ``rho(G)^k = rho(G^k) <= ||G^k||_inf`` for every induced norm. The bound tends to
  ``||W||_2`` as ``k`` grows (overestimate at most ``m^(1/(4k))`` for ``m`` rows: 0.5 %
  for ``m = 100``, ``s = 8``). ``G`` and its powers are computed in midpoint-radius
  interval arithmetic (:func:`_interval_product`): the exact matrix lies, entrywise, within
  the radius of the computed midpoint, every product's rounding error (``relative_slack``
  of its inner dimension times the magnitude of its terms, plus underflow) added to the
  radius; rescaling by powers of two is exact;
* the Frobenius norm, rounded up;
* ``sqrt(||W||_1 ||W||_inf)``, rounded up.

The L2 Lipschitz constant of ``x -> s^T f(x)`` for a ReLU chain ``f`` (ReLU is
1-Lipschitz) is at most ``||s^T W_L||_2 prod_(l < L) ||W_l||_2`` (:func:`margin_lipschitz`).
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
from numpy.typing import NDArray

from ..network import Network
from ..tolerances import UNIT_ROUNDOFF_F64, relative_slack, smallest_subnormal

FloatArray = NDArray[np.float64]

#: Squarings of the Gram matrix in :func:`spectral_norm_upper` (``k = 2^8`` = 256th power).
SQUARINGS = 8

#: Relative cover of the final ``log2``/``exp2`` of :func:`spectral_norm_upper` (their
#: rounding error is a few units in the last place times the exponent's size: far below).
_POW_COVER = 1e-10


def round_up(value: float, n_terms: int) -> float:
    """``value`` (>= 0, computed by a sum of ``n_terms`` rounded terms) moved up by its
    rounding error: ``(1 + relative_slack(n_terms))`` times it, plus a subnormal."""
    return float(value) * (1 + relative_slack(n_terms)) + smallest_subnormal()


def div_down(a: FloatArray | float, b: FloatArray | float) -> FloatArray:
    """``a / b`` rounded towards 0 (``a >= 0``, ``b >= 0``; ``inf`` where ``b == 0 < a``,
    0 where ``a == 0``; the largest float where a finite quotient overflows): a proven
    lower bound of the exact quotient of the two numbers."""
    a_, b_ = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if (b_ > 0).all():  # the usual case: the same quotients without the guards
            q = a_ / b_
        else:
            q = np.where(b_ > 0, a_ / np.where(b_ > 0, b_, 1.0), np.where(a_ > 0, np.inf, 0.0))
    overflow = np.isinf(q) & (b_ > 0) & np.isfinite(a_)
    q = np.where(overflow, np.finfo(np.float64).max, q)
    return np.where(np.isfinite(q) & (q > 0) & ~overflow, np.nextafter(q, 0.0), q)


def _interval_product(ac: FloatArray, ar: FloatArray, bc: FloatArray, br: FloatArray
                      ) -> tuple[FloatArray, FloatArray]:
    """Midpoint-radius product: if the exact ``A`` lies in ``[ac - ar, ac + ar]`` and
    ``B`` in ``[bc - br, bc + br]`` (entrywise), the exact ``A B`` lies within the returned
    radius of the returned midpoint. The midpoint's rounding (``gamma_n |ac| |bc|``) and
    the radius's own (rounded up by the slack) are covered."""
    n = ac.shape[1]
    slack = relative_slack(n)
    aac, abc = np.abs(ac), np.abs(bc)
    center = ac @ bc
    radius = aac @ br + ar @ (abc + br) + slack * (aac @ abc)
    radius = radius * (1 + slack) + (n + 2) * smallest_subnormal()
    return center, radius


def _scaled(c: FloatArray, r: FloatArray) -> tuple[FloatArray, FloatArray, int]:
    """``(c, r)`` divided by a power of two ``2^e`` near their largest entry (exact but
    for entries that become subnormal, whose loss the added subnormal covers), and ``e``."""
    top = float(np.max(np.abs(c) + r))
    if top == 0 or not math.isfinite(top):
        return c, r, 0
    e = math.frexp(top)[1]
    return np.ldexp(c, -e), np.ldexp(r, -e) + 2 * smallest_subnormal(), e


def _gram_power_bound(w: FloatArray, squarings: int) -> float:
    """The ``||G^k||_inf^(1/(2k))`` bound of ``||w||_2`` (module docstring)."""
    g = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w
    inner = max(w.shape)  # the inner dimension of the Gram product
    aw = np.abs(w) + smallest_subnormal()  # entries that lost bits to a scaling (spectral_norm_upper)
    ag = aw @ aw.T if w.shape[0] <= w.shape[1] else aw.T @ aw
    slack = relative_slack(inner)
    c, r = g, (slack * ag) * (1 + slack) + (inner + 2) * smallest_subnormal()
    c, r, log2_scale = _scaled(c, r)
    for _ in range(squarings):
        c, r = _interval_product(c, r, c, r)
        c, r, e = _scaled(c, r)
        log2_scale = 2 * log2_scale + e
    row_sums = (np.abs(c) + r).sum(axis=1)
    norm_inf = round_up(float(row_sums.max()), c.shape[1] + 1)
    if norm_inf == 0:
        return 0.0
    k = 2 ** squarings
    exponent = (math.log2(norm_inf) + log2_scale) / (2 * k)
    return 2.0 ** exponent * (1 + _POW_COVER)


def spectral_norm_upper(w: FloatArray, squarings: int = SQUARINGS) -> float:
    """:func:`_spectral_norm_upper`, memoised on the matrix's bytes (an encoder and the
    classifier that contains it share their first layers)."""
    w = np.ascontiguousarray(w, dtype=np.float64)
    key = (w.shape, hashlib.sha256(w.tobytes()).hexdigest(), squarings)
    if key not in _MEMO:
        if len(_MEMO) >= 256:
            _MEMO.clear()
        _MEMO[key] = _spectral_norm_upper(w, squarings)
    return _MEMO[key]


_MEMO: dict[tuple, float] = {}


def _spectral_norm_upper(w: FloatArray, squarings: int = SQUARINGS) -> float:
    """A proven upper bound of the spectral norm ``||w||_2`` (module docstring): the
    smallest of the Gram-power, Frobenius and ``sqrt(||w||_1 ||w||_inf)`` bounds, computed
    on ``w`` scaled by a power of two (exact, but for entries that become subnormal: a
    spacing each, covered by the bounds' own subnormal terms); ``inf`` if not finite."""
    w = np.asarray(w, dtype=np.float64)
    if w.size == 0 or not np.any(w):
        return 0.0
    if not np.isfinite(w).all():
        return math.inf
    e = math.frexp(float(np.abs(w).max()))[1]
    ws = np.ldexp(w, -e)
    aw = np.abs(ws) + smallest_subnormal()  # the scaling's loss on subnormal entries
    norm1 = round_up(float(aw.sum(axis=0).max()), w.shape[0])
    norm_inf = round_up(float(aw.sum(axis=1).max()), w.shape[1])
    mixed = round_up(math.sqrt(round_up(norm1 * norm_inf, 1)), 1)
    frobenius = round_up(math.sqrt(round_up(float(np.sum(aw * aw)), w.size)), 2)
    bounds = [b for b in (_gram_power_bound(ws, squarings), frobenius, mixed) if math.isfinite(b)]
    if not bounds:
        return math.inf
    try:
        return round_up(math.ldexp(min(bounds), e), 1)
    except OverflowError:  # beyond float64's range: no finite bound
        return math.inf


def chain_lipschitz(net: Network, squarings: int = SQUARINGS) -> float:
    """A proven upper bound of the L2 Lipschitz constant of the whole chain (every
    output): the product of its affine maps' spectral-norm bounds, rounded up."""
    out = 1.0
    for a in net.affines:
        out = round_up(out * spectral_norm_upper(a.weight, squarings), 1)
    return out


def margin_lipschitz(net: Network, label: int, squarings: int = SQUARINGS) -> FloatArray:
    """Per class ``j != label`` (increasing order): a proven upper bound of the L2
    Lipschitz constant of the margin ``logit_label - logit_j`` of the chain,
    ``||(e_label - e_j)^T W_L||_2 prod_(l < L) ||W_l||_2`` rounded up."""
    label = net.check_label(label)
    hidden = 1.0
    for a in net.affines[:-1]:
        hidden = round_up(hidden * spectral_norm_upper(a.weight, squarings), 1)
    last = net.affines[-1].weight
    others = [j for j in range(net.n_classes) if j != label]
    rows = last[label] - last[others]  # each entry off by one rounding: the slack covers it
    # the squares' underflow (up to a smallest subnormal each) added before the root
    squares = np.sum(rows * rows, axis=1) + rows.shape[1] * smallest_subnormal()
    norms = np.sqrt(squares) * (1 + relative_slack(last.shape[1] + 2)) + smallest_subnormal()
    return norms * hidden * (1 + 4 * UNIT_ROUNDOFF_F64) + smallest_subnormal()
