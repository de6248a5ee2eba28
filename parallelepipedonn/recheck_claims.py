"""The claims of a stored result, each checked against a network with an oracle, for
:mod:`parallelepipedonn.recheck` (which loads and validates the stored file, finds and
hashes its model, and documents what is rechecked).

Every function returns the fields of a :class:`~parallelepipedonn.recheck.Recheck` as a
dict; a claim is confirmed only when it was checked, refuted only with a reason (and a
confirmed point where a point refutes it), and undecided otherwise.
"""

from __future__ import annotations

import enum
import math
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from oracles.base import Oracle, RegionVerdict, Verdict

from .box import Box, linf_distance_up
from .certificate import Certificate
from .certify import CertifyConfig, build_oracles, within_distance
from .dual import DualBox
from .errors import ConfigError, InputDataError, ModelError, ModelMismatchError
from .io_utils import sha256_file
from .network import Network
from .search.base import Status
from .tolerances import METRIC_RTOL
from .verify import Verification, VerifyConfig
from .verify_recheck import recheck_verification

FloatArray = NDArray[np.float64]


class Outcome(str, enum.Enum):
    """The outcome of a recheck."""

    CONFIRMED = "confirmed"  # every claim re-verified
    REFUTED = "refuted"  # some claim is false (a counterexample in the box, a box outside the domain, ...)
    UNDECIDED = "undecided"  # the oracle could not decide (UNKNOWN, time-out)


def make_recheck_oracle(network: Network, name: str, time_limit: float | None, device: str) -> Oracle:
    """The oracle ``name`` (any registered name or cascade) bound to ``network``."""
    options = {} if time_limit is None else {"time_limit": time_limit}
    oracle, _ = build_oracles(network, CertifyConfig(oracle=name, oracle_options=options, device=device,
                                                     falsifier=None))
    return oracle


# -- certificates ------------------------------------------------------------------------------
class _Refuted(Exception):
    """A claim of the stored result is false (internal control flow)."""

    def __init__(self, reason: str, point: FloatArray | None = None) -> None:
        super().__init__(reason)
        self.point = point


def _close(claimed: Any, actual: float | None, rtol: float = 0.0) -> bool:
    """Whether a stored metric (a number, ``"inf"``/``"-inf"`` or ``None``) is ``actual``
    (to ``rtol``, relative: only the log-volume, a sum of logarithms whose last bits may
    differ between numpy builds; the apothem, min edge and gap are IEEE operations on the
    box, recomputed bit for bit)."""
    if claimed is None or actual is None:
        return claimed is None and actual is None
    value = float(claimed)
    if math.isinf(value) or math.isinf(actual):
        return value == actual
    return abs(value - actual) <= rtol * max(abs(value), abs(actual), 1e-300)


def _check_geometry(cert: Certificate, raw: dict[str, Any] | None, net: Network) -> list[str]:
    """The certificate's geometric claims (raises :class:`_Refuted`); the checks done."""
    x, dom, box = cert.input, cert.domain, cert.box
    if x.size != net.n_inputs:
        raise InputDataError(f"the certificate's input has {x.size} values, the network {net.n_inputs} inputs")
    if math.prod(cert.input_shape) != x.size:  # (its arrays are in that shape's row-major order)
        raise InputDataError(f"the certificate's input_shape {list(cert.input_shape)} does not hold its input's "
                             f"{x.size} values")
    if not dom.contains(x):
        raise _Refuted("the input is not inside the certificate's domain")
    checks = ["input in domain"]
    if box is not None:
        if box.n != x.size:
            raise InputDataError(f"the certificate's box has {box.n} dimensions, its input {x.size}")
        if not box.contains(x):
            raise _Refuted("the box does not contain the input")
        if not dom.contains_box(box):
            raise _Refuted("the box is not inside the domain")
        checks += ["input in box", "box in domain"]
    if raw is not None:
        for key, actual, rtol in (("apothem", cert.apothem, 0.0), ("min_edge", cert.min_edge, 0.0),
                                  ("log_volume", cert.log_volume, METRIC_RTOL)):
            if not _close(raw.get(key), actual, rtol):
                raise _Refuted(f"the stored {key} {raw.get(key)} is not the box's ({actual})")
        if "gap" in raw and not _close(raw.get("gap"), cert.gap):
            raise _Refuted(f"the stored gap {raw.get('gap')} is not the apothem upper bound minus the apothem "
                           f"({cert.gap})")
        checks.append("apothem, min edge, log-volume and gap are the box's")
    predicted = int(net.predict(x)[0])
    if predicted != cert.predicted_label:
        raise _Refuted(f"the network predicts {predicted} at the input, not {cert.predicted_label}")
    return checks


