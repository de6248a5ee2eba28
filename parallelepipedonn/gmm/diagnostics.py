"""How well the latents follow the fitted mixture: estimates, not proofs.

* **Predicted certified accuracy** at latent L2 radius ``rho``: the probability, under the
  fitted mixture, that a draw ``(z, y)`` is classified ``y`` with a latent radius ``>=
  rho``, by sampling (:func:`predicted_certified_accuracy`; for two isotropic classes at
  distance ``Delta`` with equal priors it is ``Phi(Delta / 2 - rho / sigma)``,
  :func:`binary_isotropic_prediction`), beside the **measured** one on held-out latents.
* **KL estimate** ``KL(P || Q)`` between the joint distribution ``P`` of (latent, label) on
  held-out data and the mixture ``Q`` (:func:`kl_estimate`): per class, the cross-entropy
  ``-E_P log q(z | y)`` (a sample mean) minus the differential entropy of ``P(z | y)``
  (the Kozachenko-Leonenko k-nearest-neighbour estimate), plus the labels' KL. Usually
  loose (biased in high dimension with few points); **infinite** for degenerate latents
  (a coordinate with an atom, e.g. a ReLU's exact zeros, or latents on a lower-dimensional
  subspace), which have no density.
* **Shared covariance** (with per-class covariances ``Sigma_k``): per class,
  ``KL(N(mu_k, Sigma_k) || N(mu_k, Sigma))``, how far the class's own Gaussian is from the
  shared-covariance one the classifier (affine) assumes (:func:`shared_covariance_kl`).
* **Pinsker**: any event's probability differs between ``P`` and ``Q`` by at most
  ``TV <= sqrt(KL / 2)``, so the certified accuracy on the data distribution is at least
  the mixture's minus ``sqrt(KL / 2)`` — as good as the KL estimate.

The per-input certificates (:mod:`parallelepipedonn.gmm.radii`) need no Gaussian
assumption: these diagnostics only say how far the mixture's predictions can be trusted.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from numpy.typing import NDArray

from .mixture import Mixture

FloatArray = NDArray[np.float64]

#: Latent radii of the diagnostics, in units of the latents' typical spread
#: ``sqrt(tr Sigma / d)``.
RADII_IN_SIGMA = (0.0, 0.25, 0.5, 1.0, 2.0)

#: A coordinate where one value holds at least this share of the points has an atom.
ATOM_SHARE = 0.02


def latent_l2_radii(weight: FloatArray, bias: FloatArray, z: FloatArray, labels: NDArray[np.int64]) -> FloatArray:
    """Per point: the head's L2 radius around ``z`` for its label (float64 estimate; 0 where
    the head does not classify it so)."""
    scores = z @ weight.T + bias
    own = scores[np.arange(len(z)), labels]
    diff = weight[labels][:, None, :] - weight[None, :, :]  # (N, K, d)
    norms = np.sqrt((diff * diff).sum(axis=2))
    with np.errstate(divide="ignore", invalid="ignore"):
        r = (own[:, None] - scores) / norms
    r[np.arange(len(z)), labels] = np.inf
    r = r.min(axis=1)
    correct = scores.argmax(axis=1) == labels
    return np.where(correct, np.maximum(r, 0.0), 0.0)


def certified_accuracy(radii: FloatArray, rhos: FloatArray) -> FloatArray:
    """The share of points with a radius ``>= rho`` (misclassified points have radius 0
    and count as not certified at any ``rho``, also 0)."""
    return np.array([float((radii >= rho).mean()) if rho > 0 else float((radii > 0).mean()) for rho in rhos])


def predicted_certified_accuracy(mixture: Mixture, weight: FloatArray, bias: FloatArray, rhos: FloatArray,
                                 samples: int = 20000, seed: int = 0) -> FloatArray:
    """The fitted mixture's certified accuracy at each latent L2 radius, by sampling."""
    z, y = mixture.sample(samples, np.random.default_rng(seed))
    return certified_accuracy(latent_l2_radii(weight, bias, z, y), rhos)


def binary_isotropic_prediction(delta: float, sigma: float, rho: float) -> float:
    """Two classes ``N(mu_0, sigma^2 I)``, ``N(mu_1, sigma^2 I)`` at distance ``delta``, equal
    priors: the certified accuracy at latent L2 radius ``rho`` is ``Phi(delta/2 - rho)``
    in units of ``sigma``, i.e. ``Phi(delta / (2 sigma) - rho / sigma)``."""
    t = delta / (2 * sigma) - rho / sigma
    return 0.5 * (1 + math.erf(t / math.sqrt(2)))


@dataclass(frozen=True)
class KLEstimate:
    """``value`` (nats; ``inf`` for degenerate latents, ``reason`` says why), per class,
    the number of points and the neighbours ``k`` used. An estimate, not a bound."""

    value: float
    per_class: tuple[float, ...]
    points: int
    k: int
    reason: str = ""

    @property
    def pinsker(self) -> float:
        """``sqrt(KL / 2)``: the bound on how much any probability (the certified accuracy)
        can differ between the data and the mixture, if the estimate were exact (a
        negative estimate, an estimation error, counts as 0)."""
        return math.sqrt(max(self.value, 0.0) / 2) if math.isfinite(self.value) else math.inf


def _digamma_int(n: int) -> float:
    """``psi(n)`` for a positive integer: ``-gamma + sum_(i < n) 1 / i``."""
    return -0.5772156649015329 + sum(1.0 / i for i in range(1, n))


