"""Products of batched coefficient rows with per-box vectors, for the backward passes
(:mod:`oracles.bounds`, :mod:`oracles.graph_backward`): rows ``(R, m, n)`` each of one
box, vectors per box ``(B, n)``, without copying a box's vector per row. The same
products, summed in another order than a plain loop would: the rounding bound of any
order of a sum holds, so they carry the same slack."""

from __future__ import annotations

import torch

Tensor = torch.Tensor


def batched_mv(a: Tensor, v: Tensor) -> Tensor:
    """``a @ v`` for ``a`` of shape ``(B, m, n)`` and ``v`` of shape ``(B, n)``: ``(B, m)`` (``v``
    one box's, broadcast: one matrix-vector product)."""
    if v.shape[0] > 1 and v.stride(0) == 0:
        return a @ v[0]
    if a.numel() <= SMALL_MV:  # a product and a sum: faster than a batch of tiny matrix products
        return (a * v.unsqueeze(1)).sum(-1)
    return (a @ v.unsqueeze(-1)).squeeze(-1)


#: Up to this many coefficients, :func:`batched_mv` multiplies and sums (measured on 2 CPU cores,
#: one thread: 2-3x faster than ``bmm`` at (512, 1, 784); slower once out of cache).
SMALL_MV = 2 ** 20


def rows_dot(a: Tensor, v: Tensor, rows: Tensor | None) -> Tensor:
    """``a @ v`` row by row: ``out[r, s] = sum_j a[r, s, j] * v[rows[r], j]`` for ``a`` of shape
    ``(R, m, n)``, ``v`` per box ``(B, n)`` and ``rows`` the box of each row (``None``: one
    row per box, as :func:`batched_mv`). Without copying ``v`` per row: the rows of at most
    :data:`ROWS_DOT_BOXES` consecutive boxes multiply all their boxes' vectors in one matrix
    product and keep their own box's column (rows sorted by box, as :func:`backward`'s
    callers build them; unsorted rows are gathered). The same products, summed in another
    order: the rounding bound of any order of a sum holds."""
    if rows is None:
        return batched_mv(a, v)
    if v.shape[0] == 1 or v.stride(0) == 0:
        return a @ v[0]
    if v.shape[0] <= ROWS_DOT_BOXES:  # every box's vector: one product, in any order of the rows
        return torch.gather(a @ v.T, 2, rows.view(-1, 1, 1).expand(-1, a.shape[1], 1)).squeeze(2)
    count = rows.numel()
    if count == 0 or not bool((rows[1:] >= rows[:-1]).all()):
        return batched_mv(a, v.index_select(0, rows))
    first, last = int(rows[0]), int(rows[-1])
    cuts = torch.arange(first + ROWS_DOT_BOXES, last + 1, ROWS_DOT_BOXES, device=rows.device) \
        if last - first >= ROWS_DOT_BOXES else rows.new_zeros(0)
    edges = [0, *torch.searchsorted(rows, cuts).tolist(), count]
    out = []  # (a concatenation, not writes into one tensor: autograd may record it)
    for g, (start, stop) in enumerate(zip(edges[:-1], edges[1:])):
        if stop > start:
            base = first + g * ROWS_DOT_BOXES
            group = v.narrow(0, base, min(ROWS_DOT_BOXES, last + 1 - base))
            full = a.narrow(0, start, stop - start) @ group.T  # (rows, m, boxes of the group)
            pick = (rows.narrow(0, start, stop - start) - base).view(-1, 1, 1).expand(-1, a.shape[1], 1)
            out.append(torch.gather(full, 2, pick).squeeze(2))
    return out[0] if len(out) == 1 else torch.cat(out)


#: Boxes per matrix product of :func:`rows_dot`: each row's dot product costs this many
#: (a matrix product's multiply-adds are far cheaper than copying the box's vector per row).
ROWS_DOT_BOXES = 16


def per_box_rows(t: Tensor, rows: Tensor | None, single: bool) -> Tensor:
    """``t[rows]`` (per box -> per entry); a broadcast view when there is one box."""
    if rows is None:
        return t
    return t.expand(rows.shape[0], *t.shape[1:]) if single else t.index_select(0, rows)
