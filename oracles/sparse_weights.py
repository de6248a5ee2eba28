"""Compressed (CSR) copies of mostly-zero weight matrices and the products of the chain
passes that use them (:mod:`oracles.bounds`, :mod:`oracles.forward`): a product that skips
the zero weights sums fewer terms of the same products, in another order, within the same
rounding bound."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from .network_tensors import NetworkTensors

Tensor = torch.Tensor


#: A weight matrix with at most this share of nonzero entries (and at least
#: :data:`SPARSE_MIN_ENTRIES` entries) is multiplied by its compressed rows. Measured on one
#: thread of this machine (float64, tllverifybench's 3136x6272 layer, 0.1% nonzero): 64 rows
#: 0.9 ms against 48 ms dense, 1000 rows 48 against 660 ms; the sparse kernel runs about 50x
#: slower per multiply-add than the dense one, so the break-even is near 2% nonzero.
SPARSE_DENSITY = 0.01
SPARSE_MIN_ENTRIES = 2**16


@dataclass(frozen=True)
class SparseWeights:
    """Compressed-row (CSR) copies of a weight matrix ``W`` ``(n_out, n_in)``, of ``W^T``
    and of the magnitudes ``|W|`` used in its rounding bounds. A product that skips the
    zero entries sums fewer terms of the same products (each exactly 0 in the dense sum),
    in another order: within the same rounding bound, ``gamma_n`` of the terms' magnitude
    for sums of at most ``n`` terms in any order."""

    w: Tensor
    w_t: Tensor
    abs_w: Tensor

    @classmethod
    def of(cls, weight: Tensor, abs_weight: Tensor) -> SparseWeights | None:
        """The copies of ``weight``, or None where it is small or not mostly zeros, or where
        ``abs_weight`` is not its magnitude on the same entries (float32 weights below
        the normal range: the magnitudes are inflated everywhere)."""
        if weight.dim() != 2 or weight.numel() < SPARSE_MIN_ENTRIES:
            return None
        nonzero = int(torch.count_nonzero(abs_weight))
        if nonzero > SPARSE_DENSITY * weight.numel() or nonzero != int(torch.count_nonzero(weight)):
            return None
        return cls(*_quietly(lambda: _copies(weight, abs_weight)))

    def to(self, dtype: torch.dtype) -> SparseWeights:
        return SparseWeights(*_quietly(lambda: (self.w.to(dtype), self.w_t.to(dtype), self.abs_w.to(dtype))))


def _quietly(make: Callable[[], tuple[Tensor, ...]]) -> tuple[Tensor, ...]:
    """``make()`` without torch's warning that its sparse CSR support is in beta."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta", category=UserWarning)
        return make()


def _copies(weight: Tensor, abs_weight: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """CSR copies of ``weight``, of its transpose and of ``abs_weight`` on the same entries
    (:meth:`SparseWeights.of` checked that its nonzero entries are those): the transpose
    and the magnitudes from the first copy's structure, the same numbers (on a 4096x8192
    layer 0.3% nonzero, 0.34 s against 1.27 s for three conversions of dense matrices)."""
    w = weight.to_sparse_csr()
    crow, col = w.crow_indices(), w.col_indices()
    rows = torch.repeat_interleave(torch.arange(weight.shape[0], device=weight.device), crow.diff())
    magnitudes = torch.sparse_csr_tensor(crow, col, abs_weight[rows, col], weight.shape, check_invariants=True)
    return w, w.t().to_sparse_csr(), magnitudes


def _csr_times(csr: Tensor, x: Tensor) -> Tensor:
    """``x @ csr^T`` for ``x`` of shape ``(..., n)``: ``(..., m)`` (``csr`` ``(m, n)``), contiguous
    (a transposed result makes later batched products copy their other operand per row)."""
    flat = x.reshape(-1, x.shape[-1])
    return (csr @ flat.T.contiguous()).T.contiguous().reshape(*x.shape[:-1], csr.shape[0])


def times_weight(net: NetworkTensors, i: int, lam: Tensor) -> Tensor:
    """``lam @ W_i`` (``lam`` of shape ``(..., n_out)``), over the nonzero weights only
    where the layer is sparse (:class:`SparseWeights`)."""
    sp = net.sparse[i] if net.sparse else None
    return lam @ net.weights[i] if sp is None else _csr_times(sp.w_t, lam)


def weight_times(net: NetworkTensors, i: int, x: Tensor, absolute: bool = False) -> Tensor:
    """``x @ W_i^T`` (``absolute``: ``x @ |W_i|^T``, with :class:`NetworkTensors`' inflated
    magnitudes), ``x`` of shape ``(..., n_in)``; over the nonzero weights only where the
    layer is sparse."""
    sp = net.sparse[i] if net.sparse else None
    if sp is None:
        return x @ (net.abs_weights[i] if absolute else net.weights[i]).T
    return _csr_times(sp.abs_w if absolute else sp.w, x)


__all__ = ["SPARSE_DENSITY", "SPARSE_MIN_ENTRIES", "SparseWeights", "times_weight", "weight_times"]
