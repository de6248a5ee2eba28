"""Where a backward pass may end above the input: a layer enclosed between two linear
functions of the input (:class:`Enclosure`, forward-mode bounds of :mod:`oracles.forward`),
and the pass's last step onto it (:func:`through_enclosure`), for
:func:`oracles.bounds.backward`'s ``to``."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from parallelepipedonn.tolerances import ABS_SLACK, relative_slack

from .network_tensors import NetworkTensors
from .rows import rows_dot

Tensor = torch.Tensor


@dataclass(frozen=True)
class Enclosure:
    """A layer's pre-activations ``z`` between two linear functions of the input on each box,
    in exact arithmetic: ``lower_coef x + lower_const - lower_error <= z(x) <= upper_coef x +
    upper_const + upper_error`` (coefficients ``(n, n_input, B)``, the others ``(n, B)``),
    and ``terms`` (``(B, n)``) at least ``|coef| s + |const| + error`` of either side, ``s``
    the bound of ``|x|`` (:func:`~oracles.bounds.input_scale`): forward-mode bounds
    (:mod:`oracles.forward`), where a backward pass may end
    (:func:`~oracles.bounds.backward`'s ``to``)."""

    lower_coef: Tensor
    lower_const: Tensor
    lower_error: Tensor
    upper_coef: Tensor
    upper_const: Tensor
    upper_error: Tensor
    terms: Tensor


def through_enclosure(net: NetworkTensors, enc: Enclosure, lam: Tensor, const: Tensor, magnitude: Tensor,
                      underflow: Tensor, scale: Tensor, rows: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
    """The end of :func:`~oracles.bounds.backward` at an enclosed layer: ``lam @ z >= lam+ @
    (Al x + cl - el) + lam- @ (Au x + cu + eu)`` (``lam`` ``(B', m, n)``, ``lam+`` and
    ``lam-`` its positive and negative parts), a linear function of the input. The pass's
    own rounding as in :func:`~oracles.bounds.backward` (``magnitude``, ``underflow``);
    these sums (``2 n`` products per input coordinate, ``4 n`` in the constant) and the
    concretisation after them (``|coef| <= |lam| |A|`` up to their rounding) are charged
    apart: ``relative_slack(4 n + 2 n_input + 8)`` times ``|lam|``
    times the enclosure's terms, and each product's underflow (``tiny``) times the
    input's scale (``scale``: per row, ``(B', 1)``) and the constants. Returns the input's
    coefficients ``(B', m, n_input)``, the constant and the error ``(B', m)``."""
    n, n_in = enc.lower_coef.shape[:2]
    pos, neg = lam.clamp(min=0), lam.clamp(max=0)
    coef = torch.stack([rows_dot(pos, enc.lower_coef[:, i].T, rows) + rows_dot(neg, enc.upper_coef[:, i].T, rows)
                        for i in range(n_in)], dim=-1)
    const = (const + rows_dot(pos, enc.lower_const.T, rows) - rows_dot(pos, enc.lower_error.T, rows)
             + rows_dot(neg, enc.upper_const.T, rows) + rows_dot(neg, enc.upper_error.T, rows))
    final = rows_dot(lam.abs(), enc.terms, rows)
    rel = relative_slack(4 * n + 2 * n_in + 8, lam.dtype)
    error = net.rel * magnitude + net.tiny * underflow + rel * final + net.tiny * n * (scale + 4) + ABS_SLACK
    return coef, const, error


__all__ = ["Enclosure", "through_enclosure"]
