"""Certify one input: the function behind ``parallelepipedonn certify``."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from oracles.base import Oracle, Verdict
from oracles.registry import accepts_option, make_oracle

from .box import Box, linf_distance_up
from .certificate import Certificate
from .classifier import Classifier
from .errors import ConfigError, InputDataError, NotAChainError, OracleError
from .inputs import as_network_input
from .network import Network
from .search import DEFAULT_SEARCH, Problem, Status, check_oracle, default_oracle, make_search

FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class CertifyConfig:
    """How to certify: which oracle (and its options), which search, to what precision.

    ``oracle=None`` uses the algorithm's default (``crown``; for ``exact``, a complete
    cascade). ``falsifier`` (an oracle name, or ``None``) looks for counterexamples that
    bound the best apothem from above; it never certifies anything. ``dual`` (a dual
    method: ``milp``, ``relaxed``, ...) also computes the dual box of the label in the
    ball of ``dual_radius`` × the certified apothem around the input, whose apothem bounds
    the best one from above too (see :mod:`parallelepipedonn.dual`).
    ``search_time_limit`` (seconds): box searches stop growing their box then and return
    what they have certified so far (see :class:`~parallelepipedonn.search.Problem`).
    ``epsilon``: also answer "is the L-infinity ball of radius ``epsilon`` around the input
    (within the domain) certified?" (see :func:`decide_epsilon`); what the search, its
    oracle and the falsifier leave open is asked of ``epsilon_oracle`` (a complete cascade
    by default; ``None``: nothing more) when the search's oracle is not complete.
    """

    @property
    def oracle_name(self) -> str:
        return self.oracle if self.oracle is not None else default_oracle(self.algorithm)

    oracle: str | None = None
    oracle_options: Mapping[str, Any] = field(default_factory=dict)
    algorithm: str = DEFAULT_SEARCH
    precision: float = 1e-4
    device: str = "cpu"
    falsifier: str | None = "attack"
    falsifier_options: Mapping[str, Any] = field(default_factory=lambda: {"steps": 20, "restarts": 2})
    dual: str | None = None
    dual_radius: float = 2.0
    search_time_limit: float | None = None
    epsilon: float | None = None
    epsilon_oracle: str | None = "crown+alpha-crown+bab"


def _with_device(name: str, options: Mapping[str, Any], device: str) -> dict[str, Any]:
    """``options`` plus ``device`` for oracles that take one (an error if a non-default
    device is asked of an oracle that cannot use it)."""
    opts = dict(options)
    if "device" not in opts:
        if any(accepts_option(part, "device") for part in name.split("+")):
            opts["device"] = device
        elif device != "cpu":
            raise ConfigError(f"oracle {name!r} has no device option (asked for {device!r})")
    return opts


def build_oracles(network: Network, config: CertifyConfig) -> tuple[Oracle, Oracle | None]:
    """The oracle and falsifier that ``config`` names, bound to ``network`` (a graph that
    an oracle cannot read is refused by :func:`~oracles.registry.make_oracle` with an
    :class:`OracleError`, which names the algorithm's default oracle when none was named)."""
    name = config.oracle_name
    try:
        oracle = make_oracle(name, network, **_with_device(name, config.oracle_options, config.device))
    except OracleError as exc:
        if config.oracle is not None:
            raise
        raise OracleError(f"the {config.algorithm} algorithm uses the oracle {name!r} by default: {exc}") from exc
    falsifier = None
    if config.falsifier:
        options = {k: v for k, v in config.falsifier_options.items() if accepts_option(config.falsifier, k)}
        falsifier = make_oracle(config.falsifier, network, **_with_device(config.falsifier, options, config.device))
    return oracle, falsifier


def check_config(network: Network, config: CertifyConfig) -> None:
    """Raises the error :func:`certify` would raise for ``config`` whatever the input (an
    unknown algorithm or oracle, a bad option, an oracle the algorithm cannot use, a bad
    epsilon or epsilon oracle, a bad dual method or radius), before any work."""
    search = make_search(config.algorithm, precision=config.precision)
    oracle, _ = build_oracles(network, config)
    check_oracle(search, oracle)
    check_extras(network, config)


def check_extras(network: Network, config: CertifyConfig, build: bool = True) -> None:
    """The part of :func:`check_config` beyond the search and its oracle: ``epsilon`` and
    its oracle (built when ``build``), the dual's method and radius, and whether the
    relaxed dual can read the network."""
    from .dual import METHODS

    if config.epsilon is not None:
        if not (config.epsilon > 0 and math.isfinite(config.epsilon)):
            raise ConfigError(f"epsilon must be a positive number, got {config.epsilon}")
        if config.epsilon_oracle and build:
            make_oracle(config.epsilon_oracle, network, **_with_device(config.epsilon_oracle, {}, config.device))
    if config.dual is not None:
        if config.dual not in METHODS:
            raise ConfigError(f"unknown dual method {config.dual!r}; available: {', '.join(METHODS)}")
        if not (config.dual_radius > 0 and math.isfinite(config.dual_radius)):
            raise ConfigError(f"the dual radius must be a finite number > 0, got {config.dual_radius}")
        if config.dual == "relaxed":  # CROWN's class extremes read chains: refused before the search, not after
            from oracles.crown import RELAXED_DUAL_INSTEAD

            from .graph import Graph
            from .graph_chain import relu_stages

            if isinstance(network, Graph) and not network.is_chain:
                try:
                    relu_stages(network)
                except NotAChainError as exc:
                    raise ConfigError(f"the relaxed dual (crown's class extremes) reads chain networks (convolutions "
                                      f"and pooling expanded into dense matrices); this model is not one: {exc} — "
                                      f"use {RELAXED_DUAL_INSTEAD}") from exc


def resolve_domain(domain: Box | None, model: Classifier) -> Box:
    """``domain`` (default ``[0, 1]^n``), checked: the model's ``n`` dimensions, finite
    bounds, within the model's :attr:`~parallelepipedonn.classifier.Classifier.input_bound`."""
    n = model.n_inputs
    dom = domain if domain is not None else Box.unit(n)
    if dom.n != n:
        raise ConfigError(f"the domain has {dom.n} dimensions, the network {n} inputs")
    if not (np.isfinite(dom.lower).all() and np.isfinite(dom.upper).all()):
        raise ConfigError("the domain must be bounded (finite lower and upper bounds)")
    model.check_input_range(dom.lower, dom.upper)
    return dom


def counterexample_class(network: Network, point: ArrayLike | None, label: int) -> int | None:
    """The class ``network`` gives a counterexample ``point`` for ``label``: its highest
    logit other than the label's (the prediction there, a tie with the label going to the
    other class); ``None`` without a point."""
    if point is None:
        return None
    logits = network.forward(np.asarray(point, dtype=np.float64).reshape(1, -1))[0].copy()
    logits[label] = -np.inf
    return int(np.argmax(logits))


def within_distance(point: ArrayLike, x: ArrayLike, radius: float) -> bool:
    """Whether ``||point - x||_inf <= radius``, decided exactly (float64 values as rationals)."""
    r = Fraction(float(radius))
    return all(abs(Fraction(float(p)) - Fraction(float(c))) <= r
               for p, c in zip(np.asarray(point, dtype=np.float64).reshape(-1), np.asarray(x, dtype=np.float64).reshape(-1)))


def confirm_in_ball(network: Network, x: ArrayLike, radius: float, domain: Box, label: int,
                    point: ArrayLike | None) -> FloatArray | None:
    """A confirmed counterexample of the ball ``{x' in domain : ||x' - x||_inf <= radius}``
    (exact arithmetic): ``point`` if it lies in the ball and is misclassified, else
    ``point`` clipped into the ball's float64 points if that still is; ``None`` otherwise.
    (Oracles asked about :meth:`Box.outer_cube` may answer with a point one unit in the
    last place outside the exact ball.)"""
    if point is None:
        return None
    p = np.asarray(point, dtype=np.float64).reshape(-1)
    xa = np.asarray(x, dtype=np.float64).reshape(-1)
    if not (domain.contains(p) and within_distance(p, xa, radius)):
        outer = Box.outer_cube(xa, radius, domain)
        lo = np.where(outer.lower > domain.lower, np.nextafter(outer.lower, np.inf), outer.lower)
        hi = np.where(outer.upper < domain.upper, np.nextafter(outer.upper, -np.inf), outer.upper)
        p = np.clip(p, lo, np.maximum(lo, hi))
        if not (domain.contains(p) and within_distance(p, xa, radius)):
            return None
    return p if network.misclassified(p, label)[0] else None


@dataclass(frozen=True)
class EpsilonAnswer:
    """Whether the ball of radius ``epsilon`` around the input (within the domain) is
    certified for the label: ``status`` ``certified`` (proven), ``not-robust`` (a confirmed
    counterexample in the ball: ``counterexample``), or ``unknown``; ``decided_by`` says
    how (``search``: the certified box contains the ball, or the search's counterexample
    lies in it; else the oracle or the falsifier asked about the ball itself)."""

    epsilon: float
    status: Status
    reason: str
    decided_by: str | None
    counterexample: FloatArray | None = None
    timed_out: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"epsilon": self.epsilon, "status": self.status.value, "reason": self.reason,
                "decided_by": self.decided_by, "timed_out": self.timed_out}


