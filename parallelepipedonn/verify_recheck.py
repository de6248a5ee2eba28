"""Rechecking a stored :class:`~parallelepipedonn.verify.Verification` against its model
(and, for a VNN-LIB property, its file), independently of how it was found: every claim
the file makes, not only its answer."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from oracles.base import Oracle, Verdict

from .box import Box
from .certify import confirm_in_ball, within_distance
from .counterexamples import confirm_counterexample, exact_outputs
from .errors import InputDataError, PropertyError
from .exact_numbers import to_float64
from .inputs import as_network_input
from .verify import Answer, Verification, VerifyConfig, check_property
from .vnnlib import VnnlibProperty

if TYPE_CHECKING:
    from .graph import Graph
    from .network import Network

FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class ClaimCheck:
    """What rechecking a :class:`Verification` found: ``outcome`` ``confirmed``,
    ``refuted`` or ``undecided`` (the vocabulary of :mod:`parallelepipedonn.recheck`)."""

    outcome: str
    reason: str
    checks: tuple[str, ...] = ()
    oracle: str | None = None


def recheck_verification(result: Verification, model: Network | Graph, prop: VnnlibProperty | None, *,
                         config: VerifyConfig, time_limit: float | None = None) -> ClaimCheck:
    """Re-verify the claim of ``result`` against ``model`` (and, for a VNN-LIB property, the
    parsed file ``prop``), independently of how it was found: ``sat`` — the counterexample
    is confirmed exactly; ``unsat`` — ``config``'s oracle verifies every region again;
    ``unknown``/``timeout`` claim nothing."""
    kind = result.property.get("kind")
    if kind == "vnnlib" and prop is None:
        raise InputDataError("rechecking a VNN-LIB verification needs its property file")
    if kind == "epsilon":
        model.check_classifier("robustness at epsilon")
        p = result.property
        try:
            dom = Box(np.broadcast_to(np.asarray(p["domain"]["lower"], dtype=np.float64), (model.n_inputs,)),
                      np.broadcast_to(np.asarray(p["domain"]["upper"], dtype=np.float64), (model.n_inputs,)))
        except ValueError as exc:  # a wrong length, or an empty box
            raise InputDataError(f"the stored domain is not a box of the network's {model.n_inputs} inputs: "
                                 f"{exc}") from None
        model.check_input_range(dom.lower, dom.upper, "the stored domain")
        xa = as_network_input(np.asarray(p["input"], dtype=np.float64), model.input_shape, dom, "the stored input")
        label, eps = model.check_label(int(p["label"])), float(p["epsilon"])
        if not (math.isfinite(eps) and eps >= 0):
            raise InputDataError(f"the stored epsilon {p['epsilon']!r} is not a finite non-negative number")
        if "predicted_label" in p and p["predicted_label"] != int(model.predict(xa)[0]):
            return ClaimCheck("refuted", f"the stored predicted label {p['predicted_label']!r} is not the model's "
                              f"prediction {int(model.predict(xa)[0])} at the input")
    elif kind == "vnnlib":
        assert prop is not None
        check_property(model, prop)  # what verify_property refuses (a property on what a dropped final op changes)
        wrong = _stored_property_claims(result.property, prop, model.n_inputs)
        if wrong is not None:
            return ClaimCheck("refuted", wrong)
    else:
        raise InputDataError(f"unknown property kind {kind!r}")
    cex, exact = result.counterexample, result.counterexample_exact
    if exact is not None and kind != "vnnlib":
        raise InputDataError("counterexample_exact is for the counterexamples of VNN-LIB properties")
    exact_out = None
    if result.answer is Answer.SAT and exact is not None:
        exact_out = exact_outputs(model, exact)
        wrong = _stored_exact_claims(result, exact, exact_out)
        if wrong is not None:
            return wrong
    elif result.answer is Answer.SAT and cex is not None:
        wrong = _stored_outputs_claim(result.outputs, model, cex)
        if wrong is not None:
            return wrong
    if result.answer is Answer.SAT:
        if cex is None:
            return ClaimCheck("refuted", "a sat result without a counterexample")
        if kind == "epsilon":
            if not (dom.contains(cex) and within_distance(cex, xa, eps)):
                return ClaimCheck("refuted", "the counterexample is not in the ball")
            if not model.misclassified(cex, label)[0]:
                return ClaimCheck("refuted", f"the counterexample is classified {label}")
            return ClaimCheck("confirmed", "the counterexample is confirmed (exact forward pass)",
                              ("counterexample in the ball", f"not classified {label} (exact)"))
        assert prop is not None
        if exact is not None:
            for region in prop.regions:
                if region.contains_exact(exact) and region.violated_disjunct(exact_out) is not None:
                    return ClaimCheck("confirmed", "the counterexample (exact rationals) is confirmed against the "
                                      "property (exact)", ("counterexample in an input box", "its outputs are unsafe "
                                                           "(exact)"))
            return ClaimCheck("refuted", "the counterexample does not violate the property (exact check)")
        for region in prop.regions:
            if region.contains(cex) and region.violated_disjunct(exact_outputs(model, cex)) is not None:
                return ClaimCheck("confirmed", "the counterexample is confirmed against the property (exact)",
                                  ("counterexample in an input box", "its outputs are unsafe (exact)"))
        return ClaimCheck("refuted", "the counterexample does not violate the property (exact check)")
    if result.answer is not Answer.UNSAT:
        return ClaimCheck("confirmed", f"the result ({result.answer.value}) claims nothing")
    if kind == "epsilon":
        ball = Box.outer_cube(xa, eps, dom)
        if model.misclassified(xa, label)[0]:
            return ClaimCheck("refuted", f"the input itself is not classified {label}")
    else:
        assert prop is not None
        if not prop.regions:
            return ClaimCheck("confirmed", "the assertions admit no unsafe point", ("no unsafe case",))
        from .property_net import ReductionError, reduce_region

        for region in prop.regions:
            if any(not d for d in region.disjuncts):
                return ClaimCheck("refuted", "an input box where every point is unsafe")
            try:
                red = reduce_region(model, region, config.oracle, prop.path)
            except ReductionError as exc:
                return ClaimCheck("undecided", str(exc))
            oracle = config.build(red.network)
            answer = _recheck_ask(oracle, red.lower, red.upper, red.label, time_limit)
            outcome = _region_outcome(answer, oracle, lambda a, r=region: confirm_counterexample(model, r, a))
            if outcome is not None:
                return outcome
        return ClaimCheck("confirmed", f"{config.oracle} verified every input box ({len(prop.regions)})",
                          (f"{len(prop.regions)} input box(es) verified",), config.oracle)
    oracle = config.build(model)
    answer = _recheck_ask(oracle, ball.lower, ball.upper, label, time_limit)
    outcome = _region_outcome(answer, oracle, lambda a: confirm_in_ball(model, xa, eps, dom, label, a))
    return outcome or ClaimCheck("confirmed", f"{oracle.name} verified the ball", ("ball verified",), oracle.name)


def _stored_exact_claims(result: Verification, exact: tuple[Fraction, ...],
                         outputs: list[Fraction]) -> ClaimCheck | None:
    """A counterexample of exact rationals: its stored float64 coordinates must be the exact
    ones rounded to nearest, its stored outputs the exact outputs rounded to nearest."""
    rounded = np.array([to_float64(q) for q in exact], dtype=np.float64)
    if result.counterexample is None or not np.array_equal(result.counterexample, rounded):
        return ClaimCheck("refuted", "the stored counterexample is not its exact coordinates rounded to float64")
    expected = np.array([to_float64(q) for q in outputs], dtype=np.float64)
    if result.outputs is None or not np.array_equal(result.outputs, expected):
        return ClaimCheck("refuted", "the stored outputs are not the model's exact outputs at the counterexample "
                          "rounded to float64")
    return None


def _stored_outputs_claim(stored: FloatArray | None, model: Network | Graph, cex: FloatArray) -> ClaimCheck | None:
    """Whether the stored outputs can be a float64 forward pass at ``cex`` (any summation
    order): refuted where they differ from this one by more than twice the pass's rounding
    error bound (both lie within it of the exact outputs; the margin's bound covers every
    logit's, a single-output model's constant 0 score included)."""
    actual = model.forward(cex[None])[0][:model.n_outputs]
    values = None if stored is None else np.asarray(stored, dtype=np.float64)
    if values is None or values.shape != actual.shape:
        return ClaimCheck("refuted", "the stored outputs are not the model's at the counterexample")
    finite = np.isfinite(actual)  # where the pass overflows, the stored value must be the same inf (or NaN)
    if not (np.array_equal(values[~finite], actual[~finite], equal_nan=True) and np.isfinite(values[finite]).all()):
        return ClaimCheck("refuted", "the stored outputs are not the model's at the counterexample")
    if np.array_equal(values, actual, equal_nan=True):
        return None
    _, err = model.margin_errors(cex, 0)
    bound = float(err[0])  # covers every logit's rounding
    if not np.isfinite(bound):
        return ClaimCheck("undecided", "the stored outputs differ from this machine's forward pass, whose rounding "
                          "error bound is not finite")
    if (np.abs(values[finite] - actual[finite]) > 2 * bound).any():
        return ClaimCheck("refuted", "the stored outputs are not the model's at the counterexample (beyond the "
                          "forward pass's rounding error)")
    return None


def _stored_property_claims(stored: dict[str, Any], prop: VnnlibProperty, n_inputs: int) -> str | None:
    """What the stored description of a VNN-LIB property claims that its file does not
    hold (its counts; every input box within the stored domain), or ``None``. The
    per-region records are a log of what was asked, not rechecked."""
    for key, actual in (("inputs", prop.n_inputs), ("outputs", prop.n_outputs), ("regions", len(prop.regions))):
        if key in stored and stored[key] != actual:
            return f"the stored property has {stored[key]!r} {key}, its file {actual}"
    domain = stored.get("domain")
    if domain is not None:
        try:
            lower, upper = (np.broadcast_to(np.asarray(domain[k], dtype=np.float64), (n_inputs,))
                            for k in ("lower", "upper"))
        except ValueError as exc:
            raise InputDataError(f"the stored domain is not a box of the network's {n_inputs} inputs: {exc}") from None
        try:
            prop.check_domain(lower, upper)
        except PropertyError as exc:
            return f"the property's input boxes are not within the stored domain: {exc}"
    return None


def _recheck_ask(oracle: Oracle, lower: FloatArray, upper: FloatArray, label: int, time_limit: float | None):
    with oracle.time_limited(time_limit):
        return oracle.verify_box(lower, upper, label)


def _region_outcome(answer, oracle: Oracle, confirm: Callable[[Any], FloatArray | None]) -> ClaimCheck | None:
    """``None`` for VERIFIED; else refuted (a confirmed counterexample) or undecided."""
    if answer.verdict is Verdict.VERIFIED:
        return None
    if answer.verdict is Verdict.FALSIFIED and confirm(answer.counterexample) is not None:
        return ClaimCheck("refuted", f"{oracle.name} found a confirmed counterexample", oracle=oracle.name)
    why = " (time-out)" if answer.timed_out else ""
    return ClaimCheck("undecided", f"{oracle.name} could not decide{why}: {answer.reason}", oracle=oracle.name)
