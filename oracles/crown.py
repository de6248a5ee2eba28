"""CROWN: sound, incomplete, batched linear bound propagation (VERIFIED or UNKNOWN; on graphs,
FALSIFIED where its screen confirms a misclassified corner)."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, ClassVar

import numpy as np
import torch

from parallelepipedonn.box import Box
from parallelepipedonn.errors import OracleError
from parallelepipedonn.network import Network
from parallelepipedonn.tolerances import unit_roundoff

from .adam import Adam
from .alpha import AlphaSettings, optimize_bounds
from .base import Answer, ClassBox, FloatArray, Oracle, Verdict
from .bounds import (
    BoundsTimedOut,
    NetworkTensors,
    ReluRelaxation,
    backward,
    bounds_valid,
    center_image,
    concretize,
    input_scale,
    intermediate_bounds,
    margin_spec,
    relu_relaxation,
)
from .chain import chain_network
from .nesting import Supersets, nested_chain, parabola_root
from .precision import box_tensors, rounded_box, sound_kernels

#: The dtypes bound propagation runs in (``float32`` for GPUs; the slack follows the dtype).
DTYPES = {"float64": torch.float64, "float32": torch.float32}
#: The ``intermediate`` bounds of the ReLU inputs: CROWN's own backward passes, interval
#: bounds, or forward-mode linear bounds (chains only: for networks with few inputs).
INTERMEDIATE = ("crown", "ibp", "forward")


def resolve_device(device: str | torch.device) -> torch.device:
    """``torch.device`` for ``device``; a clear error if CUDA is asked for but absent. A bare
    ``"cuda"`` becomes the current CUDA device with its index (``cuda:0``), the device
    tensors report: the graph nodes' tensor caches are keyed by it."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise OracleError(f"unknown device {device!r} (e.g. cpu, cuda, cuda:1): {exc}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise OracleError(f"device {device!r} requested but CUDA is not available on this machine")
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    return dev