def decide_epsilon(network: Network, x: FloatArray, label: int, domain: Box, epsilon: float, *,
                   box: Box | None, counterexample: FloatArray | None, oracle: Oracle, falsifier: Oracle | None,
                   complete: Callable[[], Oracle | None] | None = None,
                   time_limit: float | None = None) -> EpsilonAnswer:
    """Is the ball ``{x' in domain : ||x' - x||_inf <= epsilon}`` certified for ``label``?
    From what a search found first (its certified ``box`` contains the ball — the ball
    rounded outward, :meth:`Box.outer_cube` —, or its confirmed ``counterexample`` lies in
    the ball, exactly), else by asking ``oracle`` about the ball, then ``falsifier``, then
    the oracle ``complete()`` returns (built only if needed; ``None``: none).
    Only a proof answers ``certified``; only a confirmed counterexample, ``not-robust``."""
    if not (epsilon > 0 and math.isfinite(epsilon)):
        raise ConfigError(f"epsilon must be a positive number, got {epsilon}")
    ball = Box.outer_cube(x, epsilon, domain)
    if box is not None and box.contains_box(ball):
        return EpsilonAnswer(epsilon, Status.CERTIFIED, "the certified box contains the ball", "search")
    if counterexample is not None and domain.contains(counterexample) and \
            within_distance(counterexample, x, epsilon) and network.misclassified(counterexample, label)[0]:
        return EpsilonAnswer(epsilon, Status.NOT_ROBUST, "the search's counterexample lies in the ball", "search",
                             np.asarray(counterexample, dtype=np.float64))
    reasons, timed_out = [], False
    for k, who in enumerate((oracle, falsifier, complete)):
        if k == 2 and who is not None:
            try:
                who = who()  # type: ignore[operator]
            except OracleError as exc:  # e.g. a residual graph, which the complete oracles do not read
                reasons.append(str(exc))
                continue
        if who is None:
            continue
        with who.time_limited(time_limit):
            answer = who.verify_box(ball.lower, ball.upper, label)
        if answer.verdict is Verdict.VERIFIED:
            return EpsilonAnswer(epsilon, Status.CERTIFIED, f"{who.name} verified the ball", who.name)
        if answer.verdict is Verdict.FALSIFIED:
            cex = confirm_in_ball(network, x, epsilon, domain, label, answer.counterexample)
            if cex is not None:
                return EpsilonAnswer(epsilon, Status.NOT_ROBUST, f"{who.name} found a counterexample in the ball",
                                     who.name, cex)
            reasons.append(f"{who.name}: a counterexample just outside the ball")
        else:
            reasons.append(f"{who.name}: {answer.reason or 'unknown'}")
            timed_out = timed_out or answer.timed_out
    return EpsilonAnswer(epsilon, Status.UNKNOWN, "; ".join(reasons) or "nothing decided", None,
                         timed_out=timed_out)


