"""What every IR (the chain :class:`~parallelepipedonn.network.Network`, the DAG
:class:`~parallelepipedonn.graph.Graph`) derives from its own forward pass, rounding-error
bound and exact margin: the input layout, predictions, labels, margins and the exact
decision of misclassification."""

from __future__ import annotations

import operator
from collections.abc import Callable
from fractions import Fraction
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .errors import InputDataError, LabelError

FloatArray = NDArray[np.float64]


class Classifier:
    """Mixin of the IRs: subclasses provide ``n_inputs``, ``n_classes``, :meth:`forward`
    (float64 logits), :meth:`margin_errors` (a proven bound of the float64 margin's
    rounding error) and :meth:`exact_margin` (exact arithmetic on the stored weights)."""

    n_inputs: int
    n_classes: int

    def forward(self, x: ArrayLike) -> FloatArray:
        raise NotImplementedError

    def margin_errors(self, x: ArrayLike, label: int) -> tuple[FloatArray, FloatArray]:
        raise NotImplementedError

    def exact_margin(self, x: ArrayLike, label: int) -> Fraction:
        raise NotImplementedError

    def flatten_inputs(self, x: ArrayLike) -> FloatArray:
        """Points as a ``(k, n)`` float64 array (accepts ``(n,)``, ``(k, n)`` or
        ``(k, *input_shape)``)."""
        a = np.asarray(x, dtype=np.float64)
        n = self.n_inputs
        if a.size % n != 0 or a.size == 0:
            raise InputDataError(f"got {a.size} values, the network expects a multiple of {n}")
        return a.reshape(-1, n)

    def predict(self, x: ArrayLike) -> NDArray[np.int64]:
        """Arg-max class of each point (lowest index on ties)."""
        return np.argmax(self.forward(x), axis=1)

    def check_label(self, label: int) -> int:
        if not (isinstance(label, (int, np.integer)) and 0 <= int(label) < self.n_classes):
            raise LabelError(f"label {label!r} is not a class of the network (0..{self.n_classes - 1})")
        return int(label)

    def margins(self, x: ArrayLike, label: int) -> FloatArray:
        """``logit_label - max_{j != label} logit_j`` per point (float64): the point is
        classified ``label`` robustly (no ties) iff its exact margin is > 0."""
        label = self.check_label(label)
        logits = self.forward(x)
        others = np.delete(logits, label, axis=1)
        with np.errstate(invalid="ignore"):
            return logits[:, label] - others.max(axis=1)

    def misclassified(self, x: ArrayLike, label: int) -> NDArray[np.bool_]:
        """Per point: is its exact margin ``<= 0`` (not classified ``label`` with a strictly
        larger logit)? Decided by the float64 margin where it is farther from 0 than its
        rounding error (:meth:`margin_errors`), in exact arithmetic otherwise — also where
        the float64 pass overflows (a margin or error bound that is not a finite number)."""
        return self._exact_sign(x, label, operator.le)

    def class_points(self, x: ArrayLike, label: int) -> NDArray[np.bool_]:
        """Per point: is its exact margin ``>= 0`` (classified ``label``, ties included: the
        points a dual box must hold)? Decided as :meth:`misclassified` decides."""
        return self._exact_sign(x, label, operator.ge)

    def _exact_sign(self, x: ArrayLike, label: int, compare: Callable[[Any, Any], Any]) -> NDArray[np.bool_]:
        """Per point, ``compare(exact margin, 0)``: from the float64 margin where it is
        farther from 0 than its rounding error, in exact arithmetic otherwise."""
        pts = self.flatten_inputs(x)
        with np.errstate(over="ignore", invalid="ignore"):
            margin, err = self.margin_errors(pts, label)
            decided = np.isfinite(margin) & np.isfinite(err) & (np.abs(margin) > err)
        out = np.asarray(compare(margin, 0))
        for i in np.flatnonzero(~decided):
            out[i] = compare(self.exact_margin(pts[i], label), 0)
        return out
