"""Dual certifications: a box containing every input of a region that the network
assigns to a class.

For a label ``c`` and a region ``N`` (the domain, or the L-infinity ball of radius ``R``
around an input ``x``, within the domain), the dual box contains
``R_c = {x' in D ∩ N : logit_c(x') >= logit_j(x') for all j}`` (ties included, so it also
contains every input the network assigns to ``c``). Any certification of an input of
class ``c`` inside ``N`` lies inside it — so the dual box bounds what certifications can
reach: the apothem of the dual box around ``x`` bounds the best apothem of ``x`` (when
it is smaller than ``R``).

Methods (all sound outer boxes; the exact one is tight up to the solver's proof margin):

* ``milp`` — each coordinate's min and max over ``R_c`` (``2n`` problems: witnesses
  first, then MILPs with HiGHS in worker processes);
* ``relaxed`` — bound propagation over the class region (CROWN), fast, never tighter;
* ``complete-bu`` — the original system's complete bottom-up: grow a box by witnesses of
  the class region outside it until the oracle proves there is none;
* ``complete-cubic`` — the original system's complete cubic dichotomic: the smallest cube
  around ``x`` (within ``D ∩ N``) outside which the class region has no point.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from oracles.base import RegionVerdict

from ._version import __version__
from .box import Box
from .certificate import parse_stored, read_json_object
from .certify import resolve_domain
from .errors import ConfigError
from .inputs import as_network_input
from .io_utils import atomic_write_bytes
from .tolerances import PROOF_MARGIN

if TYPE_CHECKING:
    from oracles.milp import MilpOracle

    from .network import Network

FloatArray = NDArray[np.float64]
METHODS = ("milp", "relaxed", "complete-bu", "complete-cubic")
FORMAT_NAME = "parallelepipedonn-dual"
FORMAT_VERSION = 1


@dataclass(frozen=True, eq=False)
class DualBox:
    """A box containing every point of ``region`` classified ``label`` (``box is None``:
    proven that there is none). ``exact_lower``/``exact_upper`` mark the bounds attained
    by a point of the class region (up to the proof margin)."""

    label: int
    region: Box
    box: Box | None
    exact_lower: NDArray[np.bool_]
    exact_upper: NDArray[np.bool_]
    method: str
    seconds: float
    center: FloatArray | None = None
    radius: float | None = None
    details: dict[str, Any] = field(default_factory=dict)
    witnesses: FloatArray = field(default_factory=lambda: np.zeros((0, 0)))
    domain: Box | None = None
    network: str = ""
    model_path: str | None = None
    model_sha256: str | None = None
    tool_version: str = __version__
    created: str = field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))

    @property
    def exact_count(self) -> int:
        """How many of the ``2n`` bounds are exact."""
        return int(self.exact_lower.sum() + self.exact_upper.sum())

    @property
    def covers_region(self) -> bool:
        return self.box is not None and self.box == self.region

    def min_edge(self) -> float | None:
        return None if self.box is None else self.box.min_edge()

    def log_volume(self) -> float | None:
        return None if self.box is None else self.box.log_volume()

    def apothem_bound(self, x: ArrayLike, domain: Box) -> float | None:
        """An upper bound of the best apothem of any certification of ``x`` for ``label``,
        implied by this dual box (``None`` if it implies none): every such certification's
        cube ``{x' in D : ||x' - x|| <= a}``, when ``a < radius``, lies in the class
        region inside ``N``, hence in the dual box."""
        xa = np.asarray(x, dtype=np.float64).reshape(-1)
        if self.center is not None and not np.array_equal(self.center, xa):
            return None  # a restricted dual speaks only about its own centre
        if self.box is None or not self.box.contains(xa):
            return 0.0  # x itself is not in the class: no certification has a positive apothem
        # only faces strictly inside the region constrain: a face on the region's boundary
        # (the domain's, or the ball's) says nothing below the radius
        a = self.box.apothem(xa, self.region)
        return None if math.isinf(a) else a

    def to_dict(self) -> dict[str, Any]:
        box, dom = self.box, self.domain
        return {
            "format": FORMAT_NAME, "format_version": FORMAT_VERSION, "tool": "parallelepipedonn",
            "tool_version": self.tool_version, "created": self.created, "model_path": self.model_path,
            "model_sha256": self.model_sha256, "network": self.network,
            "domain": None if dom is None else {"lower": dom.lower.tolist(), "upper": dom.upper.tolist()},
            "label": self.label, "method": self.method, "seconds": self.seconds, "empty": box is None,
            "center": None if self.center is None else self.center.tolist(), "radius": self.radius,
            "region": {"lower": self.region.lower.tolist(), "upper": self.region.upper.tolist()},
            "lower": None if box is None else box.lower.tolist(), "upper": None if box is None else box.upper.tolist(),
            "exact_lower": self.exact_lower.tolist(), "exact_upper": self.exact_upper.tolist(),
            "exact_bounds": self.exact_count, "min_edge": self.min_edge(),
            "log_volume": None if box is None or math.isinf(box.log_volume()) else box.log_volume(),
            "covers_region": self.covers_region, "details": self.details,
        }

    def save(self, path: str | Path) -> None:
        """Write the dual box as JSON, atomically."""
        atomic_write_bytes(Path(path), (json.dumps(self.to_dict(), indent=1, allow_nan=False) + "\n").encode())

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DualBox:
        """The dual box a :meth:`to_dict` (JSON) describes (witnesses are not stored)."""
        def build(d: dict[str, Any]) -> DualBox:
            region = Box(d["region"]["lower"], d["region"]["upper"])
            dom = d.get("domain")
            box = None if d["lower"] is None else Box(d["lower"], d["upper"])
            center = d.get("center")
            return cls(
                label=int(d["label"]), region=region, box=box, exact_lower=np.asarray(d["exact_lower"], dtype=bool),
                exact_upper=np.asarray(d["exact_upper"], dtype=bool), method=str(d["method"]),
                seconds=float(d["seconds"]), center=None if center is None else np.asarray(center, dtype=np.float64),
                radius=None if d.get("radius") is None else float(d["radius"]), details=d.get("details") or {},
                domain=None if dom is None else Box(dom["lower"], dom["upper"]), network=d.get("network", ""),
                model_path=d.get("model_path"), model_sha256=d.get("model_sha256"),
                tool_version=d.get("tool_version", ""), created=d.get("created", ""))

        return parse_stored(d, FORMAT_NAME, FORMAT_VERSION, "dual box", build)

    @classmethod
    def load(cls, path: str | Path) -> DualBox:
        return cls.from_dict(read_json_object(path, "dual box"))


def scaled_radius(k: float, apothem: float, x: ArrayLike, domain: Box) -> float:
    """``k`` times a certified ``apothem`` (the radius of ``--radius Kx`` and of certify's
    ``--dual-radius K``); an infinite apothem (the whole domain certified) counts as the
    farthest distance from ``x`` to a face of the domain, whose ball is the domain."""
    if not (apothem > 0):
        raise ConfigError(f"no positive certified apothem to scale the radius by (got {apothem})")
    if math.isinf(apothem):
        xa = np.asarray(x, dtype=np.float64).reshape(-1)
        apothem = float(np.max(np.maximum(xa - domain.lower, domain.upper - xa)))
    radius = k * apothem
    if not (radius > 0 and math.isfinite(radius)):
        raise ConfigError(f"{k:g} times the apothem {apothem:g} is no finite positive radius")
    return radius


def dual_region(network: Network, domain: Box | None = None, x: ArrayLike | None = None,
                radius: float | None = None) -> tuple[Box, FloatArray | None]:
    """``D ∩ N``: the domain, or its intersection with the cube of ``radius`` around ``x``
    (the domain checked as :func:`~parallelepipedonn.certify.resolve_domain` checks it)."""
    dom = resolve_domain(domain, network)
    if (x is None) != (radius is None):
        raise ConfigError("a restricted dual needs both an input and a radius")
    if x is None:
        return dom, None
    if not (radius > 0 and math.isfinite(radius)):
        raise ConfigError(f"the radius must be a finite number > 0, got {radius}")
    xa = as_network_input(np.asarray(x, dtype=np.float64), network.input_shape, dom)
    return Box.cube(xa, radius, dom), xa


def dual_box(network: Network, label: int, *, x: ArrayLike | None = None, radius: float | None = None,
             domain: Box | None = None, method: str = "milp", candidates: ArrayLike = (), workers: int = 2,
             time_limit: float | None = 60.0, precision: float = 1e-3,
             progress: Callable[[int], None] | None = None, model_path: str | None = None,
             total_time_limit: float | None = None, device: str = "cpu") -> DualBox:
    """The dual box of ``label`` over the domain, or over the ball of ``radius`` around
    ``x`` (see module docstring). ``candidates`` (e.g. training images of that class) can
    spare MILPs: those that are in the class and the region attain their coordinates.
    ``precision`` is the radius precision of ``complete-cubic``; ``time_limit`` is per
    solver call; ``total_time_limit`` (the complete methods) bounds the whole computation:
    once it has passed, the box proven so far is returned (for ``complete-bu``, whose
    intermediate boxes are not proven, the region itself). ``model_path`` (the network's
    file) is recorded with its sha256. ``device``: the torch device of the attack that finds
    class points and of ``relaxed``'s bound propagation (the MILPs run on the CPU)."""
    if method not in METHODS:
        raise ConfigError(f"unknown dual method {method!r}; available: {', '.join(METHODS)}")
    network.check_classifier("a dual box")
    label = network.check_label(label)
    region, center = dual_region(network, domain, x, radius)
    start = time.perf_counter()
    n = network.n_inputs
    pts = np.asarray(candidates, dtype=np.float64).reshape(-1, n) if len(candidates) else np.zeros((0, n))
    if center is not None:
        pts = np.concatenate([center[None], pts])
    from oracles.attack import AttackOracle
    from oracles.crown import CrownOracle

    attack = AttackOracle(network, seed=0, device=device)
    pts = np.concatenate([pts, attack.class_points(region.lower, region.upper, label)])
    if method in ("milp", "relaxed"):
        if method == "milp":
            from oracles.milp import MilpOracle  # pyomo/HiGHS: only for the MILP methods

            oracle = MilpOracle(network, time_limit=time_limit)
        else:
            oracle = CrownOracle(network, device=device)
        cb = oracle.class_extremes(label, region, pts, workers=workers, progress=progress)
        details = {"milps": cb.milps, "timeouts": cb.timeouts, "witnesses": len(cb.witnesses)}
        bridge = oracle.bridge
        box = None if cb.empty else Box(cb.lower, cb.upper)
        exact_lo, exact_hi = cb.exact_lower, cb.exact_upper
        witnesses = cb.witnesses
    else:
        from oracles.milp import MilpOracle

        milp = MilpOracle(network, time_limit=time_limit)
        run = _complete_bottom_up if method == "complete-bu" else _complete_cubic
        deadline = None if total_time_limit is None else start + total_time_limit
        box, details = run(network, milp, label, region, pts, center, precision, deadline)
        bridge = milp.bridge
        witnesses = _witness_hull(network, label, region, pts)
        exact_lo = exact_hi = np.zeros(n, bool)
        if box is not None and len(witnesses):  # exact: attained by a class point (on a face the region bounds)
            exact_lo, exact_hi = (witnesses <= box.lower).any(axis=0), (witnesses >= box.upper).any(axis=0)
    if bridge is not None:  # a graph, expanded into the chain the oracle reads (see oracles.chain)
        details["bridge"] = bridge
    return DualBox(label, region, box, np.asarray(exact_lo), np.asarray(exact_hi), method,
                   time.perf_counter() - start, center, radius, details, witnesses,
                   domain=domain if domain is not None else Box.unit(n), network=network.describe(),
                   model_path=model_path, model_sha256=network.model_digest(model_path))