def _check_counterexample(cert: Certificate, net: Network) -> list[str]:
    """A stored counterexample must be a misclassified point of the domain (confirmed as
    the oracles confirm theirs: float64, exact arithmetic near the boundary), no farther
    from the input than the stored apothem upper bound, of the stored class if one is."""
    cex = cert.counterexample
    if cex is None:
        return []
    if cex.size != cert.input.size:
        raise InputDataError(f"the counterexample has {cex.size} values, the input {cert.input.size}")
    if not cert.domain.contains(cex):
        raise _Refuted("the counterexample is not inside the domain", cex)
    margin = float(net.margins(cex, cert.label)[0])
    if not net.misclassified(cex, cert.label)[0]:
        raise _Refuted(f"the counterexample is classified {cert.label} (margin {margin:.3g} > 0)", cex)
    if cert.status is Status.CERTIFIED and cert.box is not None and cert.box.contains(cex):
        raise _Refuted("the certificate's own counterexample lies inside its box", cex)
    stored = cert.counterexample_class
    if stored is not None:  # the class recorded for it (absent from older certificates)
        logits = net.forward(cex)[0]
        best = float(np.delete(logits, cert.label).max())
        # a near tie between two other classes may be ordered differently by another float64 pass
        with np.errstate(over="ignore", invalid="ignore"):
            tie = 2 * float(net.margin_errors(cex, cert.label)[1][0]) + METRIC_RTOL * max(1.0, abs(best))
        tie = tie if math.isfinite(tie) else math.inf
        if not (0 <= stored < logits.size and stored != cert.label and logits[stored] >= best - tie):
            actual = int(np.argmax(np.where(np.arange(logits.size) == cert.label, -np.inf, logits)))
            raise _Refuted(f"the counterexample is classified {actual}, not {stored} as stored", cex)
    distance = float(np.abs(cex - cert.input).max())
    cls = "" if stored is None else f"class {stored}, "
    return [f"counterexample confirmed ({cls}distance {distance:.6g}, margin {margin:.3g})"]


def _unproven_bounds(cert: Certificate) -> list[str]:
    """The claims about the best apothem that the file does not prove: ``apothem_upper_bound``
    is proven by the counterexample (no farther from the input; confirmed by
    :func:`_check_counterexample`), else it rests on the stored dual box's bound, which is
    not rechecked (returned, for an undecided outcome); without either it is refuted.
    ``exact`` claims the apothem within the algorithm's precision of that bound."""
    bound = cert.apothem_upper_bound
    if bound is None or math.isinf(bound):
        unproven = []
    elif cert.counterexample is not None and within_distance(cert.counterexample, cert.input, bound):
        unproven = []  # compared exactly: a bound one ulp below the counterexample's distance proves nothing
    elif (cert.dual or {}).get("apothem_bound") is not None:
        unproven = [f"the apothem upper bound {bound:.6g} rests on the stored dual box's bound, which is not rechecked"]
    elif cert.counterexample is not None:
        raise _Refuted(f"the counterexample is at distance {linf_distance_up(cert.counterexample, cert.input)!r}"
                       f" (rounded up), beyond the stored apothem upper bound {bound!r}", cert.counterexample)
    else:
        raise _Refuted(f"the stored apothem upper bound {bound:.6g} comes without the counterexample that would "
                       "prove it")
    if cert.exact:
        if cert.algorithm != "exact" and not str(cert.algorithm).startswith("exact+"):
            raise _Refuted(f"the certificate claims its apothem is the best one (exact), but its algorithm "
                           f"{cert.algorithm!r} is not the exact search (nor a composition starting with it)")
        settings = cert.algorithm_settings or {}
        while "rel_precision" not in settings and isinstance(settings.get("first"), dict):
            settings = settings["first"]  # a composition: the exact search is its first part
        a, precision = cert.apothem, settings.get("rel_precision")  # the exact search's (relative)
        if a is not None and not math.isinf(a):
            if bound is None or math.isinf(bound):
                raise _Refuted("the certificate claims its apothem is the best one (exact), with no apothem upper "
                               "bound to show it")
            if precision is None:
                unproven.append("the certificate claims its apothem is the best one (exact), with no relative "
                                "precision recorded to check it against")
            elif _precision(precision) >= 1:
                raise _Refuted(f"the certificate claims its apothem is the best one (exact) to a relative precision "
                               f"of {precision!r}, which the exact search refuses (it must be below 1) and which "
                               "would call any apothem the best")
            elif bound - a > _precision(precision) * bound * (1 + METRIC_RTOL):
                raise _Refuted(f"the certificate claims its apothem {a:.6g} is the best one (exact) to precision "
                               f"{precision:g}, but its apothem upper bound is {bound:.6g}")
    return unproven


