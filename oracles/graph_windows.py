"""Windowed ("patches") CROWN bounds of convolution outputs, for :mod:`oracles.graph_bounds`.

The intermediate bound of one output neuron ``(c, i, j)`` of a convolution starts as the
unit vector of that neuron; pulled back through a chain of convolutions and ReLUs its
coefficients are nonzero only on the neuron's receptive field: a window of ``h x w``
positions (all channels) at offset ``(i S - P, j S' - P')`` of each node's map, where
through a convolution of kernel ``K``, stride ``s``, padding ``p`` and dilation ``d`` the
window grows to ``(h - 1) s + d (K - 1) + 1``, the stride to ``S s`` and the offset base to
``P s + p``. This module runs CROWN's backward pass on those windows only: the ReLU
relaxations, the node bounds, the rounding terms and the input box are cut out of their
(zero-padded) maps with ``unfold``, convolutions are pulled back on the windows, batched
over rows (:func:`_pull_back`).

Coefficients at positions outside a node's map (a window overhanging the border, the
convolution's zero padding) are set to exactly zero after every step, so the windowed pass
computes the same sums as the full pass of :func:`oracles.graph_bounds.backward` minus
terms that are exactly zero: the same bound up to the order of summation, with the same
rounding accounting (the magnitude ``|Lambda| . (|W| s_in + |b|)`` of each linear node,
``|Lambda| . s`` for uncovered ReLUs and the input, the intercepts' shifts, the same
underflow term, the same float64 reductions and per-product slacks of
:mod:`oracles.graph_rounding`), each product now a sum of at most as many nonzero terms as
in the full pass, so the same slacks cover it.

Supported chains: a :class:`~parallelepipedonn.graph_nodes.Conv2d` target whose ancestors
form one chain of ``Conv2d`` and ``ReLU`` nodes down to the input (any groups, strides,
padding and dilation); other graphs, and windows larger than the maps, take the full path.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from parallelepipedonn import graph_nodes as gn
from parallelepipedonn.graph import Graph
from parallelepipedonn.tolerances import ABS_SLACK

from .bounds import proven

Tensor = torch.Tensor


@dataclass(frozen=True)
class Window:
    """The windows of the rows at node ``node`` (a map ``(C, H, W)``): the row of target
    position ``(i, j)`` is nonzero only on rows ``i * stride[0] - offset[0] + [0, size[0])``
    and columns ``j * stride[1] - offset[1] + [0, size[1])`` of the map."""

    node: int
    size: tuple[int, int]
    stride: tuple[int, int]
    offset: tuple[int, int]


#: The most numbers of one map's windows (all target positions, one box) a plan may cut.
WINDOW_MAP_ELEMENTS = 2**20


def window_plan(graph: Graph, k: int) -> tuple[Window, ...] | None:
    """The windows of the rows of convolution node ``k`` at each of its ancestors (from its
    input down to the graph's input), or None where the windowed pass does not apply: ``k``
    not a Conv2d, an ancestor that is not a Conv2d / ReLU on a ``(C, H, W)`` map, windows
    that cover a whole map (nothing to gain), or windows of all target positions of more
    than :data:`WINDOW_MAP_ELEMENTS` numbers per box (the cut maps would not fit)."""
    node = graph.nodes[k]
    if not isinstance(node, gn.Conv2d):
        return None
    size = tuple(d * (kk - 1) + 1 for d, kk in zip(node.dilation, node.kernel))
    stride, offset = tuple(node.stride), (node.pads[0], node.pads[1])
    plan: list[Window] = []
    v = node.inputs[0]
    while True:
        nv = graph.nodes[v]
        if len(nv.shape) != 3 or size[0] * size[1] >= nv.shape[1] * nv.shape[2] \
                or node.shape[1] * node.shape[2] * nv.shape[0] * size[0] * size[1] > WINDOW_MAP_ELEMENTS:
            return None
        plan.append(Window(v, size, stride, offset))  # type: ignore[arg-type]
        if isinstance(nv, gn.Input):
            return tuple(plan)
        if isinstance(nv, gn.Conv2d):
            size = tuple((size[a] - 1) * nv.stride[a] + nv.dilation[a] * (nv.kernel[a] - 1) + 1 for a in range(2))
            offset = tuple(offset[a] * nv.stride[a] + nv.pads[a] for a in range(2))
            stride = tuple(stride[a] * nv.stride[a] for a in range(2))
        elif not isinstance(nv, gn.ReLU):
            return None
        v = nv.inputs[0]


def _kernel(node: gn.Conv2d, dtype: torch.dtype, device: torch.device) -> Tensor:
    """The conv's weight as ``(C_out, C_in, h, w)``: each output channel's kernel on all
    input channels (zero outside its group), dilation spelled out as zeros."""
    key = ("window_kernel", dtype, str(device))
    if key not in node._cache:
        w = node.weight
        c_out, cig, kh, kw = w.shape
        dh, dw = node.dilation
        full = np.zeros((c_out, node.in_shape[0], dh * (kh - 1) + 1, dw * (kw - 1) + 1))
        per_group = c_out // node.groups
        for co in range(c_out):
            g = co // per_group
            full[co, g * cig:(g + 1) * cig, ::dh, ::dw] = w[co]
        node._cache[key] = torch.tensor(full, dtype=dtype, device=device)
    return node._cache[key]


#: The largest window matrix (entries) :func:`_pull_back` builds.
WINDOW_MATRIX_ELEMENTS = 2**21


def _pull_back(node: gn.Conv2d, lam: Tensor, size: tuple[int, int]) -> Tensor:
    """``W^T`` on windows: ``(..., C_out, h, w)`` -> ``(..., C_in, *size)`` (no padding,
    no crop: the window of the input that the output window reads). One matrix product
    with the window's exact matrix of ``W^T`` (each entry a weight or zero) where it is
    small, else the convolution's input gradient."""
    *lead, c_out, h, w = lam.shape
    c_in = node.in_shape[0]
    weight = node.tensor("w", node.weight, lam.dtype, lam.device)
    if c_out * h * w * c_in * size[0] * size[1] > WINDOW_MATRIX_ELEMENTS:
        flat = lam.reshape(-1, c_out, h, w)
        back = torch.nn.grad.conv2d_input((flat.shape[0], c_in, *size), weight, flat, stride=node.stride,
                                          dilation=node.dilation, groups=node.groups)
        return back.reshape(*lead, c_in, *size)
    key = ("window_matrix", h, w, lam.dtype, str(lam.device))
    if key not in node._cache:
        eye = torch.eye(c_out * h * w, dtype=lam.dtype, device=lam.device).reshape(-1, c_out, h, w)
        node._cache[key] = torch.nn.grad.conv2d_input((eye.shape[0], c_in, *size), weight, eye, stride=node.stride,
                                                      dilation=node.dilation, groups=node.groups).flatten(1)
    return (lam.reshape(-1, c_out * h * w) @ node._cache[key]).reshape(*lead, c_in, *size)


class _Cutter:
    """Cuts each row's window out of ``(B, C, H, W)`` maps: rows at target positions
    ``(i, j)`` (``(B, m)`` each), box ``b`` of row ``r`` reading map ``b``; the result is
    shared (broadcast) by the lower- and the upper-bound row of each window."""

    def __init__(self, win: Window, shape: tuple[int, ...], target: tuple[int, ...], i: Tensor, j: Tensor,
                 maps: dict[str, Tensor]) -> None:
        _, h_map, w_map = shape
        (h, w), (sh, sw), (ph, pw) = win.size, win.stride, win.offset
        self.win, self.shape, self.maps = win, shape, maps
        # zero padding so that every window lies in the padded map: before by the offset,
        # after by what the last window overhangs
        self.pads = [pw, max(0, (target[2] - 1) * sw - pw + w - w_map), ph,
                     max(0, (target[1] - 1) * sh - ph + h - h_map)]
        cols = (w_map + self.pads[0] + self.pads[1] - w) // sw + 1
        rows = (h_map + self.pads[2] + self.pads[3] - h) // sh + 1
        bsz = i.shape[0]
        # each row's window: its row of unfold's output, boxes one after the other
        self.index = (i * cols + j + rows * cols * torch.arange(bsz, device=i.device).unsqueeze(1)).reshape(-1)
        inside = torch.ones(1, 1, h_map, w_map, dtype=torch.float64, device=i.device)
        self._inside = self.cut(inside.expand(bsz, 1, h_map, w_map), "inside")  # (B, m, 1, 1, h, w): 1 or 0

    def cut(self, t: Tensor, key: str) -> Tensor:
        """``(B, C, H, W)`` (or flat ``(B, C*H*W)``) -> each row's window ``(B, m, 1, C, h, w)``
        (zero outside the map). Every window of the map is cut once (``unfold``) and kept in
        ``maps`` under ``key`` for the next chunks of rows."""
        bsz = t.shape[0]
        channels = t.numel() // (bsz * self.shape[1] * self.shape[2])
        if key not in self.maps:
            t = t.reshape(bsz, channels, *self.shape[1:])
            cols = F.unfold(F.pad(t, self.pads), self.win.size, stride=self.win.stride)  # (B, C h w, L)
            self.maps[key] = cols.transpose(1, 2).reshape(-1, cols.shape[1]).contiguous()  # (B L, C h w)
        out = self.maps[key].index_select(0, self.index)  # (B m, C h w)
        return out.reshape(bsz, -1, 1, channels, *self.win.size)

    def inside(self, lam: Tensor) -> Tensor:
        """``lam`` with the coefficients outside the map set to exactly zero (times 1 or 0:
        exact for finite numbers; a non-finite one makes the box's bounds ``-inf`` anyway)."""
        return lam * self._inside.to(lam.dtype)


def _dot(a: Tensor, b: Tensor) -> Tensor:
    """Sum over each window of ``a * b``: ``a`` ``(B, m, 2, C, h, w)``, ``b`` ``(B, m, 1, C, h,
    w)`` or a map ``(C, 1, 1)`` -> ``(B, m, 2)`` (a batched matrix product: no temporary of
    the size of ``a``)."""
    if b.dim() < a.dim():  # a per-channel map: sum the windows first (the same terms, regrouped)
        return (a.flatten(4).sum(-1) * b.reshape(-1)).sum(-1)
    return (a.flatten(3) @ b.flatten(3).transpose(-1, -2)).squeeze(-1)


def windowed_bounds(gt, nb, k: int, plan: tuple[Window, ...], sel: Tensor, ok: Tensor,  # noqa: ANN001
                    lower: Tensor, upper: Tensor, maps: dict[int, dict[str, Tensor]]) -> Tensor:
    """Proven lower bounds of ``z_k[sel]`` and of ``-z_k[sel]`` over each box (``(B, 2m)``,
    float64, lower bounds first; ``-inf`` where nothing is proven): the values that
    :func:`~oracles.graph_bounds.concretize_wide` gives for the full pass of
    :func:`oracles.graph_bounds._tighten`, computed on windows (module docstring). ``sel``
    are flat output indices of conv node ``k`` (``(B, m)``), ``ok`` marks the real rows.
    Coefficients are ``(B, m, 2, C, h, w)``: the rows of ``z`` and of ``-z``. ``maps`` keeps
    the windows of the maps from one chunk of rows to the next (empty at the first)."""
    node = gt.graph.nodes[k]
    dtype, dev = gt.dtype, lower.device
    sl, wide = gt.slacks, torch.float64
    bsz, m = sel.shape
    _, ho, wo = node.shape
    co, pos = sel // (ho * wo), sel % (ho * wo)
    cutters = [_Cutter(win, gt.graph.nodes[win.node].shape, node.shape, pos // wo, pos % wo,
                       maps.setdefault(step, {})) for step, win in enumerate(plan)]
    okf = ok.to(dtype)
    sign = torch.stack([okf, -okf], 2)  # (B, m, 2)
    lam = cutters[0].inside(_kernel(node, dtype, dev)[co].unsqueeze(2) * sign.view(bsz, m, 2, 1, 1, 1))
    const = (node.bias(dtype, dev).reshape(-1)[co].unsqueeze(2) * sign).to(wide)
    err = sl.back[k] * (nb.terms[k].reshape(bsz, -1).gather(1, sel) * okf).to(wide).unsqueeze(2).expand(bsz, m, 2)
    under = nb.scale[node.inputs[0]].flatten(1).sum(1) + 1
    covered = True  # the rounding of the products with lam is in err already
    for step, (cut, win) in enumerate(zip(cutters, plan)):
        v = win.node
        nv = gt.graph.nodes[v]
        if isinstance(nv, gn.Input):
            if not covered:
                err = err + sl.one * _dot(lam.abs(), cut.cut(nb.scale[v], "scale")).to(wide)
            lo, hi = lower.to(wide), upper.to(wide)
            lam = lam.to(wide)
            value = _dot(lam, cut.cut((hi + lo) / 2, "center")) - _dot(lam.abs(), cut.cut((hi - lo) / 2, "radius"))
            error = err + (gt.tiny * under.to(wide) + ABS_SLACK).view(bsz, 1, 1)
            return proven((value + const - error).transpose(1, 2).reshape(bsz, 2 * m), nb.invalid)
        if isinstance(nv, gn.ReLU):
            r = nb.relax[v]
            if not covered:
                err = err + sl.one * _dot(lam.abs(), cut.cut(r.scale, "scale")).to(wide)
            neg = lam.clamp(max=0)
            shift = _dot(neg.to(wide), cut.cut(r.upper_intercept, "intercept").to(wide))  # <= 0, in float64
            const, err = const + shift, err - sl.wide * shift
            # times the upper slope where negative, else the lower one (one product is an exact zero)
            lam = neg * cut.cut(r.upper_slope, "upper") + lam.clamp(min=0) * cut.cut(r.lower_slope, "lower")
            covered = False
            continue
        assert isinstance(nv, gn.Conv2d)
        const = const + _dot(lam.to(wide), nv.bias(wide, dev))
        err = err + sl.back[v] * _dot(lam.abs(), cut.cut(nb.terms[v], "terms")).to(wide)
        under = under + nb.scale[nv.inputs[0]].flatten(1).sum(1) + 1
        lam = cutters[step + 1].inside(_pull_back(nv, lam, plan[step + 1].size))
        covered = True
    raise AssertionError("the window plan does not reach the input")  # pragma: no cover