def _witness_hull(network: Network, label: int, region: Box, pts: FloatArray) -> FloatArray:
    inside = pts[region.contains_points(pts)] if len(pts) else pts
    return inside[network.class_points(inside, label)] if len(inside) else inside  # exact near ties


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.perf_counter())


def _complete_bottom_up(network: Network, milp: MilpOracle, label: int, region: Box, pts: FloatArray,
                        center: FloatArray | None, precision: float,
                        deadline: float | None = None) -> tuple[Box | None, dict]:
    """Grow the hull of known class points by each witness outside it, until the oracle
    proves no class point lies outside it (by more than the proof margin); past the
    ``deadline``, the region itself (the hull grown so far is not proven)."""
    witnesses = _witness_hull(network, label, region, pts)
    queries = 0
    if not len(witnesses):
        return region, {"queries": 0, "note": "no class point found to start from: the region itself"}
    lo, hi = witnesses.min(axis=0), witnesses.max(axis=0)
    while True:
        if deadline is not None and time.perf_counter() >= deadline:
            return region, {"queries": queries, "timeouts": 1, "note": "time limit: the region itself"}
        queries += 1
        with milp.time_limited(_remaining(deadline)):
            ans = milp.class_region(lo, hi, label, region)
        if ans.verdict is RegionVerdict.NONE:
            return Box(np.maximum(lo - PROOF_MARGIN, region.lower), np.minimum(hi + PROOF_MARGIN, region.upper)), \
                {"queries": queries}
        if ans.verdict is not RegionVerdict.WITNESS:
            late = (deadline is not None and time.perf_counter() >= deadline) or "time limit" in (ans.reason or "")
            return region, {"queries": queries, **({"timeouts": 1} if late else {}),
                            "note": f"undecided ({ans.reason}): the region itself"}
        lo, hi = np.minimum(lo, ans.witness), np.maximum(hi, ans.witness)


