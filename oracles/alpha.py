"""alpha-CROWN with optimised intermediate bounds (the chain code of :mod:`oracles.bounds`).

CROWN bounds each ReLU from below by ``alpha * z`` with one fixed ``alpha`` in [0, 1]; any
``alpha`` in [0, 1] gives a valid bound, so the slopes can be optimised. Here they are
optimised *everywhere they are used*: every backward pass — the final specification's and
the one of each intermediate (pre-ReLU) bound — has its own slopes, one per start layer,
specification row (a neuron's lower or upper bound, or a specification row), ReLU layer
and neuron. The intermediate bounds are recomputed from their slopes in every step, so the
gradient of the final objective (the sum of the specification's lower bounds) reaches the
slopes of every intermediate pass through the bounds they produce.

What is proven: the Adam iterates only *choose* the slopes (per row, the slopes of the
step where that row's bound was best). The bounds returned come from one pass run after
the optimisation, under ``torch.no_grad``, with those slopes fixed: each layer's bounds
are :func:`~oracles.bounds.backward` and :func:`~oracles.bounds.concretize` — the same
sound concretisation as CROWN's, moved outward by its rounding cover (term magnitudes,
relative slack, :data:`~parallelepipedonn.tolerances.ABS_SLACK`, subnormal cover) —
intersected with the reference bounds (CROWN's and interval bounds, sound too). The final
bound is the larger of that pass's and CROWN's, so it is never looser than CROWN's.
Non-finite numbers prove nothing (``-inf``), exactly as in :mod:`oracles.bounds`.
"""

from __future__ import annotations

import itertools
import math
import time
import weakref
from collections.abc import Sequence
from dataclasses import astuple, dataclass, replace

import torch

from parallelepipedonn.errors import OracleError

from .adam import Adam
from .bounds import (
    NetworkTensors,
    backward,
    check_deadline,
    concretize,
    input_scale,
    intermediate_bounds,
    relu_relaxation,
)

Tensor = torch.Tensor
Bounds = list[tuple[Tensor, Tensor]]

#: The most slopes one optimisation holds (over its boxes, rows and neurons): a larger
#: batch is split (the iterates keep several copies of them, and the backward passes'
#: coefficients are as many).
MAX_SLOPES = 2 ** 24

#: The largest batch whose optimised bounds :func:`optimize_bounds` remembers (its last call's).
REMEMBERED = 32


@dataclass(frozen=True)
class AlphaSettings:
    """How the slopes are optimised: ``steps`` Adam steps (gradient ascent on the sum of the
    specification's bounds) from learning rate ``lr``, multiplied by ``lr_decay`` after each
    step; stop after ``patience`` steps without a row improving by more than
    ``min_gain`` (relative), once every box's bound is above ``stop_above`` (``None``:
    never), or at ``deadline`` (``time.perf_counter()``). ``intermediate``: optimise the
    intermediate bounds' slopes too (else only the final specification's, with CROWN's
    intermediate bounds). ``interruptible``: past ``deadline`` the computation raises
    :class:`~oracles.bounds.BoundsTimedOut` (nothing proven) at its next look at it: before
    each chunk of the reference bounds' rows and before each layer's pass of the steps and
    of the proofs (a layer's pass, all its rows at once, and a step's gradient are not
    split: on a wide net the answer can come that much late). Else the reference and the
    proofs run to their end: the bounds are then CROWN's, or the best slopes' at the last
    step."""

    steps: int = 20
    lr: float = 0.3
    lr_decay: float = 0.98
    patience: int = 10
    min_gain: float = 1e-4
    stop_above: float | None = 0.0
    intermediate: bool = True
    iterate_dtype: torch.dtype | None = torch.float32
    deadline: float = math.inf
    interruptible: bool = False

    def __post_init__(self) -> None:
        if self.steps < 0 or not self.lr > 0 or not 0 < self.lr_decay <= 1 or self.patience < 1:
            raise OracleError("alpha-CROWN needs steps >= 0, lr > 0, 0 < lr_decay <= 1 and patience >= 1")