def recheck_certificate(cert: Certificate, raw: dict[str, Any] | None, net: Network, label: int, oracle_name: str,
                         time_limit: float | None, device: str, model_path: Path | None = None) -> dict[str, Any]:
    """Every claim of a certificate: its geometry, counterexample and box
    (:func:`_recheck_claims`), and the closed-form radii of a latent-mixture classifier's
    certificate (its ``gmm`` section), recomputed from the model file."""
    result = _recheck_claims(cert, raw, net, label, oracle_name, time_limit, device)
    if cert.gmm is None or result["outcome"] is Outcome.REFUTED:
        return result
    part = _recheck_gmm(cert, model_path, label)
    checks = tuple(result.get("checks", ())) + part.checks
    if part.outcome == "refuted":
        return {**result, **_refutation(net, cert.input, label, f"closed form: {part.reason}", part.point),
                "checks": checks}
    if part.outcome == "undecided" and result["outcome"] is Outcome.CONFIRMED:
        return {**result, "outcome": Outcome.UNDECIDED, "checks": checks, "reason": f"closed form: {part.reason}"}
    return {**result, "checks": checks}


def _recheck_gmm(cert: Certificate, model_path: Path | None, label: int):
    """The closed-form part of a latent-mixture classifier's certificate, recomputed from
    the model file (:func:`parallelepipedonn.gmm.certify.recheck_closed_form`)."""
    from .gmm.certify import ClosedFormCheck, recheck_closed_form
    from .gmm.model import load_gmm

    if model_path is None:
        return ClosedFormCheck("undecided", (), "no model file to recompute the closed-form radii from")
    try:
        classifier = load_gmm(model_path)
    except ModelError as exc:
        return ClosedFormCheck("refuted", (), f"the certificate has closed-form radii of a latent-mixture classifier, "
                               f"but {exc}")
    return recheck_closed_form(cert.gmm or {}, classifier, cert.input, label, cert.domain)


def _precision(value: Any) -> float:
    """A stored relative precision: a number in [0, inf), else the file is malformed."""
    try:
        p = float(value)
    except (TypeError, ValueError):
        p = math.nan
    if not (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(p) and p >= 0):
        raise InputDataError(f"the certificate's rel_precision {value!r} is not a non-negative number")
    return p