def _complete_cubic(network: Network, milp: MilpOracle, label: int, region: Box, pts: FloatArray,
                    center: FloatArray | None, precision: float,
                    deadline: float | None = None) -> tuple[Box | None, dict]:
    """Bisection on the radius ``r`` of the cube around the centre (within the region):
    the smallest ``r`` (to ``precision``) such that the oracle proves no class point lies
    outside the cube; past the ``deadline`` (or on an undecided query), the smallest cube
    proven so far."""
    c = center if center is not None else region.center
    witnesses = _witness_hull(network, label, region, pts)
    lo = float(np.abs(witnesses - c).max()) if len(witnesses) else 0.0
    hi = float(np.max(np.maximum(c - region.lower, region.upper - c)))
    queries = 0
    while hi - lo > precision:
        if deadline is not None and time.perf_counter() >= deadline:
            return Box.cube(c, hi + PROOF_MARGIN, region), {"queries": queries, "timeouts": 1, "radius": hi,
                                                            "note": "time limit"}
        mid = (lo + hi) / 2
        cube = Box.cube(c, mid, region)
        queries += 1
        with milp.time_limited(_remaining(deadline)):
            ans = milp.class_region(cube.lower, cube.upper, label, region)
        if ans.verdict is RegionVerdict.NONE:
            hi = mid
        elif ans.verdict is RegionVerdict.WITNESS:
            lo = max(mid, float(np.abs(ans.witness - c).max()))
        else:  # a proven radius keeps its proof margin, as below
            return Box.cube(c, hi + PROOF_MARGIN, region), {"queries": queries, "radius": hi,
                                                            "note": f"undecided at radius {mid:.4g}"}
    return Box.cube(c, hi + PROOF_MARGIN, region), {"queries": queries, "radius": hi}