def certify(network: Network, x: ArrayLike, label: int | None = None, *, domain: Box | None = None,
            config: CertifyConfig | None = None, oracle: Oracle | None = None, falsifier: Oracle | None = None,
            model_path: str | None = None, model_sha256: str | None = None,
            true_label: int | None = None, progress: Callable[[str], None] | None = None) -> Certificate:
    """Certify ``x`` for ``label`` (default: the network's prediction at ``x``).

    ``domain`` defaults to ``[0, 1]^n``. ``oracle``/``falsifier`` instances, if given,
    are used instead of the ones ``config`` names (to reuse them across inputs).
    ``progress`` (optional) is called with a short status line as the search advances.
    """
    start = time.perf_counter()
    network.check_classifier("certify")
    config = config or CertifyConfig()
    dom = resolve_domain(domain, network)
    try:
        values = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputDataError(f"the input is not an array of numbers: {exc}") from exc
    xa = as_network_input(values, network.input_shape, dom)
    logits = network.forward(xa)[0]
    predicted = int(np.argmax(logits))
    label = predicted if label is None else network.check_label(label)
    if model_path is not None and model_sha256 is None:
        model_sha256 = network.model_digest(model_path)
    search = make_search(config.algorithm, precision=config.precision)
    if oracle is None:
        oracle, built_falsifier = build_oracles(network, config)
        falsifier = falsifier if falsifier is not None else built_falsifier
    check_oracle(search, oracle)
    check_extras(network, config, build=False)  # a bad epsilon or dual before the search, not after it
    common: dict[str, Any] = dict(
        label=label, predicted_label=predicted, input=xa, input_shape=network.input_shape, domain=dom,
        oracle=oracle.name, oracle_settings=oracle.settings(), algorithm=search.name,
        algorithm_settings=search.settings(), model_path=model_path, model_sha256=model_sha256,
        network=network.describe(), true_label=true_label, falsifier=falsifier.name if falsifier else None)
    if network.misclassified(xa, label)[0]:
        ties = [j for j in range(network.n_classes) if j != label and logits[j] >= logits[label]]
        if predicted != label:
            reason = f"the network classifies the input as {predicted}, not {label}"
        else:
            reason = (f"tie at the input: class {label} does not strictly beat class(es) {ties}" if ties else
                      f"tie at the input: class {label} does not strictly beat every other class in exact arithmetic")
        eps = None if config.epsilon is None else EpsilonAnswer(
            config.epsilon, Status.NOT_ROBUST, "the input itself is not robust", "search", xa).to_dict()
        return Certificate(status=Status.NOT_ROBUST, box=None, apothem_upper_bound=0.0, oracle_calls=0, rounds=0,
                           seconds=time.perf_counter() - start, reason=reason, counterexample=xa,
                           counterexample_class=counterexample_class(network, xa, label), epsilon=eps, **common)
    deadline = start + config.search_time_limit if config.search_time_limit is not None else None
    # the searches check the deadline between oracle calls; no one call may take more than the whole budget
    with oracle.time_limited(config.search_time_limit), \
            (falsifier.time_limited(config.search_time_limit) if falsifier else contextlib.nullcontext()):
        result = search.run(Problem(xa, label, dom, deadline=deadline, progress=progress), oracle, falsifier)
    upper = result.apothem_upper_bound
    dual_info = None
    if config.dual and result.box is not None:
        from .dual import dual_box, scaled_radius

        apothem = result.box.apothem(xa, dom)
        radius = scaled_radius(config.dual_radius, apothem, xa, dom) if apothem > 0 else config.dual_radius
        dual = dual_box(network, label, x=xa, radius=radius, domain=dom, method=config.dual, workers=1,
                        device=config.device)
        bound = dual.apothem_bound(xa, dom)
        dual_info = {"method": config.dual, "radius": radius, "apothem_bound": bound,
                     "covers_ball": dual.covers_region, "exact_bounds": dual.exact_count, "seconds": dual.seconds}
        if bound is not None:
            upper = min(upper, bound)
    cex, eps = result.counterexample, None
    if config.epsilon is not None:
        def complete() -> Oracle | None:
            name = config.epsilon_oracle
            if name is None or oracle.complete:
                return None
            return make_oracle(name, network, **_with_device(name, {}, config.device))

        answer = decide_epsilon(network, xa, label, dom, config.epsilon, box=result.box, counterexample=cex,
                                oracle=oracle, falsifier=falsifier, complete=complete,
                                time_limit=None if deadline is None else max(0.01, deadline - time.perf_counter()))
        eps = answer.to_dict()
        if answer.counterexample is not None:  # a counterexample in the ball: maybe closer than the search's
            d = linf_distance_up(answer.counterexample, xa)
            if d < upper:
                upper, cex = d, answer.counterexample
    return Certificate(
        status=result.status, box=result.box, apothem_upper_bound=upper if np.isfinite(upper) else None,
        oracle_calls=result.oracle_calls, rounds=result.rounds, falsifier_calls=result.falsifier_calls,
        seconds=time.perf_counter() - start, reason=result.reason, counterexample=cex,
        counterexample_class=counterexample_class(network, cex, label),
        dual=dual_info, exact=result.exact, epsilon=eps, **common)