@dataclass(frozen=True)
class OptimizedBounds:
    """The result of :func:`optimize_bounds`: ``final`` (``(B, m)``), proven lower bounds of
    ``spec @ logits`` on each box; ``intermediate``, proven bounds of every ReLU's input
    (``(B, n_i)`` pairs, within the reference bounds); ``slopes``, the lower ReLU slopes of
    the final specification's pass (``(B, m, n_i)`` per ReLU layer, in [0, 1]), to start
    further optimisations from; ``steps``, the Adam steps taken."""

    final: Tensor
    intermediate: Bounds
    slopes: list[Tensor]
    steps: int


def iterate_tensors(net: NetworkTensors, dtype: torch.dtype) -> NetworkTensors:
    """``net`` rounded to ``dtype`` with its rounding cover's constants kept: for the
    iterates of an optimisation, which choose parameters and prove nothing (every bound
    they lead to is computed again with ``net``)."""
    return net if dtype == net.dtype else net.to(dtype)


def _unstable_rows(bounds: Bounds, layer: int) -> Tensor:
    """Indices of the neurons of ``layer`` unstable in some box (the only ones whose
    bounds change a relaxation)."""
    lo, hi = bounds[layer]
    return ((lo < 0) & (hi > 0)).any(dim=0).nonzero()[:, 0]


def _neuron_spec(n: int, idx: Tensor, batch: int, like: Tensor) -> Tensor:
    """Rows ``e_i`` then ``-e_i`` for ``i`` in ``idx``: ``(batch, 2 len(idx), n)``."""
    eye = torch.eye(n, dtype=like.dtype, device=like.device)[idx]
    return torch.cat([eye, -eye]).expand(batch, 2 * idx.numel(), n)


def _tighten(ref: tuple[Tensor, Tensor], idx: Tensor, values: Tensor,
             straight_through: bool = False) -> tuple[Tensor, Tensor]:
    """The reference bounds, intersected on the neurons ``idx`` with the proven bounds
    ``values`` (lower bounds of ``z_i`` then of ``-z_i``).

    ``straight_through`` (optimisation iterates only, never a reported bound): the value is
    the intersection up to a rounding error, but the gradient reaches ``values`` where the
    reference is the tighter one too (as auto_LiRPA does), so that a bound still behind its
    reference keeps being optimised."""
    m = idx.numel()
    new_lo, new_hi = values[:, :m], -values[:, m:]
    lo_i, hi_i = torch.maximum(new_lo, ref[0][:, idx]), torch.minimum(new_hi, ref[1][:, idx])
    if straight_through:
        lo_i = torch.where(torch.isfinite(new_lo), new_lo + (lo_i - new_lo).detach(), lo_i)
        hi_i = torch.where(torch.isfinite(new_hi), new_hi + (hi_i - new_hi).detach(), hi_i)
    lo, hi = ref[0].clone(), ref[1].clone()
    lo[:, idx], hi[:, idx] = lo_i, hi_i
    return lo, hi


