"""Certify one input: the function behind ``parallelepipedonn certify``."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from oracles.base import Oracle
from oracles.registry import accepts_option, make_oracle

from .box import Box
from .certificate import Certificate
from .errors import ConfigError, InputDataError, OracleError
from .inputs import as_network_input
from .io_utils import sha256_file
from .network import Network
from .search import DEFAULT_SEARCH, Problem, Status, default_oracle, make_search


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


def resolve_domain(domain: Box | None, n: int) -> Box:
    """``domain`` (default ``[0, 1]^n``), checked: ``n`` dimensions, finite bounds."""
    dom = domain if domain is not None else Box.unit(n)
    if dom.n != n:
        raise ConfigError(f"the domain has {dom.n} dimensions, the network {n} inputs")
    if not (np.isfinite(dom.lower).all() and np.isfinite(dom.upper).all()):
        raise ConfigError("the domain must be bounded (finite lower and upper bounds)")
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
    config = config or CertifyConfig()
    n = network.n_inputs
    dom = resolve_domain(domain, n)
    try:
        values = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputDataError(f"the input is not an array of numbers: {exc}") from exc
    xa = as_network_input(values, network.input_shape, dom)
    logits = network.forward(xa)[0]
    predicted = int(np.argmax(logits))
    label = predicted if label is None else network.check_label(label)
    if model_path is not None and model_sha256 is None:
        model_sha256 = sha256_file(model_path)
    search = make_search(config.algorithm, precision=config.precision)
    if oracle is None:
        oracle, built_falsifier = build_oracles(network, config)
        falsifier = falsifier if falsifier is not None else built_falsifier
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
        return Certificate(status=Status.NOT_ROBUST, box=None, apothem_upper_bound=0.0, oracle_calls=0, rounds=0,
                           seconds=time.perf_counter() - start, reason=reason, counterexample=xa,
                           counterexample_class=counterexample_class(network, xa, label), **common)
    deadline = start + config.search_time_limit if config.search_time_limit is not None else None
    result = search.run(Problem(xa, label, dom, deadline=deadline, progress=progress), oracle, falsifier)
    upper = result.apothem_upper_bound
    dual_info = None
    if config.dual and result.box is not None:
        from .dual import dual_box

        apothem = result.box.apothem(xa, dom)
        radius = config.dual_radius * min(apothem if math.isfinite(apothem) and apothem > 0 else 1.0, 1.0)
        dual = dual_box(network, label, x=xa, radius=radius, domain=dom, method=config.dual, workers=1)
        bound = dual.apothem_bound(xa, dom)
        dual_info = {"method": config.dual, "radius": radius, "apothem_bound": bound,
                     "covers_ball": dual.covers_region, "exact_bounds": dual.exact_count, "seconds": dual.seconds}
        if bound is not None:
            upper = min(upper, bound)
    return Certificate(
        status=result.status, box=result.box, apothem_upper_bound=upper if np.isfinite(upper) else None,
        oracle_calls=result.oracle_calls, rounds=result.rounds, falsifier_calls=result.falsifier_calls,
        seconds=time.perf_counter() - start, reason=result.reason, counterexample=result.counterexample,
        counterexample_class=counterexample_class(network, result.counterexample, label),
        dual=dual_info, exact=result.exact, **common)
