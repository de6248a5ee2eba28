"""A Gaussian mixture over latents, fitted per class, and its Bayes rule as one affine layer.

Fit (:func:`fit_mixture`, float64 throughout): class means ``mu_k``, priors ``pi_k`` (the
class frequencies), and the pooled within-class covariance
``Sigma = sum_k sum_(i in k) (z_i - mu_k)(z_i - mu_k)^T / (N - K)``, shrunk towards a
multiple of the identity, ``Sigma <- (1 - lambda) Sigma + lambda (tr Sigma / d) I``.
Optionally the per-class covariances (shrunk the same way) for the diagnostics; the
classifier uses the shared covariance, whose Bayes rule is affine.

Bayes rule (:meth:`Mixture.head`): ``s_k(z) = w_k^T z + b_k`` with ``w_k = Sigma^-1 mu_k``
and ``b_k = -1/2 mu_k^T Sigma^-1 mu_k + log pi_k`` (Cholesky solves); predict the arg-max.
The margin against class ``j`` of the prediction ``c`` is ``g_j(z) = a_j^T z + c_j`` with
``a_j = Sigma^-1 (mu_c - mu_j)``: the decision regions are polyhedra.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ..errors import ConfigError, InputDataError, ModelError

FloatArray = NDArray[np.float64]

#: The default shrinkage ``lambda`` of the covariance towards ``(tr Sigma / d) I``.
DEFAULT_SHRINKAGE = 1e-2

#: A covariance whose smallest eigenvalue is below this fraction of its largest counts as
#: singular (its Cholesky solves would carry no correct digit).
SINGULAR_RCOND = 1e-12


def shrink(cov: FloatArray, shrinkage: float) -> FloatArray:
    """``(1 - lambda) cov + lambda (tr cov / d) I``."""
    d = cov.shape[0]
    return (1 - shrinkage) * cov + shrinkage * (np.trace(cov) / d) * np.eye(d)


def check_covariance(cov: FloatArray, what: str, shrinkage: float) -> FloatArray:
    """The Cholesky factor of ``cov``; :class:`ConfigError` if it is singular (or nearly:
    :data:`SINGULAR_RCOND`), naming the cure."""
    eig = np.linalg.eigvalsh(cov)
    top = float(eig[-1])
    if not (top > 0 and float(eig[0]) > SINGULAR_RCOND * top):
        rank = int((eig > SINGULAR_RCOND * max(top, 0.0)).sum()) if top > 0 else 0
        cure = ("use a shrinkage > 0 (--shrinkage)" if shrinkage == 0 else
                "every latent of a class is the same point: no shrinkage makes a covariance of it" if top <= 0 else
                "use a larger shrinkage (--shrinkage)")
        raise ConfigError(f"the {what} of the latents is singular (rank {rank} of {cov.shape[0]}): {cure}")
    try:
        return np.linalg.cholesky(cov)
    except np.linalg.LinAlgError as exc:
        raise ConfigError(f"the {what} of the latents is not positive definite: {exc}") from exc


def cho_solve(chol: FloatArray, rhs: FloatArray) -> FloatArray:
    """``Sigma^-1 rhs`` from the Cholesky factor ``L`` of ``Sigma`` (two triangular solves)."""
    return np.linalg.solve(chol.T, np.linalg.solve(chol, rhs))


@dataclass(frozen=True, eq=False)
class Mixture:
    """A Gaussian mixture with a shared covariance: ``z | y = k ~ N(means[k], covariance)``,
    ``y ~ priors``. ``counts``: training latents per class; ``class_covariances`` (optional,
    diagnostics only): each class's own covariance, shrunk the same way."""

    means: FloatArray
    covariance: FloatArray
    priors: FloatArray
    shrinkage: float
    counts: tuple[int, ...]
    class_covariances: FloatArray | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        means = np.array(self.means, dtype=np.float64)
        cov = np.array(self.covariance, dtype=np.float64)
        priors = np.array(self.priors, dtype=np.float64)
        if means.ndim != 2 or cov.shape != (means.shape[1],) * 2 or priors.shape != (means.shape[0],):
            raise ModelError(f"malformed mixture: means {means.shape}, covariance {cov.shape}, priors {priors.shape}")
        if not (np.isfinite(means).all() and np.isfinite(cov).all() and np.isfinite(priors).all()):
            raise ModelError("the mixture has NaN or infinite parameters")
        if (priors <= 0).any() or abs(priors.sum() - 1) > 1e-9:
            raise ModelError("the mixture's priors must be positive and sum to 1")
        if not np.array_equal(cov, cov.T):
            raise ModelError("the mixture's covariance is not symmetric")
        for a in (means, cov, priors):
            a.setflags(write=False)
        object.__setattr__(self, "means", means)
        object.__setattr__(self, "covariance", cov)
        object.__setattr__(self, "priors", priors)

    @property
    def n_classes(self) -> int:
        return int(self.means.shape[0])

    @property
    def dim(self) -> int:
        return int(self.means.shape[1])

    @cached_property
    def cholesky(self) -> FloatArray:
        return check_covariance(self.covariance, "covariance", self.shrinkage)

    @cached_property
    def head(self) -> tuple[FloatArray, FloatArray]:
        """The Bayes rule's affine scores ``(W, b)``: ``W[k] = Sigma^-1 mu_k``,
        ``b[k] = -1/2 mu_k^T Sigma^-1 mu_k + log pi_k`` (float64, Cholesky solves)."""
        w = cho_solve(self.cholesky, self.means.T).T
        b = -0.5 * np.einsum("kd,kd->k", self.means, w) + np.log(self.priors)
        return w, b

    def scores(self, z: ArrayLike) -> FloatArray:
        w, b = self.head
        return np.asarray(z, dtype=np.float64) @ w.T + b

    def log_density(self, z: ArrayLike, y: ArrayLike) -> FloatArray:
        """``log N(z; mu_y, Sigma)`` per point (the class-conditional density)."""
        za = np.asarray(z, dtype=np.float64)
        diff = za - self.means[np.asarray(y)]
        sol = np.linalg.solve(self.cholesky, diff.T)
        logdet = 2 * np.log(np.diag(self.cholesky)).sum()
        return -0.5 * ((sol * sol).sum(axis=0) + logdet + self.dim * math.log(2 * math.pi))

    def sample(self, n: int, rng: np.random.Generator) -> tuple[FloatArray, NDArray[np.int64]]:
        """``n`` draws ``(z, y)`` of the mixture."""
        y = rng.choice(self.n_classes, size=n, p=self.priors)
        z = self.means[y] + rng.standard_normal((n, self.dim)) @ self.cholesky.T
        return z, y

    # -- stored form ----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"means": self.means.tolist(), "covariance": self.covariance.tolist(), "priors": self.priors.tolist(),
                "shrinkage": self.shrinkage, "counts": list(self.counts),
                "class_covariances": None if self.class_covariances is None else self.class_covariances.tolist(),
                **self.extra}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), allow_nan=False)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Mixture:
        try:
            known = {"means", "covariance", "priors", "shrinkage", "counts", "class_covariances"}
            cc = d.get("class_covariances")
            return cls(np.asarray(d["means"], dtype=np.float64), np.asarray(d["covariance"], dtype=np.float64),
                       np.asarray(d["priors"], dtype=np.float64), float(d["shrinkage"]),
                       tuple(int(c) for c in d["counts"]),
                       None if cc is None else np.asarray(cc, dtype=np.float64),
                       {k: v for k, v in d.items() if k not in known})
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"malformed mixture metadata: {exc}") from exc