def _recheck_claims(cert: Certificate, raw: dict[str, Any] | None, net: Network, label: int, oracle_name: str,
                    time_limit: float | None, device: str) -> dict[str, Any]:
    claim = (f"the box is robust for label {label}" if cert.status is Status.CERTIFIED
             else f"the input is not robust for label {label}" if cert.status is Status.NOT_ROBUST
             else "nothing proven (status unknown)")
    out: dict[str, Any] = {"kind": "certificate", "claim": claim, "oracle": None}
    notes = []
    if cert.domain.n == net.n_inputs:  # (another size: the geometry's checks say so)
        net.check_input_range(cert.domain.lower, cert.domain.upper, "the certificate's domain")
    try:
        checks = _check_geometry(cert, raw, net) + _check_counterexample(cert, net)
        unproven = _unproven_bounds(cert)
    except _Refuted as exc:
        return {**out, **_refutation(net, cert.input, label, str(exc), exc.point)}
    if cert.status is Status.NOT_ROBUST and cert.counterexample is None:
        return {**out, "outcome": Outcome.REFUTED, "reason": "a not-robust certificate without a counterexample",
                "checks": tuple(checks)}
    if cert.status is Status.NOT_ROBUST and not net.misclassified(cert.input, label)[0]:
        # not-robust says the input itself is not classified ``label`` strictly (certify
        # writes it for that alone); a counterexample elsewhere does not make it so
        return {**out, "outcome": Outcome.REFUTED, "checks": tuple(checks),
                "reason": f"the certificate says the input is not robust, but the input itself is classified {label} "
                f"with a strictly larger logit (exact)"}
    if cert.dual is not None and cert.dual.get("apothem_bound") is not None and not unproven:
        notes.append("the apothem bound of the stored dual box is not rechecked")
    if unproven and cert.status is not Status.CERTIFIED:
        return {**out, "outcome": Outcome.UNDECIDED, "checks": tuple(checks), "notes": tuple(notes),
                "reason": "; ".join(unproven)}
    if cert.status is not Status.CERTIFIED:
        return {**out, "outcome": Outcome.CONFIRMED, "checks": tuple(checks), "notes": tuple(notes),
                "reason": "the counterexample is confirmed by a forward pass" if cert.counterexample is not None
                else "the certificate claims no certified box"}
    if cert.box is None:
        return {**out, "outcome": Outcome.REFUTED, "reason": "a certified certificate without a box",
                "checks": tuple(checks)}
    oracle = make_recheck_oracle(net, oracle_name, time_limit, device)
    out["oracle"] = oracle.name
    answer = oracle.verify_box(cert.box.lower, cert.box.upper, label)
    if answer.verdict is Verdict.VERIFIED:
        margin = "" if answer.margin is None else f", margin >= {answer.margin:.3g}"
        dual_bound = (cert.dual or {}).get("apothem_bound")
        apothem = cert.box.apothem(cert.input, cert.domain)
        # the verified box beats the dual's bound (its apothem rounded down: each face's slack is one rounding)
        if dual_bound is not None and float(dual_bound) < np.nextafter(apothem, 0.0):
            return {**out, "outcome": Outcome.REFUTED, "checks": tuple(checks + [f"box verified by {oracle.name}"]),
                    "reason": f"the stored dual box's apothem bound {float(dual_bound):.6g} is below the apothem "
                    f"{apothem:.6g} of the box {oracle.name} verified"}
        if unproven:
            return {**out, "outcome": Outcome.UNDECIDED, "checks": tuple(checks + [f"box verified by {oracle.name}"]),
                    "notes": tuple(notes), "reason": "; ".join(unproven)}
        return {**out, "outcome": Outcome.CONFIRMED, "checks": tuple(checks + [f"box verified by {oracle.name}"]),
                "reason": f"{oracle.name} verified the box{margin}", "notes": tuple(notes)}
    if answer.verdict is Verdict.FALSIFIED:
        return {**out, "checks": tuple(checks), **_refutation(
            net, cert.input, label, f"{oracle.name} found a counterexample inside the box", answer.counterexample)}
    return {**out, "outcome": Outcome.UNDECIDED, "checks": tuple(checks), "notes": tuple(notes),
            "reason": f"{oracle.name} could not decide{' (time-out)' if answer.timed_out else ''}: {answer.reason}"}


def recheck_epsilon(cert: Certificate, net: Network, label: int, oracle_name: str, time_limit: float | None,
                     device: str, result: dict[str, Any]) -> dict[str, Any]:
    """The ``epsilon`` claim of a certificate whose other claims were confirmed: ``certified``
    needs the ball (rounded outward) inside the rechecked box or verified by the oracle;
    ``not-robust`` needs the (rechecked) counterexample inside the exact ball."""
    from .certify import confirm_in_ball

    assert cert.epsilon is not None
    eps, claim = float(cert.epsilon["epsilon"]), cert.epsilon["status"]
    if not (math.isfinite(eps) and eps >= 0):
        raise InputDataError(f"the certificate's epsilon {cert.epsilon['epsilon']!r} is not a finite non-negative "
                             "number")
    checks = tuple(result.get("checks", ()))
    if claim == Status.NOT_ROBUST.value:
        if cert.counterexample is None or not within_distance(cert.counterexample, cert.input, eps):
            return {**result, "outcome": Outcome.REFUTED,
                    "reason": f"the certificate says not robust at epsilon {eps:g}, but its counterexample is not "
                    "within that distance"}
        return {**result, "checks": checks + (f"counterexample within epsilon {eps:g}",)}
    if claim != Status.CERTIFIED.value:
        return result
    ball = Box.outer_cube(cert.input, eps, cert.domain)
    if cert.status is Status.CERTIFIED and cert.box is not None and cert.box.contains_box(ball):
        return {**result, "checks": checks + (f"the ball of radius {eps:g} lies in the box",)}
    oracle = make_recheck_oracle(net, oracle_name, time_limit, device)
    answer = oracle.verify_box(ball.lower, ball.upper, label)
    if answer.verdict is Verdict.VERIFIED:
        return {**result, "checks": checks + (f"the ball of radius {eps:g} verified by {oracle.name}",)}
    if answer.verdict is Verdict.FALSIFIED:
        cex = confirm_in_ball(net, cert.input, eps, cert.domain, label, answer.counterexample)
        if cex is not None:
            return {**result, **_refutation(net, cert.input, label, f"{oracle.name} found a counterexample in the "
                                            f"ball of radius {eps:g} the certificate says is certified", cex)}
    return {**result, "outcome": Outcome.UNDECIDED,
            "reason": f"{oracle.name} could not decide the ball of radius {eps:g}: {answer.reason}"}