class _Passes:
    """The backward passes of one optimisation: per start layer (each optimised intermediate
    layer ``k`` with its unstable neurons ``rows[k]``, then the final specification, keyed
    ``depth - 1``), its specification and its slopes, one ``(B, rows, n_j)`` tensor per
    ReLU layer ``j`` below it (CROWN's to start with)."""

    def __init__(self, net: NetworkTensors, lower: Tensor, upper: Tensor, spec: Tensor, reference: Bounds,
                 rows: dict[int, Tensor]) -> None:
        self.net, self.lower, self.upper, self.reference, self.rows = net, lower, upper, reference, rows
        self.scale_in = input_scale(lower, upper)
        self.final = net.depth - 1
        self.specs = {k: _neuron_spec(net.weights[k].shape[0], idx, lower.shape[0], lower) for k, idx in rows.items()}
        self.specs[self.final] = spec
        base = [relu_relaxation(lo, hi).lower_slope for lo, hi in reference]
        self.slopes = {k: [base[j].unsqueeze(1).expand(-1, s.shape[1], -1).clone() for j in range(k)]
                       for k, s in self.specs.items()}

    def cast(self, dtype: torch.dtype) -> _Passes:
        """The same passes in ``dtype``, for the optimisation iterates only (they choose
        slopes and prove nothing): the weights rounded to ``dtype``, the rounding cover's
        constants kept."""
        if dtype == self.net.dtype:
            return self
        net = iterate_tensors(self.net, dtype)
        ref = [(lo.to(dtype), hi.to(dtype)) for lo, hi in self.reference]
        return _Passes(net, self.lower.to(dtype), self.upper.to(dtype), self.specs[self.final].to(dtype), ref,
                       self.rows)

    def run(self, slopes: dict[int, list[Tensor]], deadline: float = math.inf) -> tuple[dict[int, Tensor], Bounds]:
        """One bound computation with the given slopes: each pass's row bounds (the final
        specification's keyed ``depth - 1``) and the intermediate bounds used. Each bound is
        the sound concretisation of its pass (see the module docstring). ``deadline``:
        looked at before each pass (:func:`~oracles.bounds.check_deadline`)."""
        bounds, values = list(self.reference[:1]), {}  # none without ReLU (one affine map)
        for k in range(1, self.net.depth - 1):
            if k not in self.rows:
                bounds.append(self.reference[k])
                continue
            check_deadline(deadline)
            values[k] = self._concretize(k, bounds, slopes[k])
            bounds.append(_tighten(self.reference[k], self.rows[k], values[k], torch.is_grad_enabled()))
        check_deadline(deadline)
        values[self.final] = self._concretize(self.final, bounds, slopes[self.final])
        return values, bounds

    def _concretize(self, k: int, bounds: Bounds, slopes: list[Tensor]) -> Tensor:
        relax = [relu_relaxation(lo, hi, alpha=a) for (lo, hi), a in zip(bounds, slopes)]
        return concretize(backward(self.net, self.specs[k], k, relax, self.scale_in,
                                   center=(self.upper + self.lower) / 2), self.lower, self.upper)


def optimize_bounds(net: NetworkTensors, lower: Tensor, upper: Tensor, spec: Tensor,
                    settings: AlphaSettings = AlphaSettings(), reference: Sequence[tuple[Tensor, Tensor]] | None = None,
                    reference_method: str = "crown") -> OptimizedBounds:
    """alpha-CROWN bounds of ``spec @ logits`` (``spec`` of shape ``(B, m, n_classes)``) over
    each box ``[lower, upper]`` (``(B, n)``), with every pass's slopes optimised jointly (see
    the module docstring for what is proven).

    ``reference``: proven bounds of every ReLU's input to stay within (default: CROWN's and
    interval bounds, :func:`~oracles.bounds.intermediate_bounds` with ``reference_method``);
    the neurons they leave unstable get optimised bounds. A batch whose slopes would
    exceed :data:`MAX_SLOPES` numbers is optimised in halves.

    Without ``reference``, the results of the last call that optimised to the end (not
    stopped by the deadline) a batch of at most :data:`REMEMBERED` boxes are remembered,
    keyed by the network's tensors object (shared by a cascade's stages) and rounding
    constants, box, specification rows, settings (but the deadline) and
    ``reference_method``: a batch whose every box is remembered gets those proven bounds
    again without optimising (in a cascade ``alpha-crown+bab``, bab's root is the
    alpha-crown stage's bound of the box, not a second optimisation). A remembered result
    is the proof computed for exactly that question: sound. Only the last call is kept, so
    that a benchmark asking oracles the same boxes one after the other measures each.
    """
    if reference is not None or settings.steps == 0 or lower.shape[0] > REMEMBERED:
        return _optimize_bounds(net, lower, upper, spec, settings, reference, reference_method)
    keys = _keys(net, lower, upper, spec, settings, reference_method)
    rows = [_MEMORY.get(k) for k in keys]
    if all(r is not None for r in rows):
        return OptimizedBounds(torch.stack([r.final for r in rows]),
                               [(torch.stack([r.intermediate[i][0] for r in rows]),
                                 torch.stack([r.intermediate[i][1] for r in rows])) for i in range(len(rows[0].intermediate))],
                               [torch.stack([r.slopes[i] for r in rows]) for i in range(len(rows[0].slopes))],
                               max(r.steps for r in rows))
    out = _optimize_bounds(net, lower, upper, spec, settings, reference, reference_method)
    if time.perf_counter() <= settings.deadline:  # optimised to the end: the answer to remember
        _MEMORY.clear()
        for b, k in enumerate(keys):
            _MEMORY[k] = OptimizedBounds(out.final[b].clone(), [(lo[b].clone(), hi[b].clone()) for lo, hi in out.intermediate],
                                         [s[b].clone() for s in out.slopes], out.steps)
    return out