def fit_mixture(latents: ArrayLike, labels: ArrayLike, n_classes: int, shrinkage: float = DEFAULT_SHRINKAGE,
                per_class: bool = False) -> Mixture:
    """Fit the shared-covariance mixture to training latents (module docstring).

    Errors (:class:`ConfigError`, one line): a latent dimension larger than the training
    set supports (the pooled covariance of ``N`` latents in ``K`` classes has rank at most
    ``N - K``), a class without latents, a shrinkage outside [0, 1], a singular covariance
    (without shrinkage: the cure is ``--shrinkage``)."""
    z = np.asarray(latents, dtype=np.float64)
    y = np.asarray(labels)
    if z.ndim != 2 or y.shape != (z.shape[0],):
        raise InputDataError(f"expected latents (N, d) and N labels, got {z.shape} and {y.shape}")
    if not np.isfinite(z).all():
        raise InputDataError("the latents contain NaN or infinite values")
    if not 0 <= shrinkage <= 1:
        raise ConfigError(f"the shrinkage must lie in [0, 1], got {shrinkage}")
    n, d = z.shape
    counts = np.bincount(y.astype(np.int64), minlength=n_classes)
    if counts.size != n_classes or (y < 0).any():
        raise InputDataError(f"labels must be classes 0..{n_classes - 1}")
    if (counts == 0).any():
        raise ConfigError(f"class {int(np.argmin(counts))} has no training latent")
    if d > n - n_classes:
        raise ConfigError(f"latent dimension {d} is larger than the training set supports: {n} latents in "
                          f"{n_classes} classes give a covariance of rank at most {n - n_classes}")
    means = np.stack([z[y == k].mean(axis=0) for k in range(n_classes)])
    centred = z - means[y]
    cov = shrink(centred.T @ centred / (n - n_classes), shrinkage)
    cov = (cov + cov.T) / 2
    check_covariance(cov, "covariance", shrinkage)
    class_covs = None
    if per_class:
        if (counts < 2).any():
            raise ConfigError(f"class {int(np.argmin(counts))} has fewer than 2 latents: no covariance of its own")
        class_covs = np.stack([shrink(np.cov(z[y == k].T, ddof=1).reshape(d, d), shrinkage) for k in range(n_classes)])
        class_covs = (class_covs + class_covs.transpose(0, 2, 1)) / 2
    return Mixture(means, cov, counts / n, float(shrinkage), tuple(int(c) for c in counts), class_covs)