def _refutation(net: Network, x: FloatArray | None, label: int, reason: str,
                point: FloatArray | None) -> dict[str, Any]:
    """A refuted outcome, with the refuting point, its distance from ``x`` and its logits."""
    out: dict[str, Any] = {"outcome": Outcome.REFUTED, "reason": reason}
    if point is not None:
        p = np.asarray(point, dtype=np.float64).reshape(-1)
        out.update(counterexample=p, logits=net.forward(p)[0],
                   distance=None if x is None else linf_distance_up(p, x))
    return out


# -- verification results ----------------------------------------------------------------------------
def recheck_verification_claim(result: Verification, net: Network, property_path: Path | None, oracle: str,
                               time_limit: float | None, device: str) -> dict[str, Any]:
    """A verification result's answer, rechecked (:func:`~parallelepipedonn.verify_recheck.recheck_verification`);
    for a VNN-LIB property, against ``property_path`` (the property file it names, found
    as its model is), whose sha256 must be the recorded one."""
    from .vnnlib import read_vnnlib

    p = result.property
    prop = None
    if p.get("kind") == "vnnlib":
        if property_path is None:
            raise InputDataError("the verification result names a VNN-LIB property but no property file was given")
        path = property_path
        try:
            actual = sha256_file(path)
        except OSError as exc:
            raise InputDataError(f"cannot read the property file {str(path)!r}: {exc.strerror or exc}") from exc
        if p.get("sha256") is not None and actual != str(p["sha256"]).lower():
            raise ModelMismatchError(f"property file {str(path)!r} has sha256 {actual[:16]}..., the result was "
                                     f"made with {str(p['sha256'])[:16]}...: refusing to recheck against another "
                                     "property")
        prop = read_vnnlib(path)
        claim = {"unsat": f"the property of {path} holds", "sat": f"the property of {path} is violated"}.get(
            result.answer.value, f"nothing proven ({result.answer.value})")
    else:
        claim = {"unsat": f"the input is robust at epsilon {p.get('epsilon')} for label {p.get('label')}",
                 "sat": f"the input is not robust at epsilon {p.get('epsilon')}"}.get(
            result.answer.value, f"nothing proven ({result.answer.value})")
    check = recheck_verification(result, net, prop, config=VerifyConfig(oracle=oracle, device=device),
                                 time_limit=time_limit)
    return {"kind": "verification", "claim": claim, "oracle": check.oracle, "outcome": Outcome(check.outcome),
            "reason": check.reason, "checks": check.checks}


# -- dual boxes --------------------------------------------------------------------------------
def _witness_problem(net: Network, label: int, region: Box, box: Box | None, witness: Any) -> str | None:
    """Why ``witness`` does not refute the dual box (``None`` if it does): it must be a
    point of the region, outside the box (if any), classified ``label`` — ties included,
    decided in exact arithmetic where the float64 margin is within its rounding error."""
    if witness is None:
        return "no point"
    w = np.asarray(witness, dtype=np.float64).reshape(-1)
    if w.shape != (region.n,) or not np.isfinite(w).all() or not region.contains(w):
        return "not a point of the region"
    if box is not None and box.contains(w):
        return "inside the box"
    margin, err = net.margin_errors(w, label)
    if margin[0] < err[0] and (margin[0] <= -err[0] or net.exact_margin(w, label) < 0):
        return f"classified otherwise, margin {margin[0]:.3g}"
    return None


