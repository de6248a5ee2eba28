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

from .errors import InputDataError, LabelError, ModelError, ValueRangeError

FloatArray = NDArray[np.float64]


def apply_final(op: str, scores: ArrayLike) -> FloatArray:
    """A model file's outputs from its IR's scores (float64, along the last axis): the
    final ``op`` its IR dropped (``"Softmax"``, ``"LogSoftmax"``) applied, or the scores
    where ``op`` is ``""``. An estimate in float64, not rounded outward."""
    z = np.asarray(scores, dtype=np.float64)
    if not op:
        return z
    with np.errstate(over="ignore", invalid="ignore"):
        shifted = z - z.max(axis=-1, keepdims=True)
        lse = np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
        return np.exp(shifted - lse) if op == "Softmax" else shifted - lse


class Classifier:
    """Mixin of the IRs: subclasses provide ``n_inputs``, ``n_classes``, :meth:`forward`
    (float64 logits), :meth:`margin_errors` (a proven bound of the float64 margin's
    rounding error) and :meth:`exact_margin` (exact arithmetic on the stored weights)."""

    n_inputs: int
    n_classes: int
    #: The largest input magnitude for which the ONNX importer proved that the model file's
    #: float32 values stay in float32's range where onnxruntime computes them (the bounds it
    #: checks grow at most linearly with the inputs beyond magnitude 1); ``inf`` for a model
    #: not read from a float32 file. Beyond it onnxruntime's values may overflow where the
    #: IR's (exact) do not: :meth:`check_input_range` refuses such domains.
    input_bound: float
    #: ``"Softmax"`` or ``"LogSoftmax"`` where the model file ends in one that the importer
    #: dropped (it keeps the order of the class scores, so robustness is the same), else
    #: ``""``: the IR's outputs are the scores before it, and a property on the outputs
    #: themselves (not only on their order) is not the file's
    #: (:meth:`~parallelepipedonn.vnnlib.VnnlibProperty.check_final`).
    dropped_final: str
    #: The sha256 of the bytes the model was read from (``load_onnx``): what certificates
    #: record, so that a file replaced after it was read is not taken for the model; ""
    #: for a model built in Python.
    file_sha256: str
    #: How many constant-zero scores follow the model file's outputs in the IR: 1 for a
    #: single-output (regression) network read for VNN-LIB properties
    #: (``load_onnx(..., pad_outputs=True)``), whose IR needs two scores; else 0. Such a
    #: model is no classifier: its outputs are the first :attr:`n_outputs` scores, and only
    #: properties of them are asked of it (:meth:`check_classifier`).
    zero_outputs: int

    @property
    def n_outputs(self) -> int:
        """The model file's outputs: the first ``n_outputs`` of the IR's scores."""
        return self.n_classes - self.zero_outputs

    def zero_note(self) -> str:
        """What :meth:`describe` adds for :attr:`zero_outputs` ("" without)."""
        return f" ({self.n_outputs} model output(s), then {self.zero_outputs} constant 0 score(s))" \
            if self.zero_outputs else ""

    def check_classifier(self, what: str = "this") -> None:
        """:class:`ModelError` where the IR's scores are not all the model's
        (:attr:`zero_outputs`): robustness of a class means nothing for it."""
        if self.zero_outputs:
            raise ModelError(f"the network has {self.n_outputs} output(s): {what} needs a classifier (at least 2 "
                             "outputs); `verify --vnnlib` answers VNN-LIB properties of it")

    def model_digest(self, path: object | None) -> str | None:
        """The sha256 to record for the model file ``path``: :attr:`file_sha256` where the
        model was read from a file, else the file's own (``None`` without a path)."""
        if self.file_sha256:
            return self.file_sha256
        if path is None:
            return None
        from .io_utils import sha256_file

        return sha256_file(path)

    def forward(self, x: ArrayLike) -> FloatArray:
        raise NotImplementedError

    def check_input_range(self, lower: ArrayLike, upper: ArrayLike, what: str = "the domain") -> None:
        """:class:`ValueRangeError` if the box ``[lower, upper]`` reaches inputs beyond
        :attr:`input_bound` (the IR would then not be what onnxruntime computes there)."""
        reach = max(float(np.max(np.abs(lower), initial=0.0)), float(np.max(np.abs(upper), initial=0.0)))
        if not reach <= self.input_bound:
            raise ValueRangeError(f"{what} reaches inputs of magnitude {reach:.6g}; the model file's float32 values "
                                  f"are proven in range only up to {self.input_bound:.6g} (onnxruntime's may "
                                  "overflow beyond it, where the IR computes exactly)")

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
