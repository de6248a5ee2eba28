"""Certify an input of a latent-mixture classifier: the closed-form radii and the box of the
project's default search, in one certificate (``parallelepipedonn gmm certify``), and
the re-check of the closed-form part by recomputation (``parallelepipedonn recheck``).

The certificate's box (L-infinity apothem) comes from :func:`parallelepipedonn.certify`
with the ``gmm`` oracle (closed form on linear classifiers, CROWN otherwise) and the
default search: it is rechecked by any oracle, like every box. Its ``gmm`` section holds
the closed-form radii (:mod:`parallelepipedonn.gmm.radii`, :mod:`parallelepipedonn.gmm.linear`), each a proven lower bound:

* ``latent``: the head's decision region around the input's exact latent, in the L2,
  Mahalanobis (the fitted covariance) and L-infinity distances;
* ``input_l2_global``: an L2 ball of the input space (in all of R^n), from the margin at
  the input and a proven bound of the margins' Lipschitz constants;
* ``input_linf``, ``input_l2`` (a linear encoder only): the exact radii within the domain,
  proven, with the float64 estimate of the exact value and a confirmed counterexample
  just beyond it (its distance: ``upper``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ..box import Box
from ..certificate import Certificate, _num, _unnum  # the certificates' JSON numbers ("inf" for infinity)
from ..certify import CertifyConfig, certify, resolve_domain
from ..inputs import as_network_input
from ..tolerances import gradual_underflow
from .linear import ExactRadius, linear_radii
from .model import GmmClassifier
from .radii import LatentRadii, global_l2_radius, latent_radii

FloatArray = NDArray[np.float64]

#: The oracle ``gmm certify`` uses unless told otherwise.
DEFAULT_GMM_ORACLE = "gmm"

@dataclass(frozen=True, eq=False)
class ClosedForm:
    """The closed-form part of a certificate (module docstring); every radius proven."""

    label: int
    latent_label: int
    latent: LatentRadii
    encoder_lipschitz: float
    input_l2_global: float
    linear: bool
    input_linf: ExactRadius | None
    input_l2: ExactRadius | None
    seconds: float
    encoder: str = ""
    latent_dim: int = 0

    def to_dict(self) -> dict[str, Any]:
        def exact(e: ExactRadius | None) -> dict[str, Any] | None:
            if e is None:
                return None
            return {"radius": _num(e.radius), "estimate": _num(e.estimate), "upper": _num(e.upper),
                    "closest_class": e.closest_class,
                    "counterexample": None if e.counterexample is None else e.counterexample.tolist()}

        lat = self.latent
        return {"encoder": self.encoder, "latent_dim": self.latent_dim, "linear": self.linear,
                "latent_label": self.latent_label,
                "latent": {"l2": _num(lat.l2), "mahalanobis": _num(lat.mahalanobis), "linf": _num(lat.linf),
                           "closest_class": lat.closest_class},
                "encoder_lipschitz": _num(self.encoder_lipschitz), "input_l2_global": _num(self.input_l2_global),
                "input_linf": exact(self.input_linf), "input_l2": exact(self.input_l2), "seconds": self.seconds}


@gradual_underflow()  # subnormal results kept, as the rounding bounds assume
def closed_form(classifier: GmmClassifier, x: ArrayLike, label: int, domain: Box) -> ClosedForm:
    """Every closed-form radius of ``x`` for ``label`` (0 where the margin at ``x`` is not
    proven positive; the exact input radii only for a linear classifier). ``seconds``:
    the per-input work (the model's Lipschitz bounds are computed once and cached)."""
    label = classifier.network.check_label(label)
    # per model, cached: the Lipschitz bounds and the head's rows and norms
    lipschitz, rows, _ = classifier.margin_lipschitz(label), classifier.head_rows(label), classifier.encoder_lipschitz
    start = time.perf_counter()
    xa = np.asarray(x, dtype=np.float64).reshape(-1)
    z, z_err = classifier.latent(xa)
    w, b = classifier.head_weight, classifier.head_bias
    latent = latent_radii(w, b, z[0], z_err[0], label, classifier.mixture.covariance, rows)
    linf = l2 = None
    if classifier.linear:
        exact = linear_radii(classifier.network, xa, label, domain)
        l2_global, linf, l2 = exact.global_l2, exact.linf, exact.l2
    else:
        l2_global = global_l2_radius(classifier.network, xa, label, lipschitz)
    return ClosedForm(label, int(np.argmax(z[0] @ w.T + b)), latent, classifier.encoder_lipschitz, l2_global,
                      classifier.linear, linf, l2, time.perf_counter() - start, classifier.encoder_kind,
                      classifier.latent_dim)


@gradual_underflow()  # subnormal results kept, as the rounding bounds assume
def certify_gmm(classifier: GmmClassifier, x: ArrayLike, label: int | None = None, *, domain: Box | None = None,
                config: CertifyConfig | None = None, model_path: str | None = None, true_label: int | None = None,
                progress: Callable[[str], None] | None = None) -> Certificate:
    """The certificate of ``x``: the box of the default search (``config``; its oracle
    ``gmm`` unless named) and the closed-form radii in its ``gmm`` section."""
    config = config or CertifyConfig(oracle=DEFAULT_GMM_ORACLE)
    if config.oracle is None:
        config = replace(config, oracle=DEFAULT_GMM_ORACLE)
    net = classifier.network
    dom = resolve_domain(domain, net)
    cert = certify(net, x, label, domain=dom, config=config, model_path=model_path, true_label=true_label,
                   progress=progress)
    form = closed_form(classifier, cert.input, cert.label, dom)
    return cert.with_updates(gmm=form.to_dict())


# -- recheck -----------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class ClosedFormCheck:
    """The recheck of a stored ``gmm`` section: ``outcome`` ``confirmed``, ``refuted`` or
    ``undecided`` (the strings of :class:`parallelepipedonn.recheck.Outcome`), the claims
    that held, why, and a refuting point if one was found."""

    outcome: str
    checks: tuple[str, ...]
    reason: str
    point: FloatArray | None = None


def _within(name: str, point: FloatArray, x: FloatArray, radius: float) -> bool:
    """Whether ``point`` lies within ``radius`` of ``x`` in the norm of ``name`` (input
    L-infinity or L2), decided exactly (float64 values as rationals)."""
    if not math.isfinite(radius):
        return radius > 0
    d = [Fraction(float(p)) - Fraction(float(c)) for p, c in zip(np.ravel(point), np.ravel(x))]
    r = Fraction(float(radius))
    if name == "input L2":
        return r >= 0 and sum(v * v for v in d) <= r * r
    return all(abs(v) <= r for v in d)


def _stored_radii(stored: dict[str, Any]) -> dict[str, float | None]:
    lat = stored.get("latent") or {}
    out = {"latent L2": _unnum(lat.get("l2")), "latent Mahalanobis": _unnum(lat.get("mahalanobis")),
           "latent L-infinity": _unnum(lat.get("linf")), "input L2 (global)": _unnum(stored.get("input_l2_global"))}
    for key, name in (("input_linf", "input L-infinity"), ("input_l2", "input L2")):
        if stored.get(key) is not None:
            out[name] = _unnum(stored[key].get("radius"))
    return out


@gradual_underflow()  # subnormal results kept, as the rounding bounds assume
def recheck_closed_form(stored: dict[str, Any], classifier: GmmClassifier, x: FloatArray, label: int,
                        domain: Box) -> ClosedFormCheck:
    """Recompute the closed-form radii from the model file and compare: a stored radius is
    confirmed when it is at most the recomputed proven one; refuted when a confirmed
    counterexample lies within it (the linear classifier's, at its exact radius); else
    undecided. Stored counterexamples must be misclassified points of the domain no
    farther than their stored ``upper``."""
    x = as_network_input(np.asarray(x, dtype=np.float64), classifier.network.input_shape, domain)
    form = closed_form(classifier, x, label, domain)
    fresh = _stored_radii(form.to_dict())
    checks, undecided = [], []
    exact = {"input L-infinity": form.input_linf, "input L2": form.input_l2}
    if bool(stored.get("linear")) != form.linear:
        said = "linear" if stored.get("linear") else "not linear"
        return ClosedFormCheck("refuted", (), f"the certificate says the classifier is {said}; it is not")
    for key, value in (("encoder", form.encoder), ("latent_dim", form.latent_dim)):
        if key in stored and stored[key] != value:
            return ClosedFormCheck("refuted", (), f"the certificate's {key} {stored[key]!r} is not the model's {value!r}")
    # float64 estimates (an argmax, an argmin): another value is not confirmed, not refuted
    for key, said, value in (("latent_label", stored.get("latent_label"), form.latent_label),
                             ("latent closest_class", (stored.get("latent") or {}).get("closest_class"),
                              form.latent.closest_class)):
        if said is not None and said != value:
            undecided.append(f"the stored {key} {said!r} is not the recomputed {value!r}")
    for name, value in _stored_radii(stored).items():
        if value is None:
            continue
        proven = fresh.get(name)
        if proven is not None and value <= proven:
            checks.append(f"{name} radius {value:.6g} recomputed (proven {proven:.6g})")
            continue
        e = exact.get(name)
        if e is not None and e.counterexample is not None and _within(name, e.counterexample, x, value):
            return ClosedFormCheck("refuted", tuple(checks), f"the {name} radius {value:.6g} is beyond the exact "
                                   f"radius: a confirmed counterexample at distance {e.upper:.6g}", e.counterexample)
        undecided.append(f"the {name} radius {value:.6g} is above the recomputed proven {proven}")
    lipschitz = _unnum(stored.get("encoder_lipschitz"))
    if lipschitz is not None:  # a proven upper bound: one below the recomputed one is not proven here
        if lipschitz >= form.encoder_lipschitz:
            checks.append(f"encoder Lipschitz bound {lipschitz:.6g} recomputed (proven {form.encoder_lipschitz:.6g})")
        else:
            undecided.append(f"the encoder's Lipschitz bound {lipschitz:.6g} is below the recomputed proven "
                             f"{form.encoder_lipschitz:.6g}")
    for key, name in (("input_linf", "input L-infinity"), ("input_l2", "input L2")):
        part = stored.get(key)
        if not part:
            continue
        upper = _unnum(part.get("upper"))
        if part.get("counterexample") is None:
            if upper is not None and math.isfinite(upper):  # its proof is the counterexample
                return ClosedFormCheck("refuted", tuple(checks), f"the stored {name} distance {upper:.6g} comes "
                                       "without the counterexample that would prove it")
            continue
        p = np.asarray(part["counterexample"], dtype=np.float64)
        if p.shape != x.shape or not domain.contains(p) or not classifier.network.misclassified(p, label)[0]:
            return ClosedFormCheck("refuted", tuple(checks), f"the stored {name} counterexample is not a misclassified "
                                   "point of the domain")
        if upper is None or not _within(name, p, x, upper):
            return ClosedFormCheck("refuted", tuple(checks), f"the stored {name} counterexample lies beyond its "
                                   f"stored distance {upper}")
        checks.append(f"{name} counterexample confirmed (distance <= {upper:.6g})")
    if undecided:
        return ClosedFormCheck("undecided", tuple(checks), "; ".join(undecided))
    return ClosedFormCheck("confirmed", tuple(checks), "every closed-form radius recomputed and proven")