def degenerate(z: FloatArray) -> str:
    """Why latents ``z`` have no density (an atom, a lower-dimensional subspace), or ``""``."""
    n, d = z.shape
    for i in range(d):
        _, counts = np.unique(z[:, i], return_counts=True)
        if counts.max() >= max(2, ATOM_SHARE * n):
            return f"coordinate {i} takes one value on {counts.max()} of {n} points (an atom)"
    if n > d:
        eig = np.linalg.eigvalsh(np.cov(z.T).reshape(d, d))
        if eig[0] <= 1e-12 * max(eig[-1], 1e-300):
            return "the latents lie on a lower-dimensional subspace"
    return ""


def _knn_entropy(z: FloatArray, k: int) -> float:
    """Kozachenko-Leonenko estimate of the differential entropy (nats) of the points ``z``."""
    n, d = z.shape
    sq = (z * z).sum(axis=1)
    dist2 = np.maximum(sq[:, None] + sq[None, :] - 2 * z @ z.T, 0.0)
    np.fill_diagonal(dist2, np.inf)
    eps = np.sqrt(np.partition(dist2, k - 1, axis=1)[:, k - 1])
    if (eps <= 0).any():
        return -math.inf
    log_ball = (d / 2) * math.log(math.pi) - math.lgamma(d / 2 + 1)
    return _digamma_int(n) - _digamma_int(k) + log_ball + d * float(np.log(eps).mean())


def kl_estimate(z: FloatArray, labels: NDArray[np.int64], mixture: Mixture, k: int = 3) -> KLEstimate:
    """The estimate of ``KL(P || Q)`` described in the module docstring, on points ``z``
    with their labels (held-out data)."""
    n = len(z)
    reason = degenerate(z)
    per_class = []
    total = 0.0
    for c in range(mixture.n_classes):
        zc = z[labels == c]
        if len(zc) <= k:
            per_class.append(math.nan)
            continue
        entropy = _knn_entropy(zc, k)
        cross = -float(mixture.log_density(zc, np.full(len(zc), c)).mean())
        value = math.inf if reason or entropy == -math.inf else cross - entropy
        per_class.append(value)
        total += len(zc) / n * value
    share = np.bincount(labels, minlength=mixture.n_classes) / n
    present = share > 0
    total += float((share[present] * np.log(share[present] / mixture.priors[present])).sum())
    if not reason and any(v == math.inf for v in per_class):
        reason = "two points of a class coincide"
    return KLEstimate(math.inf if reason else total, tuple(per_class), n, k, reason)


def shared_covariance_kl(mixture: Mixture) -> list[float] | None:
    """Per class ``k``, ``KL(N(mu_k, Sigma_k) || N(mu_k, Sigma))``: how far the class's own
    Gaussian (its covariance ``Sigma_k``, fitted with ``--per-class-covariance``) is from
    the shared-covariance one the classifier assumes (0: the same; ``inf`` where
    ``Sigma_k`` is singular). ``None`` without per-class covariances."""
    if mixture.class_covariances is None:
        return None
    shared = mixture.cholesky
    logdet = 2 * float(np.log(np.diag(shared)).sum())
    out = []
    for cov in mixture.class_covariances:
        sign, own = np.linalg.slogdet(cov)
        if sign <= 0:
            out.append(math.inf)
            continue
        solved = np.linalg.solve(shared, np.linalg.solve(shared, cov).T)  # L^-1 (L^-1 Sigma_k)^T
        out.append(0.5 * (float(np.trace(solved)) - mixture.dim + logdet - float(own)))
    return out


def diagnostics(mixture: Mixture, weight: FloatArray, bias: FloatArray, z_test: FloatArray,
                y_test: NDArray[np.int64], samples: int = 20000, seed: int = 0) -> dict[str, object]:
    """Predicted (mixture) and measured (held-out latents) certified accuracy at the latent
    L2 radii :data:`RADII_IN_SIGMA` (times the latents' spread), the KL estimate and the
    Pinsker bound it implies, and (with per-class covariances) :func:`shared_covariance_kl`,
    as a JSON-ready dict."""
    spread = math.sqrt(float(np.trace(mixture.covariance)) / mixture.dim)
    rhos = np.array(RADII_IN_SIGMA) * spread
    predicted = predicted_certified_accuracy(mixture, weight, bias, rhos, samples, seed)
    measured = certified_accuracy(latent_l2_radii(weight, bias, z_test, y_test), rhos)
    kl = kl_estimate(z_test, y_test, mixture)
    per_class = shared_covariance_kl(mixture)
    bound = np.maximum(predicted - kl.pinsker, 0.0) if math.isfinite(kl.pinsker) else np.zeros_like(predicted)
    return {"latent_spread": spread, "latent_radii": rhos.tolist(), "predicted_certified_accuracy": predicted.tolist(),
            "measured_certified_accuracy": measured.tolist(), "pinsker_lower_bound": bound.tolist(),
            "kl_estimate": kl.value if math.isfinite(kl.value) else "inf", "kl_reason": kl.reason,
            "kl_points": kl.points, "kl_neighbours": kl.k, "samples": samples,
            "kl_per_class": [v if math.isfinite(v) else str(v) for v in kl.per_class],
            "shared_covariance_kl": None if per_class is None else [v if math.isfinite(v) else str(v)
                                                                    for v in per_class]}


__all__ = ["KLEstimate", "asdict", "binary_isotropic_prediction", "certified_accuracy", "degenerate", "diagnostics",
           "kl_estimate", "latent_l2_radii", "predicted_certified_accuracy", "shared_covariance_kl"]
