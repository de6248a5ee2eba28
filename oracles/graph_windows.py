"""Windowed ("patches") CROWN bounds of convolution outputs, for :mod:`oracles.graph_bounds`.

The intermediate bound of one output neuron ``(c, i, j)`` of a convolution (or of a residual
sum) starts as the unit vector of that neuron; pulled back through convolutions and ReLUs its
coefficients are nonzero only on the neuron's receptive field: a window of ``h x w``
positions (all channels) at offset ``(i S - P, j S' - P')`` of each node's map, where
through a convolution of kernel ``K``, stride ``s``, padding ``p`` and dilation ``d`` the
window grows to ``(h - 1) s + d (K - 1) + 1``, the stride to ``S s`` and the offset base to
``P s + p``. This module runs CROWN's backward pass on those windows only: the ReLU
relaxations, the node bounds, the rounding terms and the input box are cut out of their
(zero-padded) maps (:class:`_Cutter`), convolutions are pulled back on the windows,
batched over rows (:func:`_pull_back`).

Coefficients at positions outside a node's map (a window overhanging the border, the
convolution's zero padding) are set to exactly zero after every step, so the windowed pass
computes the same sums as the full pass of :func:`oracles.graph_bounds.backward` minus
terms that are exactly zero: the same bound up to the order of summation, with the same
rounding accounting (the magnitude ``|Lambda| . (|W| s_in + |b|)`` of each linear node,
``|Lambda| . s`` for uncovered ReLUs and the input, the intercepts' shifts, the same
underflow term, the same float64 reductions and per-product slacks of
:mod:`oracles.graph_rounding`), each product now a sum of at most as many nonzero terms as
in the full pass, so the same slacks cover it.

Where branches rejoin (Add, Sub: residual connections), a node read by several branches
gets the smallest window containing every branch's (the same stride on every branch), each
branch's coefficients embedded in it by zero padding; the accounting is the full pass's
(the rounding of the branches' sum, ``(sum of |contributions|) . s``, included).

Where a node's window covers most of its map (:data:`FULL_MAP_SHARE`) and no other branch
is pending, the rows are embedded in the whole maps (zero elsewhere) and the pass ends as
the full pass from that node, with what it has accumulated.

Supported graphs: a :class:`~parallelepipedonn.graph_nodes.Conv2d`, ``Add`` or ``Sub``
target whose ancestors down to the input are ``Conv2d`` (any groups, strides, padding and
dilation), ``ReLU``, ``Add`` and ``Sub`` nodes on ``(C, H, W)`` maps; other graphs, branches
of different strides, and windows as large as the maps take the full path.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from parallelepipedonn import graph_nodes as gn
from parallelepipedonn.graph import Graph
from parallelepipedonn.tolerances import ABS_SLACK

from .bounds import proven
from .graph_backward import backward, concretize_wide
from .graph_rounding import Rejoined

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

    def within(self, other: Window) -> tuple[int, int, int, int]:
        """Where this window lies in ``other`` (the same stride, containing it): the zero
        padding ``(left, right, top, bottom)`` that embeds it there."""
        top, left = other.offset[0] - self.offset[0], other.offset[1] - self.offset[1]
        return left, other.size[1] - self.size[1] - left, top, other.size[0] - self.size[0] - top


#: The most numbers of one map's windows (all target positions, one box) a plan may cut.
WINDOW_MAP_ELEMENTS = 2**20


def _through(node: gn.Node, win: Window) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    """``(size, stride, offset)`` of the window at ``node``'s input that its output
    window ``win`` reads."""
    if isinstance(node, gn.Conv2d):
        size = tuple((win.size[a] - 1) * node.stride[a] + node.dilation[a] * (node.kernel[a] - 1) + 1 for a in range(2))
        offset = tuple(win.offset[a] * node.stride[a] + node.pads[a] for a in range(2))
        stride = tuple(win.stride[a] * node.stride[a] for a in range(2))
        return size, stride, offset  # type: ignore[return-value]
    return win.size, win.stride, win.offset


def _union(node: int, a: Window | None, size: tuple[int, int], stride: tuple[int, int],
           offset: tuple[int, int]) -> Window | None:
    """The smallest window at ``node`` containing ``a`` and ``(size, stride, offset)``;
    None if their strides differ."""
    if a is None:
        return Window(node, size, stride, offset)
    if a.stride != stride:
        return None
    off = tuple(max(a.offset[i], offset[i]) for i in range(2))
    end = tuple(max(a.size[i] - a.offset[i], size[i] - offset[i]) for i in range(2))
    return Window(node, (end[0] + off[0], end[1] + off[1]), stride, off)  # type: ignore[arg-type]


def _ancestors(graph: Graph, k: int) -> set[int]:
    seen: set[int] = set()
    todo = list(graph.nodes[k].inputs)
    while todo:
        u = todo.pop()
        if u not in seen:
            seen.add(u)
            todo += graph.nodes[u].inputs
    return seen


def window_plan(graph: Graph, k: int) -> tuple[Window, ...] | None:
    """The windows of the rows of node ``k`` (a 1x1 window at ``k`` itself, first) at
    each of its ancestors, in reverse topological order (the input last); where branches
    rejoin, the smallest window containing every branch's. None where the windowed pass
    does not apply: ``k`` not a Conv2d, Add or Sub, an ancestor that is not a Conv2d /
    ReLU / Add / Sub / the input, maps not ``(C, H, W)``, branches with different
    strides, windows that cover a whole map (nothing to gain), or windows of all target
    positions of more than :data:`WINDOW_MAP_ELEMENTS` numbers per box (the cut maps
    would not fit)."""
    node = graph.nodes[k]
    if not isinstance(node, (gn.Conv2d, gn.Add, gn.Sub)) or len(node.shape) != 3:
        return None
    positions = node.shape[1] * node.shape[2]
    wins: dict[int, Window | None] = {k: Window(k, (1, 1), (1, 1), (0, 0))}
    plan: list[Window] = []
    for v in sorted(_ancestors(graph, k) | {k}, reverse=True):
        win, nv = wins.get(v), graph.nodes[v]
        if win is None or len(nv.shape) != 3:
            return None
        if v != k and (win.size[0] * win.size[1] >= nv.shape[1] * nv.shape[2]
                       or positions * nv.shape[0] * win.size[0] * win.size[1] > WINDOW_MAP_ELEMENTS):
            return None
        plan.append(win)
        if isinstance(nv, gn.Input):
            continue
        if not isinstance(nv, (gn.Conv2d, gn.ReLU, gn.Add, gn.Sub)):
            return None
        size, stride, offset = _through(nv, win)
        for u in set(nv.inputs):
            if u in wins and wins[u] is None:
                return None
            wins[u] = _union(u, wins.get(u), size, stride, offset)
    return tuple(plan)


def _kernel(node: gn.Conv2d, dtype: torch.dtype, device: torch.device) -> Tensor:
    """The conv's weight as ``(C_out, C_in, h, w)``: each output channel's kernel on all
    input channels (zero outside its group), dilation spelled out as zeros."""
    def kernel() -> Tensor:
        w = node.weight
        c_out, cig, kh, kw = w.shape
        dh, dw = node.dilation
        full = np.zeros((c_out, node.in_shape[0], dh * (kh - 1) + 1, dw * (kw - 1) + 1))
        per_group = c_out // node.groups
        for co in range(c_out):
            g = co // per_group
            full[co, g * cig:(g + 1) * cig, ::dh, ::dw] = w[co]
        return torch.tensor(full, dtype=dtype, device=device)

    return node.cached(("window_kernel", dtype, str(device)), kernel)


#: The largest window matrix (entries) :func:`_pull_back` builds.
WINDOW_MATRIX_ELEMENTS = 2**21
#: A window matrix of more than :data:`SPARSE_WINDOW_ELEMENTS` entries is built only where
#: at least this share of them can be nonzero (a kernel's taps over the window's area): a
#: sparser one multiplies mostly zeros. Measured on one thread (ms per call, float64 /
#: float32), matrix against convolution: VNN-COMP 2021's CIFAR ResNet ``resnet_2b``, 660
#: rows of 8x11x11 onto 3x23x23 (3x3 kernel, stride 2; share 1/59, 1.5M entries): 54 / 38
#: against 6.7 / 13; 363 rows of 16x7x7 onto 8x15x15 (share 1/25, 1.4M): 30 / 13 against
#: 4.7 / 3.7; 456 rows of 8x7x7 onto 3x15x15 (share 1/25, 265k): 6.5 / 3.1 against 2.1 /
#: 3.6. Dense enough: the seeded CIFAR-size net's 1219 rows of 16x4x4 onto 3x6x6 (share
#: 1/4): 2.5 / 1.2 against 5.5 / 2.1; 562 rows of 32x2x2 onto 16x6x6 (4x4 kernel, stride 2;
#: share 1/2.25): 2.8 / 1.3 against 17 / 4.9. Small: the residual MNIST net's 562 rows of
#: 8x5x5 onto 1x11x11 (share 1/13, 24k entries): 0.91 / 0.51 against 0.87 / 2.8.
WINDOW_MATRIX_MIN_SHARE = 1 / 8
SPARSE_WINDOW_ELEMENTS = 2**17


def _pull_back(node: gn.Conv2d, lam: Tensor, size: tuple[int, int]) -> Tensor:
    """``W^T`` on windows: ``(..., C_out, h, w)`` -> ``(..., C_in, *size)`` (no padding,
    no crop: the window of the input that the output window reads). One matrix product
    with the window's exact matrix of ``W^T`` (each entry a weight or zero) where it is
    small, or not mostly zeros (:data:`WINDOW_MATRIX_MIN_SHARE`); else the convolution's
    input gradient."""
    *lead, c_out, h, w = lam.shape
    c_in = node.in_shape[0]
    weight = node.tensor("w", node.weight, lam.dtype, lam.device)
    entries = c_out * h * w * c_in * size[0] * size[1]
    share = node.kernel[0] * node.kernel[1] / (node.groups * size[0] * size[1])  # that can be nonzero
    if entries > WINDOW_MATRIX_ELEMENTS or (entries > SPARSE_WINDOW_ELEMENTS and share < WINDOW_MATRIX_MIN_SHARE):
        flat = lam.reshape(-1, c_out, h, w)
        back = gn.conv2d_input((flat.shape[0], c_in, *size), weight, flat, stride=node.stride,
                               dilation=node.dilation, groups=node.groups)
        return back.reshape(*lead, c_in, *size)
    def matrix() -> Tensor:
        eye = torch.eye(c_out * h * w, dtype=lam.dtype, device=lam.device).reshape(-1, c_out, h, w)
        return gn.conv2d_input((eye.shape[0], c_in, *size), weight, eye, stride=node.stride,
                               dilation=node.dilation, groups=node.groups).flatten(1)

    window = node.cached(("window_matrix", h, w, lam.dtype, str(lam.device)), matrix)
    return (lam.reshape(-1, c_out * h * w) @ window).reshape(*lead, c_in, *size)


#: From the first node whose window covers at least this share of its map, with no other
#: branch pending, :func:`windowed_bounds` embeds the rows in the whole maps and finishes
#: with the full pass (:func:`~oracles.graph_backward.backward`), which reads one box's
#: relaxations and box as broadcast views where the windowed pass copies each row's window
#: of them (the same sums plus exact zeros). Measured on one thread, float64, VNN-COMP
#: 2021's ``resnet_2b`` (its last sum's windows cover 0.77 to 0.94 of the maps from its
#: second convolution down), interleaved medians: batch 1 208 against 228 ms, batch 16 4.2
#: against 4.5 s; 0.5 (from the first convolution of its second block) was no faster.
FULL_MAP_SHARE = 0.75

#: Rows per window of a map (all boxes) from which :meth:`_Cutter.cut` unfolds every window
#: once rather than gathering each row's (measured on one thread, float64: the residual MNIST
#: net's sum node, 1.4 rows per window, cut in about half the time by gathering; the CIFAR-size
#: convnet's second convolution, 2 per window, about 4% faster unfolded).
UNFOLD_ROWS = 2


class _Cutter:
    """Cuts each row's window out of ``(B, C, H, W)`` maps: row ``r`` at target position
    ``(i[r], j[r])`` of box ``box[r]`` reads that box's map; the result ``(1, p, 1, C, h, w)``
    is shared (broadcast) by the lower- and the upper-bound row of each window."""

    def __init__(self, node: gn.Node, win: Window, target: tuple[int, ...], box: Tensor, i: Tensor, j: Tensor,
                 maps: dict[tuple[str, ...], list], dtype: torch.dtype) -> None:
        _, h_map, w_map = node.shape
        (h, w), (sh, sw), (ph, pw) = win.size, win.stride, win.offset
        self.win, self.shape, self.maps = win, node.shape, maps
        # zero padding so that every window lies in the padded map: before by the offset,
        # after by what the last window overhangs
        self.pads = [pw, max(0, (target[2] - 1) * sw - pw + w - w_map), ph,
                     max(0, (target[1] - 1) * sh - ph + h - h_map)]
        self.padded = (h_map + self.pads[2] + self.pads[3], w_map + self.pads[0] + self.pads[1])
        cols = (self.padded[1] - w) // sw + 1
        self.windows = ((self.padded[0] - h) // sh + 1) * cols  # per box
        position = (i * cols + j).reshape(-1)
        # each row's window: its row among every window of every box (unfolded maps), or its
        # box and its top left corner in the padded map (gathered)
        self.index = position + self.windows * box.reshape(-1)
        self.box, self.corner = box.reshape(-1), (i.reshape(-1) * sh * self.padded[1] + j.reshape(-1) * sw)
        self.row_col = i.reshape(-1), j.reshape(-1)  # each row's target position
        # every window's 1 (inside the map) or 0: the same for every box
        inside = node.cached(("window_inside", win, tuple(target), dtype, str(i.device)),
                             lambda: self._unfold(torch.ones(1, 1, h_map, w_map, dtype=dtype, device=i.device)))
        self._inside = inside.index_select(0, position).reshape(1, -1, 1, 1, h, w)

    def _unfold(self, t: Tensor) -> Tensor:
        """``(B, C, H, W)`` -> every window of the map, ``(B L, C h w)`` (boxes one after the other)."""
        cols = F.unfold(F.pad(t, self.pads), self.win.size, stride=self.win.stride)  # (B, C h w, L)
        return cols.transpose(1, 2).reshape(-1, cols.shape[1]).contiguous()

    def cut(self, named: dict[str, Callable[[], Tensor]]) -> dict[str, Tensor]:
        """Each named ``(B, C, H, W)`` (or flat ``(B, C*H*W)``) map, given by the function that
        computes it -> each row's window ``(1, p, 1, C, h, w)`` (zero outside the map). The
        maps of one dtype are stacked along the channels and kept in ``maps`` for the next
        chunks of rows: where the rows are many against the windows of the maps (at least
        :data:`UNFOLD_ROWS` per window), every window is cut once (``unfold``) and each row
        selects its own; else each row's window is gathered from the padded maps (one
        ``index_select``). The same numbers either way (copies)."""
        key = tuple(named)
        if key not in self.maps:
            by_dtype: dict[torch.dtype, list[tuple[str, Tensor]]] = {}
            for name, make in named.items():
                t = make()
                by_dtype.setdefault(t.dtype, []).append((name, t.reshape(t.shape[0], -1, *self.shape[1:])))
            self.maps[key] = []
            for items in by_dtype.values():
                stacked = torch.cat([t for _, t in items], 1) if len(items) > 1 else items[0][1]
                channels = [(name, t.shape[1]) for name, t in items]
                if self.box.numel() >= UNFOLD_ROWS * stacked.shape[0] * self.windows:
                    self.maps[key].append((self._unfold(stacked), None, 0, channels))
                    continue
                stacked = F.pad(stacked, self.pads)
                c_all, (hp, wp) = stacked.shape[1], self.padded
                self.maps[key].append((stacked.reshape(-1), self._offsets(c_all, stacked.device), c_all * hp * wp,
                                       channels))
        size = self.win.size[0] * self.win.size[1]
        out: dict[str, Tensor] = {}
        for flat, offsets, per_box, channels in self.maps[key]:
            if offsets is None:  # unfolded: one row per window
                rows = flat.index_select(0, self.index)
            else:
                index = (self.box * per_box + self.corner).unsqueeze(1) + offsets  # (p, C h w)
                rows = flat.index_select(0, index.reshape(-1)).view(index.shape)
            for (name, c), piece in zip(channels, rows.split([c * size for _, c in channels], dim=1)):
                out[name] = piece.reshape(1, -1, 1, c, *self.win.size)
        return out

    def _offsets(self, channels: int, device: torch.device) -> Tensor:
        """The flat offsets of a window's numbers (channel, row, column) from its corner in
        the padded map of ``channels`` channels: ``(channels h w,)``."""
        (hp, wp), (h, w) = self.padded, self.win.size
        return (torch.arange(channels, device=device).view(-1, 1, 1) * (hp * wp)
                + torch.arange(h, device=device).view(1, -1, 1) * wp + torch.arange(w, device=device)).reshape(-1)

    def embed(self, lam: Tensor) -> Tensor:
        """Each row's window ``(1, p, S, C, h, w)`` placed in its node's whole map: ``(p, S, C,
        H, W)``, zero elsewhere (copies: each position is written once), laid out as the map
        itself, not as a crop of the padded map (a third of the numbers to zero on VNN-COMP
        2021's ``resnet_2b``, and no strided reads after). The coefficients outside the map
        are dropped (written to a spare slot past its end): exact zeros (:meth:`inside`), or
        NaN where a non-finite one was zeroed there, at a position the full pass never
        computes."""
        _, p, s, c, h, w = lam.shape
        (_, h_map, w_map), (sh, sw) = self.shape, self.win.stride
        n = c * h_map * w_map
        dev = lam.device
        i, j = self.row_col
        # each window number's flat position in the (unpadded) map, or n (a spare slot, dropped) outside it
        ys = (i * sh - self.pads[2]).unsqueeze(1) + torch.arange(h, device=dev)  # (p, h)
        xs = (j * sw - self.pads[0]).unsqueeze(1) + torch.arange(w, device=dev)  # (p, w)
        y_in, x_in = (ys >= 0) & (ys < h_map), (xs >= 0) & (xs < w_map)
        flat = (torch.arange(c, device=dev).view(1, c, 1, 1) * (h_map * w_map) + (ys * w_map).view(p, 1, h, 1)
                + xs.view(p, 1, 1, w))
        index = torch.where((y_in.view(p, 1, h, 1) & x_in.view(p, 1, 1, w)), flat, n).reshape(p, 1, -1)
        full = lam.new_zeros(p, s, n + 1).scatter_(2, index.expand(p, s, -1), lam.reshape(p, s, -1))
        return full.narrow(2, 0, n).view(p, s, c, h_map, w_map)

    def inside(self, lam: Tensor) -> Tensor:
        """``lam`` with the coefficients outside the map set to exactly zero (times 1 or 0:
        exact for finite numbers; a non-finite one makes the box's bounds ``-inf`` anyway)."""
        return lam * self._inside


def _dot(a: Tensor, b: Tensor) -> Tensor:
    """Sum over each window of ``a * b``: ``a`` ``(B, m, S, C, h, w)``, ``b`` ``(B, m, 1, C, h,
    w)`` or a map ``(C, 1, 1)`` -> ``(B, m, S)`` (a batched matrix product: no temporary of
    the size of ``a``)."""
    if b.dim() < a.dim():  # a per-channel map: sum the windows first (the same terms, regrouped)
        return (a.flatten(4).sum(-1) * b.reshape(-1)).sum(-1)
    return (a.flatten(3) @ b.flatten(3).transpose(-1, -2)).squeeze(-1)


def _needs(node: gn.Node, relax, scale: Tensor, terms: Tensor | None, joined: bool, covered: bool,  # noqa: ANN001
           lower: Tensor, upper: Tensor) -> dict[str, Callable[[], Tensor]]:
    """The maps :func:`windowed_bounds` reads at ``node`` (by name, each as the function that
    computes it): ``scale`` where branches rejoin there (or at an uncovered input), the box's
    ``center`` and ``radius`` (float64) at the input, a ReLU's relaxation (``charged`` where
    its coefficient was not produced by a linear node), a convolution's ``terms``."""
    need: dict[str, Callable[[], Tensor]] = {}
    if joined or (isinstance(node, gn.Input) and not covered):
        need["scale"] = lambda: scale
    if isinstance(node, gn.Input):
        wide = torch.float64
        need["center"] = lambda: (upper.to(wide) + lower.to(wide)) / 2
        need["radius"] = lambda: (upper.to(wide) - lower.to(wide)) / 2
    elif isinstance(node, gn.ReLU):
        if not covered:
            need["charged"] = lambda: relax.charged
        need.update(intercept=lambda: relax.upper_intercept, upper=lambda: relax.upper_slope,
                    lower=lambda: relax.lower_slope)
    elif isinstance(node, gn.Conv2d):
        need["terms"] = lambda: terms
    return need


def windowed_bounds(gt, nb, k: int, plan: tuple[Window, ...], box: Tensor, idx: Tensor,  # noqa: ANN001
                    lower: Tensor, upper: Tensor, maps: dict[int, dict[tuple[str, ...], list]],
                    signs: Tensor | None = None) -> Tensor:
    """Proven lower bounds of ``s z_k[box[r], idx[r]]`` for each row ``r`` and sign ``s`` of
    ``signs[r]`` (``(p, S)``, ±1; by default ``(1, -1)``: the lower and the upper bound)
    (``(p, S)``, float64; ``-inf`` where nothing is proven): the values that
    :func:`~oracles.graph_bounds.concretize_wide` gives for the full pass of
    :func:`oracles.graph_bounds._tighten`, computed on windows (module docstring). ``idx``
    are flat output indices of node ``k``, ``box`` the box of each (``(p,)``).
    Coefficients are ``(1, p, S, C, h, w)``: the rows of ``s z``. ``maps`` keeps
    the windows of the maps from one chunk of rows to the next (empty at the first).

    The pass visits the plan's nodes in reverse topological order as
    :func:`oracles.graph_bounds.backward` does, with its accounting: a linear node adds its
    bias to the constant and ``|Lambda| . terms`` to the error, a ReLU its intercepts'
    shift and (its coefficient not produced by a linear node) ``|Lambda| . scale``, a node
    reached by several branches ``(sum of |contributions|) . scale``."""
    node = gt.graph.nodes[k]
    dtype, dev = gt.dtype, lower.device
    sl, wide = gt.slacks, torch.float64
    bsz, m = 1, idx.numel()  # one row of m windows, each reading its own box's maps
    sel = idx.view(1, m)
    _, ho, wo = node.shape
    co, pos = sel // (ho * wo), sel % (ho * wo)
    windows = {w.node: w for w in plan}
    cutters = {w.node: _Cutter(gt.graph.nodes[w.node], w, node.shape, box.view(1, m), pos // wo, pos % wo,
                               maps.setdefault(w.node, {}), dtype) for w in plan[1:]}  # plan[0]: k itself
    sign = (torch.tensor([1.0, -1.0], dtype=dtype, device=dev).expand(1, m, 2) if signs is None
            else signs.to(dtype).view(1, m, -1))
    n_signs = sign.shape[2]
    joined = Rejoined()
    lam, acc_abs, covered = joined.lam, joined.acc_abs, joined.covered
    under = torch.zeros(bsz, m, dtype=lower.dtype, device=dev)

    def per_row(t: Tensor) -> Tensor:
        """A per-box ``(B,)`` tensor for each row: ``(1, m)``."""
        return t.index_select(0, box).view(1, m)

    def push(u: int, x: Tensor, win: Window, cov: bool) -> None:
        """``x`` (coefficients of node ``u`` on window ``win``) added to ``u``'s rows."""
        if win != windows[u]:
            x = cutters[u].inside(F.pad(x, win.within(windows[u])))
        joined.push(u, x, cov)

    # the target's rows e_i and -e_i: a convolution's are its kernels (exact), its bias the
    # constant and its terms the error (as the full pass's first step); a sum's go to both inputs
    if isinstance(node, gn.Conv2d):
        u = node.inputs[0]
        const = (node.bias(dtype, dev).reshape(-1)[co].unsqueeze(2) * sign).to(wide)
        err = sl.back[k] * nb.terms[k].flatten(1)[box, idx].view(1, m).to(wide).unsqueeze(2).expand(bsz, m, n_signs)
        under = under + per_row(nb.scale[u].flatten(1).sum(1) + 1)
        push(u, cutters[u].inside(_kernel(node, dtype, dev)[co].unsqueeze(2) * sign.view(bsz, m, n_signs, 1, 1, 1)),
             windows[u], True)
    else:
        const = torch.zeros(bsz, m, n_signs, dtype=wide, device=dev)
        err = torch.zeros(bsz, m, n_signs, dtype=wide, device=dev)
        start = torch.zeros(bsz, m, n_signs, node.shape[0], dtype=dtype, device=dev)
        start.scatter_(3, co.view(bsz, m, 1, 1).expand(bsz, m, n_signs, 1), sign.unsqueeze(-1))
        start = start.view(bsz, m, n_signs, -1, 1, 1)
        one = plan[0]
        push(node.inputs[0], start, Window(node.inputs[0], one.size, one.stride, one.offset), False)
        push(node.inputs[1], -start if isinstance(node, gn.Sub) else start,
             Window(node.inputs[1], one.size, one.stride, one.offset), False)

    for win in plan[1:]:
        v = win.node
        nv = gt.graph.nodes[v]
        big = lam.pop(v)
        if not lam and win.size[0] * win.size[1] >= FULL_MAP_SHARE * nv.shape[1] * nv.shape[2]:
            # windows nearly as large as the map (nothing else pending): the full pass from here
            if v in acc_abs:  # the rounding of the branches' sum, as below
                scale = cutters[v].cut({"scale": lambda: nb.scale[v]})["scale"]
                err = err + sl.join * _dot(acc_abs.pop(v), scale).to(wide)
            bound = backward(gt, nb, v, cutters[v].embed(big), covered=covered[v], const=const.reshape(m, n_signs),
                             error=err.reshape(m, n_signs), underflow=under.reshape(m, 1), rows=box)
            return concretize_wide(bound, lower, upper, rows=box)
        w = cutters[v].cut(_needs(nv, nb.relax.get(v), nb.scale[v], nb.terms.get(v), v in acc_abs, covered[v],
                                  lower, upper))
        if v in acc_abs:  # the rounding of the sum of several coefficients
            err = err + sl.join * _dot(acc_abs.pop(v), w["scale"]).to(wide)
        if isinstance(nv, gn.Input):
            if not covered[v]:
                err = err + sl.one * _dot(big.abs(), w["scale"]).to(wide)
            big = big.to(wide)
            value = _dot(big, w["center"]) - _dot(big.abs(), w["radius"])
            error = err + (gt.tiny * under.to(wide) + ABS_SLACK).view(bsz, m, 1)
            return proven((value + const - error).reshape(m, n_signs), nb.invalid.index_select(0, box))
        if isinstance(nv, gn.ReLU):
            under = under + per_row(nb.scale[v].flatten(1).sum(1) + 1)  # slope products below the normal range
            if not covered[v]:  # the products with exact slopes (0, 1) round nothing
                err = err + sl.one * _dot(big.abs(), w["charged"]).to(wide)
            neg = big.clamp(max=0)
            shift = _dot(neg.to(wide), w["intercept"].to(wide))  # <= 0, in float64
            const, err = const + shift, err - sl.wide * shift
            # times the upper slope where negative, else the lower one (one product is an exact zero)
            new = neg * w["upper"] + big.clamp(min=0) * w["lower"]
            push(nv.inputs[0], new, win, False)
        elif isinstance(nv, gn.Conv2d):
            u = nv.inputs[0]
            const = const + _dot(big.to(wide), nv.bias(wide, dev))
            err = err + sl.back[v] * _dot(big.abs(), w["terms"]).to(wide)
            under = under + per_row(nb.scale[u].flatten(1).sum(1) + 1)
            size, stride, offset = _through(nv, win)
            through = Window(u, size, stride, offset)
            back = _pull_back(nv, big, size)
            push(u, back if through != windows[u] else cutters[u].inside(back), through, True)
        else:  # Add / Sub: both inputs get the coefficient (negated for Sub's second)
            push(nv.inputs[0], big, Window(nv.inputs[0], win.size, win.stride, win.offset), False)
            other = -big if isinstance(nv, gn.Sub) else big
            push(nv.inputs[1], other, Window(nv.inputs[1], win.size, win.stride, win.offset), False)
    raise AssertionError("the window plan does not reach the input")  # pragma: no cover