class CrownOracle(Oracle):
    """CROWN bound propagation over the IR (float64 or float32, any torch device; every
    bound moved outward by its rounding error, see :mod:`oracles.bounds`).

    A box is VERIFIED iff the proven lower bound of ``logit_c - logit_j`` is > 0 for every
    ``j != c``; otherwise UNKNOWN (with the bound as ``margin``). On a graph, ``screen``
    (default) first evaluates each box's first-order corner: a box whose corner is
    confirmed misclassified is answered FALSIFIED with it (confirmed again, exactly, like
    every counterexample), the larger boxes containing that point UNKNOWN, all without
    bounds (no sound bound could verify them): it spares the searches' large boxes and
    tells them where a counterexample is. ``reuse``
    (default): a box inside one bounded before starts from that box's node bounds (sound:
    bounds of a superset hold on a subset; its answer may be tighter than the box's bounds
    computed alone). ``bisect`` (default on CPU): boxes that are nested (two or more: the
    cubes of an apothem search) are bounded one at a time, in bisection order (each probe where the
    margin bounds of boxes bounded before extrapolate to zero); a box inside a verified
    one is VERIFIED with that box's margin bound (sound), and a box containing one CROWN
    did not verify is answered UNKNOWN without bounds (CROWN's answers on nested boxes
    taken as monotone: sound, as every UNKNOWN, and the same answers except where CROWN
    would verify a box but not a box inside it). ``float32_first`` (default; graphs in
    float64): the first side of each neuron CROWN tightens is bounded in float32 (sound,
    its own rounding slack), both sides in float64 where it leaves the neuron unstable:
    the same neurons settle, the others get the float64 bounds (a settled neuron's proven
    side keeps its looser float32 bound); faster where most settle on the first side.

    ``network`` is a chain :class:`Network` or a :class:`~parallelepipedonn.graph.Graph`:
    a graph that is a chain runs the chain code; any other graph (convolutions kept as
    convolutions, residual connections) runs :mod:`oracles.graph_bounds` for
    :meth:`verify` and :meth:`margin_lower_bounds` (alpha-CROWN too). ``class_extremes``
    runs on the graph's chain expansion (:mod:`oracles.chain`, recorded in
    :meth:`settings`); a graph without one (residual) answers ``verify`` only.
    """

    name = "crown"
    sound = True
    complete = False
    batched = True
    queries = frozenset({"verify", "class_extremes"})  # alpha-crown too
    reads_graphs = True

    def __init__(self, network: Network, *, device: str = "cpu", chunk_size: int = 256,
                 intermediate: str = "crown", dtype: str = "float64", screen: bool = True, reuse: bool = True,
                 bisect: bool | None = None, float32_first: bool = True, time_limit: float | None = None) -> None:
        super().__init__(network, time_limit=time_limit)
        self.screen, self.reuse = bool(screen), bool(reuse)
        self.float32_first = bool(float32_first) and dtype == "float64"
        if intermediate not in INTERMEDIATE:
            raise OracleError(f"intermediate bounds must be one of {', '.join(INTERMEDIATE)}, not {intermediate!r}")
        if chunk_size < 1:
            raise OracleError("chunk_size must be >= 1")
        if dtype not in DTYPES:
            raise OracleError(f"dtype must be one of {', '.join(DTYPES)}, not {dtype!r}")
        self.device = resolve_device(device)
        self.bisect = self.device.type == "cpu" if bisect is None else bool(bisect)
        self.chunk_size = chunk_size
        self.intermediate = intermediate
        self.dtype = dtype
        self.graph_tensors: Any = None
        self._module32: Any = None  # the float32 torch module of the screen, built on first use
        self._memory: Supersets | None = None  # node bounds of boxes verify bounded (graphs)
        # boxes with their margin bounds: the bisection's order
        self._seen: list[tuple[int, FloatArray, FloatArray, float]] = []
        self._centre: tuple[int, FloatArray, float | None] | None = None  # the margin at the chain's centre
        self._late = False  # the last call's time limit passed before every box was bounded
        self._per_box: float | None = None  # seconds per box of the last chunk bounded under a time limit
        network = self.network
        if isinstance(network, Network) or network.as_network() is not None:
            self.tensors = NetworkTensors.of(network, self.device, DTYPES[dtype])
        else:  # a DAG with convolutions or residual connections: oracles.graph_bounds
            from parallelepipedonn.graph_chain import is_relu_chain

            if intermediate == "forward":
                raise OracleError(f"forward intermediate bounds are for chains of affine maps and ReLUs; "
                                  f"{network.describe()} is not one")

            from .graph_bounds import GraphTensors

            self.graph_tensors = GraphTensors.of(network, self.device, DTYPES[dtype], self.float32_first)
            self.tensors = None  # type: ignore[assignment]
            self._memory = Supersets(self.graph_tensors, intermediate)
            if not is_relu_chain(network):  # no chain expansion: no class extremes
                self.queries = frozenset({"verify"})  # type: ignore[misc]

    def settings(self) -> dict[str, Any]:
        out = {**super().settings(), "device": str(self.device), "intermediate": self.intermediate,
               "dtype": self.dtype}
        graph = {"screen": self.screen, "reuse": self.reuse, "bisect": self.bisect,
                 "float32_first": self.float32_first}
        return {**out, **graph} if self.graph_tensors is not None else out

    def margin_lower_bounds(self, lower: FloatArray, upper: FloatArray, label: int) -> FloatArray:
        """Proven lower bounds of ``logit_label - logit_j`` for every ``j != label`` over each
        box: shape ``(B, n_classes - 1)`` (classes in increasing order, ``label`` skipped).
        The boxes are checked as :meth:`verify` checks them, infinite bounds allowed."""
        lower, upper = self._check_query(lower, upper, label, finite=False)

        def bound(lo_np: FloatArray, hi_np: FloatArray, deadline: float) -> FloatArray:
            lo, hi = box_tensors(lo_np, hi_np, self._dtype, self.device)
            with self._no_autograd(), sound_kernels(self.device, self._dtype):
                return self._bounds(lo, hi, label, deadline).to(torch.float64).cpu().numpy()

        return self._chunked(lower, upper, bound)

    def _chunked(self, lower: FloatArray, upper: FloatArray,
                 bound: Callable[[FloatArray, FloatArray, float], FloatArray]) -> FloatArray:
        """``bound`` over the boxes in chunks of ``chunk_size`` (given the deadline, at which the
        intermediate bounds of a graph or a chain stop: :class:`~oracles.bounds.BoundsTimedOut`);
        once the time limit (from this call's start) has passed, the boxes not yet bounded get
        ``-inf`` (nothing proven) and ``_late`` is set. Under a time limit the chunks are sized to the time
        left at the time per box last measured (the first chunk ever, 16 boxes): a chunk of
        256 boxes of a residual CIFAR net takes a minute."""
        limited = self.time_limit is not None
        deadline = time.perf_counter() + self.time_limit if limited else math.inf

        def fitting(per_box: float | None) -> int:
            if not limited:
                return self.chunk_size
            if per_box is None:
                return min(self.chunk_size, 16)
            left = deadline - time.perf_counter()
            return max(1, min(self.chunk_size, int(left / per_box) if per_box > 0 else self.chunk_size))

        out = [np.empty((0, self.network.n_classes - 1))]
        start, size = 0, fitting(self._per_box)
        while start < len(lower):
            began = time.perf_counter()
            if start and began > deadline:
                out.append(np.full((len(lower) - start, self.network.n_classes - 1), -np.inf))
                self._late = True
                break
            stop = min(len(lower), start + size)
            try:
                out.append(bound(lower[start:stop], upper[start:stop], deadline))
            except BoundsTimedOut:
                out.append(np.full((len(lower) - start, self.network.n_classes - 1), -np.inf))
                self._late = True
                break
            if limited:
                self._per_box = (time.perf_counter() - began) / (stop - start)
                size = fitting(self._per_box)
            start = stop
        return np.concatenate(out)

    def differentiable_margin_bounds(self, lower: torch.Tensor, upper: torch.Tensor, label: int) -> torch.Tensor:
        """CROWN's margin bounds as a differentiable function of the box (tensors ``(B, n)``
        on any device, moved to the oracle's and converted to its dtype; the bounds come
        back on the tensors' device): for searches that optimise a box by gradient (a box
        they find is verified again by :meth:`verify`). Proven bounds, as
        :meth:`margin_lower_bounds`': the box is rounded as
        :func:`~oracles.precision.box_tensors` rounds it (outward to the dtype, subnormal
        coordinates to even multiples) and bounded under
        :func:`~oracles.precision.sound_kernels`; the gradient passes the rounding through
        unchanged."""
        with torch.no_grad():
            box = rounded_box(lower.detach().to(self.device, torch.float64),
                              upper.detach().to(self.device, torch.float64), self._dtype)
        lo, hi = (_through(x.to(self.device, self._dtype), r) for x, r in zip((lower, upper), box))
        with sound_kernels(self.device, self._dtype):
            bounds = CrownOracle._bounds(self, lo, hi, label)
        return bounds.to(lower.device)

    @property
    def _dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    #: Whether :meth:`_bounds` differentiates (alpha-CROWN's slopes): it then runs under
    #: ``no_grad``, which it can leave; else under ``inference_mode`` (no autograd bookkeeping
    #: at all: about a tenth less time per call on small nets at batch 1).
    _differentiates: ClassVar[bool] = False

    def _no_autograd(self) -> contextlib.AbstractContextManager:
        return torch.no_grad() if self._differentiates else torch.inference_mode()

    def _bounds(self, lo: torch.Tensor, hi: torch.Tensor, label: int, deadline: float = math.inf) -> torch.Tensor:
        """The margins' lower bounds; the intermediate bounds stop at ``deadline``
        (:class:`~oracles.bounds.BoundsTimedOut`)."""
        if self.graph_tensors is not None:
            from .graph_bounds import margin_lower_bounds

            return margin_lower_bounds(self.graph_tensors, lo, hi, label, self.intermediate, deadline=deadline)
        net = self.tensors
        relaxations: list[ReluRelaxation] = []
        terms: list[torch.Tensor | None] = [None] * net.depth  # shared by the passes of these boxes
        images: list[torch.Tensor] = []  # W_0 c, shared by every pass
        intermediate_bounds(net, lo, hi, self.intermediate, relaxations, terms, image_out=images, deadline=deadline)
        image = images[0] if images else center_image(net, lo, hi)
        spec = margin_spec(self.network.n_classes, label, lo.shape[0], lo.dtype, lo.device)
        return concretize(backward(net, spec, net.depth - 1, relaxations, input_scale(lo, hi), terms=terms,
                                   center=(hi + lo) / 2, center_image=image), lo, hi, consume=True)

    def _verify(self, lower: FloatArray, upper: FloatArray, label: int) -> Sequence[Answer]:
        start = time.perf_counter()
        graph = self.graph_tensors is not None
        screened, found, corner_of = self._screened(lower, upper, label) if self.screen and graph else \
            (np.zeros(len(lower), dtype=bool), lower, lower)
        # the screening counts against the call's time limit: the bounds get what is left
        left = None if self.time_limit is None else self.time_limit - (time.perf_counter() - start)
        with self.time_limited(left):
            return self._bound_unscreened(lower, upper, label, screened, found, corner_of)

    def _bound_unscreened(self, lower: FloatArray, upper: FloatArray, label: int, screened: np.ndarray,
                          found: FloatArray, corner_of: FloatArray) -> Sequence[Answer]:
        graph = self.graph_tensors is not None
        answers: list[Answer] = [  # None: not screened, answered below
            Answer(Verdict.FALSIFIED, counterexample=found[i], reason=f"{self.name}: a corner of the box the network "
                   "misclassifies (confirmed), which no sound bound verifies; not bounded")
            if screened[i] and (found[i] == corner_of[i]).all() else
            Answer(Verdict.UNKNOWN, reason=f"{self.name}: the box contains a point the network misclassifies "
                   "(confirmed: a smaller box's counterexample), which no sound bound verifies; not bounded")
            if screened[i] else None for i in range(len(lower))]  # type: ignore[misc]

        self._late = False
        deadline = math.inf if self.time_limit is None else time.perf_counter() + self.time_limit

        def answer(i: int, m: float) -> Answer:
            if m == -math.inf and self._late:
                return Answer(Verdict.UNKNOWN, timed_out=True, reason=f"{self.name}: the time limit was reached "
                              "before this box was bounded")
            return Answer(Verdict.VERIFIED, margin=m) if m > 0 else \
                Answer(Verdict.UNKNOWN, margin=m, reason=f"{self.name} margin bound {m:.3g} <= 0")

        todo = np.flatnonzero(~screened)
        chain = nested_chain(lower, upper, todo) if self.bisect and graph and len(todo) > 1 else None
        if chain is None:
            worst = self._verify_bounds(lower[todo], upper[todo], label).min(axis=1) if len(todo) else []
            for i, m in zip(todo, worst):
                answers[i] = answer(i, float(m))
                if graph and not answers[i].timed_out:  # (a box not bounded tells the bisection nothing)
                    self._remember(label, lower[i], upper[i], float(m))
            return answers
        first, last = 0, len(chain)  # chain[:first] verified, chain[last:] not
        wrong = 0  # guesses in a row whose probe answered against the estimate (at 2, the next one bisects)
        while first < last:
            m = -math.inf
            if time.perf_counter() <= deadline:
                guess = self._interpolated(lower, upper, label, chain, first, last) if wrong < 2 else None
                # the box just above the guess first (estimated not verified): where it is not, its node
                # bounds are the guess's prior (bounds of a superset), which halves the guess's bound's work
                mid = (first + last) // 2 if guess is None else min(guess + 1, last - 1)
                i = chain[mid]
                m = float(self._verify_bounds(lower[i:i + 1], upper[i:i + 1], label).min())
            if m == -math.inf and (self._late or time.perf_counter() > deadline):  # cut by the time limit
                for j in chain[first:last]:
                    answers[j] = Answer(Verdict.UNKNOWN, timed_out=True, reason=f"{self.name}: the time limit was "
                                        "reached before this box was bounded")
                break
            self._remember(label, lower[i], upper[i], m)
            wrong = 0 if guess is None or (m > 0) == (mid == guess) else wrong + 1
            answers[i] = answer(i, m)
            if m > 0:
                for j in chain[first:mid]:
                    answers[j] = Answer(Verdict.VERIFIED, margin=m, reason=f"{self.name}: inside a box it verified")
                first = mid + 1
            else:
                for j in chain[mid + 1:last]:
                    answers[j] = Answer(Verdict.UNKNOWN, reason=f"{self.name}: contains a box it did not verify; "
                                        "not bounded")
                last = mid
        return answers

    def _remember(self, label: int, lower: FloatArray, upper: FloatArray, margin: float) -> None:
        """Keep a box's margin bound, for the bisection's order."""
        self._seen.insert(0, (label, lower.copy(), upper.copy(), margin))
        del self._seen[_SEEN:]

    def _interpolated(self, lower: FloatArray, upper: FloatArray, label: int, chain: list[int], first: int,
                      last: int) -> int | None:
        """The probe order of the bisection (a heuristic: it changes which boxes are bounded,
        never what a bound proves): the largest box of ``chain[first:last]`` whose total
        width is below where the margin bound, as a function of that width, is estimated to
        cross zero — so that the crossing is usually settled in two bounds rather than log2
        of the bracket. The estimate, from the margin bounds of boxes bounded before on the
        same line (inside ``chain[first]`` and verified, or containing ``chain[last - 1]``
        and not), the network's margin at the chain's centre (width 0) standing for one more
        verified point: where the crossing is bracketed, the parabola through the nearest
        verified point, the nearest unverified one and the next nearest (the bound falls
        ever faster as the box grows: a line through the bracket alone crosses zero too
        early); else the line through the two nearest verified points. None where there
        are not two such points."""
        lo_in, hi_in = lower[chain[first]], upper[chain[first]]
        lo_out, hi_out = lower[chain[last - 1]], upper[chain[last - 1]]
        below: set[tuple[float, float]] = set()  # (width, bound), verified, inside chain[first]
        above: set[tuple[float, float]] = set()  # not verified, containing chain[last - 1]
        for lab, lo, hi, m in self._seen:
            if lab != label:
                continue
            if m > 0 and (lo_in <= lo).all() and (hi <= hi_in).all():
                below.add((float((hi - lo).sum()), m))
            elif m <= 0 and (lo <= lo_out).all() and (hi_out <= hi).all():
                above.add((float((hi - lo).sum()), m))
        low, high = sorted(below, reverse=True), sorted(above)
        if len(low) < 2:
            m0 = self._centre_margin((lower[chain[0]] + upper[chain[0]]) / 2, label)
            if m0 is not None and all(m0 > m for _, m in low):
                low.append((0.0, m0))
        if high and low and high[0][0] > low[0][0]:
            (w1, m1), (w2, m2) = low[0], high[0]
            third = low[1:2] + high[1:2]
            cross = w1 + m1 * (w2 - w1) / (m1 - m2)  # the secant's
            if third:
                w3, m3 = min(third, key=lambda p: min(abs(p[0] - w1), abs(p[0] - w2)))
                cross = parabola_root((w1, m1), (w2, m2), (w3, m3), cross)
        elif len(low) == 2 and low[1][1] > low[0][1]:
            (w1, m1), (w0, m0) = low
            cross = w1 + m1 * (w1 - w0) / (m0 - m1)
        else:
            return None
        widths = np.array([float((upper[i] - lower[i]).sum()) for i in chain[first:last]])
        return first + max(0, int(np.searchsorted(widths, cross, side="right")) - 1)

    def _centre_margin(self, centre: FloatArray, label: int) -> float | None:
        """The network's float64 margin at ``centre`` (the last one asked, kept), or None if
        it is not a positive number (a heuristic's input: not confirmed)."""
        if self._centre is None or self._centre[0] != label or not np.array_equal(self._centre[1], centre):
            with np.errstate(all="ignore"):
                m0 = float(self.network.margins(centre[None], label)[0])
            self._centre = (label, centre.copy(), m0 if np.isfinite(m0) and m0 > 0 else None)
        return self._centre[2]

    def _verify_bounds(self, lower: FloatArray, upper: FloatArray, label: int) -> FloatArray:
        """:meth:`margin_lower_bounds`; on a graph with ``reuse``, each box starts from the
        node bounds of the smallest box bounded before that contains it (bounds of a
        superset hold on a subset: sound, and CROWN tightens only the neurons they leave
        unstable), and its own are remembered for the boxes asked later."""
        if not self.reuse or self._memory is None:
            return self.margin_lower_bounds(lower, upper, label)
        from .graph_bounds import margin_lower_bounds

        memory = self._memory

        def bound(lo_np: FloatArray, hi_np: FloatArray, deadline: float) -> FloatArray:
            lo, hi = box_tensors(lo_np, hi_np, self._dtype, self.device)
            kept: list[Any] = []
            with self._no_autograd(), sound_kernels(self.device, self._dtype):
                bounds = margin_lower_bounds(self.graph_tensors, lo, hi, label, self.intermediate,
                                             memory.prior(lo_np, hi_np), kept, deadline=deadline)
            memory.remember(lo_np, hi_np, kept[0])
            return bounds.to(torch.float64).cpu().numpy()

        return self._chunked(lower, upper, bound)

    def _screened(self, lower: FloatArray, upper: FloatArray,
                  label: int) -> tuple[np.ndarray, FloatArray, FloatArray]:
        """Per box: does it contain a point whose exact margin is negative — its
        first-order corner (the vertex a signed-gradient step from the centre reaches,
        against the runner-up class), or another box's confirmed one? A corner is confirmed
        by its float64 margin beyond the margin's proven rounding error
        (``margin_errors``), smallest boxes first (a point confirmed in one box screens every
        box containing it); a box where nothing is confirmed is not screened. CROWN's bound
        of a screened box is at most that margin (it is sound), so it would not verify it
        either. Returns the mask, per screened box the confirmed point, and each box's
        corner (a box whose own corner was confirmed answers FALSIFIED with it; the larger
        boxes it screens UNKNOWN, sparing the same point's exact re-check). The gradient
        that picks the corners and the margins that pick the corners worth confirming are
        float32 passes (only heuristics: the corners are confirmed as above)."""
        if self._module32 is None:
            self._module32 = self.network.to_torch(torch.float32, self.device)
        center = torch.tensor((lower + upper) / 2, dtype=torch.float32, device=self.device, requires_grad=True)
        with torch.enable_grad():
            logits = self._module32(center)
            others = logits.detach().clone()
            others[:, label] = -torch.inf
            runner_up = others.argmax(dim=1, keepdim=True)
            margin = logits[:, label] - logits.gather(1, runner_up)[:, 0]
            (grad,) = torch.autograd.grad(margin.sum(), center)
        corner = np.where(grad.cpu().numpy() > 0, lower, upper)  # a vertex of each box
        with torch.no_grad():  # candidates: float32 margin <= SCREEN_SLACK x the logits' scale (a heuristic)
            logits = self._module32(torch.tensor(corner, dtype=torch.float32, device=self.device)).to(torch.float64)
            own = logits[:, label].clone()
            scale = logits.abs().max(dim=1).values
            logits[:, label] = -torch.inf
            below = (logits.max(dim=1).values + SCREEN_SLACK * (1 + scale) >= own).cpu().numpy()
        screened = np.zeros(len(lower), dtype=bool)
        found = np.empty_like(lower)
        for i in sorted(np.flatnonzero(below), key=lambda i: float((upper[i] - lower[i]).sum())):
            if screened[i]:
                continue
            with np.errstate(over="ignore", invalid="ignore"):
                m, err = self.network.margin_errors(corner[i:i + 1], label)
            if np.isfinite(m[0]) and np.isfinite(err[0]) and m[0] < -err[0]:
                inside = ~screened & (lower <= corner[i]).all(axis=1) & (corner[i] <= upper).all(axis=1)
                screened |= inside
                found[inside] = corner[i]
        return screened, found, corner

    def class_extremes(self, label: int, region: Box, candidates: Any = (), *, rounds: int = 100,
                       tolerance: float = 1e-7, **_: Any) -> ClassBox:
        """A sound outer box of ``{x in region : class(x) = label}`` (ties included) by
        bound propagation: every point of the class satisfies CROWN's linear upper bounds
        ``logit_label - logit_j <= a_j @ x + b_j`` (valid on the current box), hence
        ``a_j @ x + b_j >= 0``; each such constraint bounds each coordinate given the
        box's other coordinates (interval reasoning, rounded outward). Repeated on the
        shrinking box until it moves less than ``tolerance``. ``candidates`` confirmed in
        the class mark the bounds they attain as exact."""
        self.network.check_label(label)
        if self.graph_tensors is not None:  # on the graph's chain expansion (recorded), or refused
            chain, self.bridge = chain_network(self.network, f"{self.name}'s class extremes (the relaxed dual)",
                                               instead=RELAXED_DUAL_INSTEAD)
            inner = CrownOracle(chain, device=str(self.device), dtype=self.dtype)
            inner.model = self.model
            try:
                return inner.class_extremes(label, region, candidates, rounds=rounds, tolerance=tolerance)
            finally:
                self.stats.calls += inner.stats.calls
                self.stats.seconds += inner.stats.seconds
        start = time.perf_counter()
        net = self.tensors
        lo, hi = (t[None] for t in box_tensors(region.lower, region.upper, net.dtype, self.device))
        spec = -margin_spec(self.network.n_classes, label, 1, lo.dtype, lo.device)  # rows e_j - e_label
        u = unit_roundoff(net.dtype)
        empty = False
        with torch.no_grad(), sound_kernels(self.device, net.dtype):
            for _ in range(rounds):
                inter = intermediate_bounds(net, lo, hi)
                if not bool(bounds_valid(inter).all()):
                    break  # bounds overflow: the current box stays the (sound) answer
                relax = [relu_relaxation(a, b) for a, b in inter]
                bound = backward(net, spec, net.depth - 1, relax, input_scale(lo, hi))
                # logit_j - logit_label >= coef @ x + const - error, so on the class region
                # 0 <= margin <= -(coef @ x + const) + error
                a, b = -bound.coef[0], (-bound.const + bound.error)[0]  # class points: a @ x + b >= 0
                top = torch.maximum(a * lo, a * hi)  # (m, n): each term's largest value on the box
                rest = top.sum(dim=1, keepdim=True) - top  # the other coordinates' largest sum
                # a_i x_i >= -b - rest, lowered by the rounding error of these sums
                need = -b[:, None] - rest - (net.rel * (top.abs().sum(dim=1, keepdim=True) + b.abs()[:, None])
                                             + net.tiny)
                ratio = need / torch.where(a == 0, torch.ones_like(a), a)
                widen = (4 * u + 1e-12) * ratio.abs() + 1e-12
                new_lo = torch.where(a > 0, ratio - widen, torch.full_like(ratio, -math.inf)).max(dim=0).values
                new_hi = torch.where(a < 0, ratio + widen, torch.full_like(ratio, math.inf)).min(dim=0).values
                if bool(bound.invalid.any()) or bool(torch.isnan(new_lo).any() | torch.isnan(new_hi).any()):
                    break
                new_lo, new_hi = torch.maximum(lo[0], new_lo), torch.minimum(hi[0], new_hi)
                if bool((new_lo > new_hi).any()):
                    empty = True
                    break
                moved = float(torch.maximum(new_lo - lo[0], hi[0] - new_hi).max())
                lo, hi = new_lo[None], new_hi[None]
                if moved < tolerance:
                    break
        n = self.network.n_inputs
        self.stats.calls += 1
        self.stats.seconds += time.perf_counter() - start
        if empty:
            return ClassBox(region.upper.copy(), region.lower.copy(), np.ones(n, bool), np.ones(n, bool),
                            np.zeros((0, n)), True)
        lower = np.maximum(lo[0].to(torch.float64).cpu().numpy(), region.lower)
        upper = np.minimum(hi[0].to(torch.float64).cpu().numpy(), region.upper)
        pts = np.asarray(candidates, dtype=np.float64).reshape(-1, n) if len(candidates) else np.zeros((0, n))
        pts = pts[region.contains_points(pts)]
        witnesses = pts[self.network.class_points(pts, label)] if len(pts) else pts  # exact near ties
        exact_lo = (witnesses <= lower).any(axis=0) if len(witnesses) else np.zeros(n, bool)
        exact_hi = (witnesses >= upper).any(axis=0) if len(witnesses) else np.zeros(n, bool)
        return ClassBox(lower, upper, exact_lo, exact_hi, witnesses)