#: id(net) -> (a weak reference to it, a number no other tensors object gets), once per object
_DIGESTS: dict[int, tuple[weakref.ref, int]] = {}
_TOKENS = itertools.count()


def _digest(net: NetworkTensors) -> int:
    """The identity of the network's tensors object: one number per object, never reused
    (a remembered result is for exactly these tensors). The stages of a cascade share one
    object per network, device and dtype (:meth:`~oracles.bounds.NetworkTensors.of`); a
    sha256 of the tensors took 1.6 s on tllverifybench's N = 64 net."""
    known = _DIGESTS.get(id(net))
    if known is not None and known[0]() is net:
        return known[1]
    key = id(net)
    _DIGESTS[key] = (weakref.ref(net, lambda _: _DIGESTS.pop(key, None)), next(_TOKENS))
    return _DIGESTS[key][1]


#: key -> one box's :class:`OptimizedBounds`: the boxes of the last call remembered (see
#: :func:`optimize_bounds`)
_MEMORY: dict[tuple, OptimizedBounds] = {}


def _keys(net: NetworkTensors, lower: Tensor, upper: Tensor, spec: Tensor, settings: AlphaSettings,
          reference_method: str) -> list[tuple]:
    """Per box, what its optimised bounds depend on, exactly (bytes of every tensor)."""
    common = (_digest(net), net.rel, net.tiny, str(lower.device), str(lower.dtype), str(spec.dtype),
              astuple(replace(settings, deadline=math.inf, interruptible=False)), reference_method)
    lo, hi, sp = (x.detach().cpu().contiguous().numpy() for x in (lower, upper, spec))
    return [(common, lo[b].tobytes(), hi[b].tobytes(), sp[b].shape, sp[b].tobytes()) for b in range(lo.shape[0])]