def _check_dual_shapes(dual: DualBox, n: int) -> None:
    """Raises :class:`InputDataError` for a dual-box file that is malformed rather than
    false: a region, box, domain or centre that is no point or box of the network's ``n``
    inputs, a radius that is no finite positive number, a centre outside its domain."""
    for what, box in (("region", dual.region), ("box", dual.box), ("domain", dual.domain)):
        if box is not None and box.n != n:
            raise InputDataError(f"the dual box's {what} has {box.n} dimensions, the network {n} inputs")
    if dual.center is not None:
        c = dual.center
        if c.size != n or not np.isfinite(c).all():
            raise InputDataError(f"the dual box's centre is not a point of the network's {n} inputs")
        if not (dual.radius is not None and math.isfinite(dual.radius) and dual.radius > 0):
            raise InputDataError(f"the dual box's radius {dual.radius!r} is not a finite positive number")
        if dual.domain is not None and not dual.domain.contains(c):
            raise InputDataError("the dual box's centre lies outside its domain")


def recheck_dual(dual: DualBox, net: Network, label: int, oracle_name: str, time_limit: float | None,
                  device: str) -> dict[str, Any]:
    region = dual.region
    if dual.center is not None and dual.radius is None:
        raise InputDataError("the dual box has a centre but no radius: its region is not defined")
    if dual.domain is None:  # nothing to check the region against: the claim is about the region as stored
        where = "the region as stored (no domain stored to check it against)"
    else:
        where = "the domain" if dual.center is None else f"the ball of radius {dual.radius:.6g} around the input"
    out: dict[str, Any] = {"kind": "dual box", "oracle": None,
                           "claim": f"every point of {where} classified {label} lies in the box"
                           if dual.box is not None else f"no point of {where} is classified {label}"}
    _check_dual_shapes(dual, net.n_inputs)
    net.check_input_range(region.lower, region.upper, "the dual box's region")
    checks = []
    if dual.domain is not None:
        expected = dual.domain if dual.center is None else Box.cube(dual.center, float(dual.radius or 0), dual.domain)
        if expected != region:
            return {**out, "outcome": Outcome.REFUTED, "reason": f"the stored region is not {where}"}
        checks.append(f"region is {where}")
    if dual.box is not None:
        if not region.contains_box(dual.box):
            return {**out, "outcome": Outcome.REFUTED, "reason": "the box is not inside the region"}
        checks.append("box in region")
    oracle = make_recheck_oracle(net, oracle_name, time_limit, device)
    out["oracle"] = oracle.name
    query = "coordinate_extreme" if dual.box is None else "class_region"
    if not oracle.supports(query):
        raise ConfigError(f"dual boxes are rechecked with an oracle that answers {query} queries (milp, or a "
                          f"cascade with a milp stage); {oracle.name!r} answers {', '.join(sorted(oracle.queries))}")
    if dual.box is None:
        ext = oracle.coordinate_extreme(label, 0, False, region)
        verdict = (RegionVerdict.NONE if ext.bound == math.inf
                   else RegionVerdict.WITNESS if ext.witness is not None else RegionVerdict.UNKNOWN)
        witness, why = ext.witness, ext.reason
    else:
        ans = oracle.class_region(dual.box.lower, dual.box.upper, label, region, tolerance=0.0)
        verdict, witness, why = ans.verdict, ans.witness, ans.reason
    if verdict is RegionVerdict.NONE:
        return {**out, "outcome": Outcome.CONFIRMED, "checks": tuple(checks + [f"class region proven by {oracle.name}"]),
                "reason": f"{oracle.name} proved it ({why})"}
    if verdict is RegionVerdict.WITNESS:
        what = "outside the box" if dual.box is not None else "in the region"
        problem = _witness_problem(net, label, region, dual.box, witness)
        if problem is not None:  # never refute with an unconfirmed point
            return {**out, "outcome": Outcome.UNDECIDED, "checks": tuple(checks),
                    "reason": f"{oracle.name}'s witness is not confirmed ({problem}): {why}"}
        return {**out, "checks": tuple(checks), **_refutation(
            net, dual.center, label, f"{oracle.name} found a point of class {label} {what}", witness)}
    return {**out, "outcome": Outcome.UNDECIDED, "checks": tuple(checks),
            "reason": f"{oracle.name} could not decide: {why}"}