#: The screen confirms (float64, with its rounding error) the corners whose float32 margin is at
#: most this times ``1 + max |logit|`` (a heuristic filter; a float32 margin is far closer to the
#: float64 one than that).
SCREEN_SLACK = 1e-5

#: Boxes (with their margin bounds) the bisection remembers, to order its probes.
_SEEN = 32


#: What the errors of :meth:`CrownOracle.class_extremes` on a graph it cannot read suggest.
RELAXED_DUAL_INSTEAD = ("the milp dual (certify --dual milp, dual --method milp; method='milp' in the API), which "
                        "reads the graph as it is")


def _through(x: torch.Tensor, rounded: torch.Tensor) -> torch.Tensor:
    """``rounded`` (``x`` rounded, a few units of its last place away) with ``x``'s gradient:
    ``x + (rounded - x)``, which is ``rounded`` exactly (checked; else ``rounded`` alone)."""
    out = x + (rounded - x.detach())
    return out if torch.equal(out.detach(), rounded) else rounded


class AlphaCrownOracle(CrownOracle):
    """alpha-CROWN (:mod:`oracles.alpha`): CROWN whose lower ReLU slopes — those of the
    final specification's backward pass and of every intermediate bound's own pass, one
    per box, row and neuron — are optimised jointly by at most ``steps`` Adam steps on the
    margin bounds (``intermediate="ibp"``: the final pass's only, on interval bounds).

    Every slope in [0, 1] gives a valid bound; the bounds reported are one sound pass with
    the best slopes found, never below the CROWN bound of
    its own passes (equal to the crown oracle's up to rounding slack). Stops early once every box is verified,
    when the bounds stop improving, or at the time limit.
    Reads any graph as CROWN does: there, the slopes of every ReLU node for the final
    specification are optimised through :func:`oracles.graph_bounds.backward`, its node
    bounds (CROWN's) fixed.
    """

    name = "alpha-crown"
    _differentiates = True

    def __init__(self, network: Network, *, steps: int = 20, lr: float = 0.3, device: str = "cpu",
                 chunk_size: int = 256, intermediate: str = "crown", time_limit: float | None = None) -> None:
        # reuse=False: a superset's node bounds start CROWN's pass, not this class's _bounds
        super().__init__(network, device=device, chunk_size=chunk_size, intermediate=intermediate,
                         reuse=False, time_limit=time_limit)
        if steps < 0 or not lr > 0:
            raise OracleError("alpha-CROWN needs steps >= 0 and lr > 0")
        self.steps, self.lr = steps, lr

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "steps": self.steps, "lr": self.lr}

    def _bounds(self, lo: torch.Tensor, hi: torch.Tensor, label: int, deadline: float = math.inf) -> torch.Tensor:
        """alpha-CROWN's margins: its steps stop at the time limit, and its reference CROWN pass
        runs whole (``deadline`` is not read: never looser than CROWN)."""
        if self.graph_tensors is not None:
            return self._graph_bounds(lo, hi, label)
        deadline = math.inf if self.time_limit is None else time.perf_counter() + self.time_limit
        settings = AlphaSettings(steps=self.steps, lr=self.lr, intermediate=self.intermediate == "crown",
                                 deadline=deadline)
        spec = margin_spec(self.network.n_classes, label, lo.shape[0], lo.dtype, lo.device)
        return optimize_bounds(self.tensors, lo, hi, spec, settings, reference_method=self.intermediate).final

    def _graph_bounds(self, lo: torch.Tensor, hi: torch.Tensor, label: int) -> torch.Tensor:
        """alpha-CROWN over a graph: the lower slopes of every ReLU node (one per neuron,
        box and specification row) optimised on :mod:`oracles.graph_bounds`' margin
        bounds, its node bounds (CROWN's) fixed; the steps stop at the time limit."""
        from .graph_bounds import backward as graph_backward
        from .graph_bounds import concretize_wide, node_bounds

        gt = self.graph_tensors
        deadline = math.inf if self.time_limit is None else time.perf_counter() + self.time_limit
        last = len(gt.graph.nodes) - 1
        nb = node_bounds(gt, lo, hi, self.intermediate)
        spec = margin_spec(self.network.n_classes, label, lo.shape[0], lo.dtype, lo.device)
        best = concretize_wide(graph_backward(gt, nb, last, spec), lo, hi)
        if self.steps == 0 or not nb.relax or bool((best.min(dim=1).values > 0).all()):
            return best
        m = spec.shape[1]
        inputs = {k: gt.graph.nodes[k].inputs[0] for k in nb.relax}
        alphas = {k: r.lower_slope.unsqueeze(1).expand(-1, m, -1).clone().requires_grad_(True)
                  for k, r in nb.relax.items()}
        opt = Adam(list(alphas.values()), lr=self.lr)
        with torch.enable_grad():
            for _ in range(self.steps):
                relax = {k: relu_relaxation(nb.lower[u].flatten(1), nb.upper[u].flatten(1), alpha=alphas[k])
                         for k, u in inputs.items()}
                value = concretize_wide(graph_backward(gt, replace(nb, relax=relax), last, spec), lo, hi)
                best = torch.maximum(best, value.detach())
                if bool((best.min(dim=1).values > 0).all()) or time.perf_counter() > deadline \
                        or not value.requires_grad:  # (no slope reaches the bound: every step the same)
                    break  # (every step's bounds hold: stopping early only loosens them)
                opt.ascend(value.sum())
                with torch.no_grad():
                    for a in alphas.values():
                        a.clamp_(0.0, 1.0)
        return best
