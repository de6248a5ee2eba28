"""Closed-form certified radii, each a proven lower bound (rounding errors covered).

**Latent** (the mixture head ``s(z) = W z + b`` alone, around the exact latent ``z`` of the
input, known up to a proven error bound): with ``g_j(z) = (w_c - w_j)^T z + (b_c - b_j)``
and ``a_j = w_c - w_j``, the exact radius of the polyhedral decision region around ``z``
is ``min_j g_j(z) / ||a_j||_*`` — ``||.||_2`` for L2, ``||.||_1`` for L-infinity (the dual
norms), ``sqrt(a_j^T Sigma a_j)`` for the Mahalanobis distance of ``Sigma``
(``= ||Sigma^(-1/2) (mu_c - mu_j)||_2`` when ``a_j = Sigma^-1 (mu_c - mu_j)``).
:func:`latent_radii` returns it with the margins lowered and the norms raised by their
rounding errors, and the quotient rounded down.

**Input, any ReLU chain** (:func:`global_l2_radius`): the margin at the input, lowered by
its rounding error, divided by a proven upper bound of the margin's L2 Lipschitz constant
(:func:`~parallelepipedonn.gmm.lipschitz.margin_lipschitz`): every point of the L2 ball
(in all of R^n) keeps the label.

The exact radii of a linear classifier within the domain are in
:mod:`parallelepipedonn.gmm.linear`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from oracles.gmm import margin_rows

from ..network import Network
from ..tolerances import ABS_SLACK, UNIT_ROUNDOFF_F64, relative_slack, smallest_subnormal
from .lipschitz import div_down

FloatArray = NDArray[np.float64]

_U = UNIT_ROUNDOFF_F64
_TINY = smallest_subnormal()


# -- latent ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class LatentRadii:
    """Proven radii of the head's decision region around the exact latent point, in the
    L2, Mahalanobis and L-infinity distances, and the class of the nearest L2 face."""

    l2: float
    mahalanobis: float
    linf: float
    closest_class: int | None


@dataclass(frozen=True, eq=False)
class HeadRows:
    """The head's margins for one label, and what does not depend on the input: the rows
    ``a_j`` and offsets (float64), the classes ``j``, the magnitudes ``|w_c| + |w_j|`` and
    ``|b_c| + |b_j|`` of their terms, and proven upper bounds of ``||a_j||_2``,
    ``||a_j||_1`` and ``sqrt(a_j^T Sigma a_j)`` (``nan`` without ``Sigma``; each entry of
    ``a_j`` is one rounding off the exact difference of two weights)."""

    a: FloatArray
    c: FloatArray
    others: NDArray[np.int64]
    pair: FloatArray
    bias_abs: FloatArray
    norms: FloatArray  # (3, classes - 1): L2, L1, Mahalanobis


def head_rows(weight: FloatArray, bias: FloatArray, label: int, covariance: FloatArray | None = None) -> HeadRows:
    """:class:`HeadRows` of the head ``W z + b`` for ``label``."""
    a, c, others = margin_rows(weight, bias, label)
    d = a.shape[1]
    grow = 1 + relative_slack(d + 2)
    # each square below the normal range is off by up to a smallest subnormal (all of it where
    # it underflows to 0): d of them added before the root, or rows of entries below 1e-154
    # would get a norm bound of 0
    l2 = np.sqrt(np.sum(a * a, axis=1) + d * _TINY) * grow + _TINY
    l1 = np.sum(np.abs(a), axis=1) * grow + _TINY
    if covariance is None:
        mah = np.full(len(a), np.nan)
    else:
        quad = np.einsum("jd,de,je->j", a, covariance, a)
        mag = np.einsum("jd,de,je->j", np.abs(a), np.abs(covariance), np.abs(a))
        # each of the d^2 terms a_d S_de a_e is two products: a_d S_de off by up to half the
        # smallest subnormal where it underflows, an error a_e then scales, and the second
        # product's own underflow: (|a_e| + 1) tiny / 2 per term (absolute: no relative slack
        # covers it, and mag underflows too), d (||a||_1 + d) tiny / 2 in all; doubled
        underflow = (d * (np.abs(a).sum(axis=1) + d) + 4) * _TINY
        mah = np.sqrt(np.maximum(quad, 0.0) + relative_slack(d * d + 4) * mag + underflow) * (1 + 4 * _U) + _TINY
    return HeadRows(a, c, others, np.abs(weight[label]) + np.abs(weight[others]),
                    np.abs(bias[label]) + np.abs(bias[others]), np.stack([l2, l1, mah]))


def head_margin_lower(rows: HeadRows, z: FloatArray, z_err: FloatArray) -> FloatArray:
    """Proven lower bounds of ``g_j`` at the exact latent (within ``z_err`` of ``z``)."""
    d = z.size
    with np.errstate(over="ignore", invalid="ignore"):
        value = rows.a @ z + rows.c
        magnitude = rows.pair @ (np.abs(z) + z_err) + rows.bias_abs
        lower = value - relative_slack(d + 2) * magnitude - (rows.pair @ z_err) * (1 + relative_slack(d)) \
            - (d + 3) * _TINY - ABS_SLACK
    return np.where(np.isfinite(lower), lower, -np.inf)


def latent_radii(weight: FloatArray, bias: FloatArray, z: FloatArray, z_err: FloatArray, label: int,
                 covariance: FloatArray | None = None, rows: HeadRows | None = None) -> LatentRadii:
    """The proven latent radii (module docstring); 0 where a margin is not proven > 0,
    ``inf`` when no other class has a face (``a_j = 0`` with ``g_j > 0``). ``rows``: the
    head's :class:`HeadRows` for ``label``, if already computed (with the same
    covariance)."""
    rows = rows if rows is not None else head_rows(weight, bias, label, covariance)
    if not rows.others.size:
        return LatentRadii(math.inf, math.inf, math.inf, None)
    radii = div_down(np.maximum(head_margin_lower(rows, z, z_err), 0.0), rows.norms)
    best = radii.min(axis=1)
    mahalanobis = float(best[2]) if not np.isnan(rows.norms[2]).any() else math.nan
    return LatentRadii(float(best[0]), mahalanobis, float(best[1]), int(rows.others[int(np.argmin(radii[0]))]))


# -- input, any chain -------------------------------------------------------------------------
def margin_lower(net: Network, x: FloatArray, label: int) -> FloatArray:
    """Proven lower bounds of ``logit_label - logit_j`` (``j != label``, increasing) at
    ``x`` in exact arithmetic: the float64 margins minus their rounding error bounds (as
    :meth:`Network.margin_errors` bounds them, per class)."""
    h, err = net.forward_errors(x)
    others = [j for j in range(net.n_classes) if j != label]
    with np.errstate(over="ignore", invalid="ignore"):
        m = h[0, label] - h[0, others]
        lower = m - 2 * (err[0, label] + err[0, others] + _U * np.abs(m)) - 1e-300
    return np.where(np.isfinite(lower), lower, -np.inf)


def global_l2_radius(net: Network, x: FloatArray, label: int, lipschitz: FloatArray) -> float:
    """A proven L2 radius around ``x`` (in all of R^n): ``min_j`` margin lower bound over
    ``lipschitz[j]``, the margins' proven Lipschitz bounds (``margin_lipschitz``)."""
    lower = margin_lower(net, x, label)
    if not lower.size:
        return math.inf
    return float(div_down(np.maximum(lower, 0.0), lipschitz).min())