def _optimize_bounds(net: NetworkTensors, lower: Tensor, upper: Tensor, spec: Tensor,
                    settings: AlphaSettings = AlphaSettings(), reference: Sequence[tuple[Tensor, Tensor]] | None = None,
                    reference_method: str = "crown") -> OptimizedBounds:
    """:func:`optimize_bounds` without its memory (the same arguments, the same proofs)."""
    stop = settings.deadline if settings.interruptible else math.inf  # of the passes that prove
    with torch.no_grad():
        ref = [(lo.detach(), hi.detach()) for lo, hi in
               (reference if reference is not None else
                intermediate_bounds(net, lower, upper, reference_method, deadline=stop))]
        rows = {k: idx for k in range(1, net.depth - 1) if settings.intermediate
                for idx in [_unstable_rows(ref, k)] if idx.numel()}
        widths = [w.shape[0] for w in net.weights[:-1]]
        per_box = sum(2 * idx.numel() * sum(widths[:k]) for k, idx in rows.items()) + spec.shape[1] * sum(widths)
        if lower.shape[0] > 1 and lower.shape[0] * per_box > MAX_SLOPES and settings.steps:
            half = lower.shape[0] // 2
            parts = [_optimize_bounds(net, lower[s], upper[s], spec[s], settings, [(lo[s], hi[s]) for lo, hi in ref])
                     for s in (slice(0, half), slice(half, None))]
            return OptimizedBounds(torch.cat([p.final for p in parts]),
                                   [(torch.cat([a[0] for a in layer]), torch.cat([a[1] for a in layer]))
                                    for layer in zip(*(p.intermediate for p in parts))],
                                   [torch.cat(layer) for layer in zip(*(p.slopes for p in parts))],
                                   max(p.steps for p in parts))
        sound = _Passes(net, lower, upper, spec, ref, rows)
        crown = sound.run(sound.slopes, stop)[0][sound.final]
    # past the deadline already: CROWN's bounds, what one step would end with (its first pass
    # evaluates CROWN's slopes, and then it stops), without the passes of that step
    if settings.steps == 0 or not ref or _done(crown, settings) or time.perf_counter() > settings.deadline:
        return OptimizedBounds(crown, ref, sound.slopes[sound.final], 0)
    work = sound.cast(settings.iterate_dtype) if settings.iterate_dtype else sound
    best = _optimize(work, settings, stop)
    with torch.no_grad():  # the proof: one sound pass with the chosen slopes
        values, bounds = sound.run({k: [s.to(net.dtype) for s in v] for k, v in best.slopes.items()}, stop)
    final = torch.maximum(values[sound.final], crown)
    return OptimizedBounds(final, bounds, [s.to(net.dtype) for s in best.slopes[sound.final]], best.steps)


@dataclass(frozen=True)
class _Choice:
    slopes: dict[int, list[Tensor]]
    steps: int


def _optimize(passes: _Passes, settings: AlphaSettings, stop: float = math.inf) -> _Choice:
    """Adam steps on the passes' slopes; per row (of every pass), the slopes of the step
    where its bound was best. ``stop``: the passes' deadline (:meth:`_Passes.run`)."""
    best = {k: [s.clone() for s in v] for k, v in passes.slopes.items()}
    best_rows: dict[int, Tensor] = {}
    params = [s.requires_grad_(True) for v in passes.slopes.values() for s in v]
    opt = Adam(params, lr=settings.lr)
    stale, taken = 0, 0
    with torch.enable_grad():
        for _ in range(settings.steps + 1):
            values, _ = passes.run(passes.slopes, stop)
            gained = not best_rows
            with torch.no_grad():
                for k, value in values.items():
                    old = best_rows.get(k)
                    if old is None:
                        best_rows[k] = value.detach().clone()
                        continue
                    better = value > old
                    if bool(better.any()):
                        gained = gained or bool((value - old > settings.min_gain * (1 + old.abs())).any())
                        best_rows[k] = torch.where(better, value, old)
                        for kept, now in zip(best[k], passes.slopes[k]):
                            kept.copy_(torch.where(better.unsqueeze(-1), now, kept))
            stale = 0 if gained else stale + 1
            final = values[passes.final]
            if taken == settings.steps or stale >= settings.patience or _done(best_rows[passes.final], settings) \
                    or time.perf_counter() > settings.deadline:
                break
            # a box already above the stopping threshold no longer pulls its slopes
            live = (~_box_done(best_rows[passes.final], settings)).unsqueeze(1) & torch.isfinite(final)
            opt.ascend(torch.where(live, final, torch.zeros_like(final)).sum())
            taken += 1
            with torch.no_grad():
                for p in params:
                    p.clamp_(0.0, 1.0)
            opt.lr *= settings.lr_decay
    return _Choice(best, taken)


def _box_done(best: Tensor, settings: AlphaSettings) -> Tensor:
    if settings.stop_above is None:
        return torch.zeros(best.shape[0], dtype=torch.bool, device=best.device)
    return best.min(dim=1).values > settings.stop_above


def _done(best: Tensor, settings: AlphaSettings) -> bool:
    return bool(_box_done(best, settings).all())
