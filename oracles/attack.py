"""PGD with random restarts inside each box: FALSIFIED (confirmed) or UNKNOWN, never VERIFIED."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from parallelepipedonn.errors import OracleError
from parallelepipedonn.network import Network

from .base import Answer, FloatArray, Oracle, Verdict
from .crown import resolve_device


class AttackOracle(Oracle):
    """Projected gradient descent on the margin ``logit_c - max_{j != c} logit_j``.

    Starts from the box centre, the best corner of a first-order (FGSM-like) step and
    ``restarts`` uniform random points; takes ``steps`` signed-gradient steps of a size
    that decays from half the box width, a box's points stopping once one of them is
    confirmed misclassified (the box is then falsified), and every point once the call's
    time limit has passed (the points evaluated so far count). Each candidate is re-checked by
    the base class with a float64 forward pass of the IR. Deterministic for a given
    ``seed``.

    ``dtype``: the precision of the search (``"float64"``, ``"float32"``, or ``"auto"``:
    float32 on a graph that is not a chain — convolutions, residual connections, where a
    float64 convolution costs 3-4x a float32 one on CPU — float64 otherwise). Only the
    search runs in it: every candidate is moved into its box in float64 and confirmed as
    above, so a float32 search changes which points are found, never what is proven.
    """

    name = "attack"
    sound = True  # it never answers VERIFIED
    complete = False
    batched = True
    queries = frozenset({"verify"})
    reads_graphs = True  # a graph runs as its torch module (Graph.to_torch)

    def __init__(self, network: Network, *, steps: int = 40, restarts: int = 8, seed: int = 0,
                 device: str = "cpu", dtype: str = "auto", time_limit: float | None = None) -> None:
        super().__init__(network, time_limit=time_limit)
        if steps < 0 or restarts < 0:
            raise OracleError("steps and restarts must be >= 0")
        if dtype not in ("auto", "float64", "float32"):
            raise OracleError(f"dtype must be auto, float64 or float32, not {dtype!r}")
        if dtype == "auto":
            dtype = "float64" if isinstance(network, Network) or network.as_network() is not None else "float32"
        self.steps, self.restarts, self.seed, self.dtype = steps, restarts, seed, dtype
        self._dtype = torch.float64 if dtype == "float64" else torch.float32
        self.device = resolve_device(device)
        # a chain's maps' tensors shared with the other oracles' (a property's reductions keep them)
        self.module = network.to_torch(self._dtype, self.device, shared=True) if isinstance(network, Network) \
            else network.to_torch(self._dtype, self.device)
        self._generator = torch.Generator(device="cpu").manual_seed(seed)

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "steps": self.steps, "restarts": self.restarts, "seed": self.seed,
                "device": str(self.device), "dtype": self.dtype}

    def _margins(self, x: torch.Tensor, label: int) -> torch.Tensor:
        logits = self.module(x)
        others = torch.cat([logits[:, :label], logits[:, label + 1:]], dim=1)
        return logits[:, label] - others.max(dim=1).values

    def search(self, lower: FloatArray, upper: FloatArray, label: int,
               starts: FloatArray | None = None, deadline: float = math.inf) -> tuple[FloatArray, FloatArray]:
        """Best point found in each box and its float64 margin (not yet confirmed).

        ``starts`` (optional, one point per box, projected into it) replaces the box centre
        as a starting point — e.g. a known counterexample of a larger box. ``deadline`` (a
        :func:`time.perf_counter` reading): no step is taken after it (the starting points
        are evaluated whatever it is)."""
        points, margins, _ = self._search(lower, upper, label, starts, deadline)
        return points, margins

    @torch.inference_mode(False)  # gradient steps, whatever the caller's grad mode
    @torch.enable_grad()
    def _search(self, lower: FloatArray, upper: FloatArray, label: int, starts: FloatArray | None,
                deadline: float) -> tuple[FloatArray, FloatArray, bool]:
        """:meth:`search`, and whether ``deadline`` cut it short (steps left untaken)."""
        bsz, n = lower.shape
        if bsz == 0:
            return np.empty((0, n)), np.empty(0), False
        lo = torch.tensor(lower, dtype=self._dtype, device=self.device)
        hi = torch.tensor(upper, dtype=self._dtype, device=self.device)
        width = hi - lo
        k = self.restarts + 2
        rand = torch.rand((self.restarts, bsz, n), generator=self._generator, dtype=torch.float64)
        rand = rand.to(self.device, self._dtype)
        center = (lo + hi) / 2
        first = center if starts is None else torch.minimum(torch.maximum(
            torch.tensor(starts, dtype=self._dtype, device=self.device), lo), hi)
        x = torch.cat([first[None], center[None], lo + rand * width]).reshape(k * bsz, n)
        lo_k, hi_k, width_k = (t.repeat(k, 1) for t in (lo, hi, width))
        best_x, best_m = x.detach().clone(), torch.full((k * bsz,), float("inf"), dtype=self._dtype,
                                                         device=self.device)
        live: torch.Tensor | None = None  # the elements still stepping (None: all)
        done = np.zeros(bsz, dtype=bool)  # boxes whose best point is a confirmed counterexample
        tried = np.full(bsz, np.inf)  # each box's best margin when last checked
        cut = False
        for step in range(self.steps + 1):
            xs = (x if live is None else x.index_select(0, live)).detach().requires_grad_(True)
            m = self._margins(xs, label)
            if live is None:
                better = m.detach() < best_m
                best_m = torch.where(better, m.detach(), best_m)
                best_x = torch.where(better[:, None], xs.detach(), best_x)
            else:
                old_m, old_x = best_m.index_select(0, live), best_x.index_select(0, live)
                better = m.detach() < old_m
                best_m.index_copy_(0, live, torch.where(better, m.detach(), old_m))
                best_x.index_copy_(0, live, torch.where(better[:, None], xs.detach(), old_x))
            if step == self.steps:
                break
            if time.perf_counter() >= deadline:
                cut = True
                break
            (grad,) = torch.autograd.grad(m.sum(), xs)
            with torch.no_grad():
                lo_s, hi_s, width_s = (t if live is None else t.index_select(0, live) for t in (lo_k, hi_k, width_k))
                if step == 0:  # the first-order corner for the second copy of the centre
                    pos = torch.arange(k * bsz, device=self.device) if live is None else live
                    new = torch.where((pos // bsz == 1)[:, None], torch.where(grad > 0, lo_s, hi_s),
                                      xs - 0.5 * width_s * grad.sign())
                else:
                    size = 0.5 * width_s * (1 - step / self.steps) + 1e-3 * width_s
                    new = xs - size * grad.sign()
                new = torch.minimum(torch.maximum(new, lo_s), hi_s)
                x = new if live is None else x.index_copy(0, live, new)
            live = self._retire(best_x, best_m, lower, upper, label, done, tried, live)
            if live is not None and live.numel() == 0:
                break
        best_m = best_m.reshape(k, bsz)
        idx = best_m.argmin(dim=0)
        points = best_x.reshape(k, bsz, n)[idx, torch.arange(bsz)]
        if self.dtype == "float64":
            return points.cpu().numpy(), best_m.min(dim=0).values.cpu().numpy(), cut
        # a lower precision's points, moved into their boxes, with their float64 margins
        out = np.clip(points.to(torch.float64).cpu().numpy(), lower, upper)
        return out, self.network.margins(out, label), cut

    def _retire(self, best_x: torch.Tensor, best_m: torch.Tensor, lower: FloatArray, upper: FloatArray, label: int,
                done: np.ndarray, tried: np.ndarray, live: torch.Tensor | None) -> torch.Tensor | None:
        """The elements to step on: those of the boxes not ``done``. A box is done (``done``
        updated in place) once its best point's margin is negative in the search's dtype
        and that point, moved into the box, is confirmed misclassified (the box's answer is
        then settled: further steps would only change which counterexample it returns); a
        box is checked again only when its best margin fell since (``tried``, in place)."""
        bsz = len(lower)
        k = best_m.numel() // bsz
        margins = best_m.reshape(k, bsz)
        lowest = margins.min(dim=0).values.to(torch.float64).cpu().numpy()
        new = ~done & (lowest < 0) & (lowest < tried)
        if not new.any():
            return live
        boxes = np.flatnonzero(new)
        tried[boxes] = lowest[boxes]
        copy = margins[:, boxes].argmin(dim=0)
        points = best_x.reshape(k, bsz, -1)[copy, torch.as_tensor(boxes, device=best_x.device)]
        points = np.clip(points.to(torch.float64).cpu().numpy(), lower[boxes], upper[boxes])
        confirmed = self.network.misclassified(points, label)  # as the answer's counterexample is rechecked
        if not confirmed.any():
            return live
        done[boxes[confirmed]] = True
        keep = np.flatnonzero(~np.tile(done, k))
        return torch.as_tensor(keep, device=best_x.device)

    def _verify(self, lower: FloatArray, upper: FloatArray, label: int) -> Sequence[Answer]:
        deadline = math.inf if self.time_limit is None else time.perf_counter() + self.time_limit
        points, margins, cut = self._search(lower, upper, label, None, deadline)
        points = np.clip(points, lower, upper)
        # a search its time limit cut short says so (a box it falsified is answered all the same)
        ended = f" in its time limit ({self.time_limit:.3g} s)" if cut else ""
        return [Answer(Verdict.FALSIFIED, counterexample=p, reason="PGD") if m <= 0
                else Answer(Verdict.UNKNOWN, timed_out=cut,
                            reason=f"no counterexample found{ended} (best margin {m:.3g})")
                for p, m in zip(points, margins)]

    @torch.inference_mode(False)  # gradient steps, whatever the caller's grad mode
    @torch.enable_grad()
    def class_points(self, lower: FloatArray, upper: FloatArray, label: int, count: int = 64,
                     steps: int = 30) -> FloatArray:
        """Points of the box that the network classifies ``label`` (ties included, checked
        by a forward pass, exactly near ties): gradient ascent on the margin from ``count`` random
        starts. Possibly none."""
        lo = torch.tensor(lower, dtype=self._dtype, device=self.device)
        hi = torch.tensor(upper, dtype=self._dtype, device=self.device)
        rand = torch.rand((count, lo.numel()), generator=self._generator, dtype=torch.float64)
        rand = rand.to(self.device, self._dtype)
        x = lo + rand * (hi - lo)
        for step in range(steps):
            x = x.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(self._margins(x, label).sum(), x)
            with torch.no_grad():
                x = torch.minimum(torch.maximum(x + 0.25 * (hi - lo) * (1 - step / steps) * grad.sign(), lo), hi)
        points = np.clip(x.detach().to(torch.float64).cpu().numpy(), lower, upper)
        return points[self.network.class_points(points, label)]
