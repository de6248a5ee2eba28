"""Fit a latent-mixture classifier: an encoder's training latents, the mixture, the ONNX file
with the fit, accuracies and diagnostics in its metadata (``parallelepipedonn gmm fit``)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from numpy.typing import NDArray

from ..network import Network
from .diagnostics import diagnostics
from .mixture import DEFAULT_SHRINKAGE, fit_mixture
from .model import GmmClassifier, build_model, classifier_from_onnx, set_metadata

log = logging.getLogger(__name__)

FloatArray = NDArray[np.float64]


@dataclass(frozen=True, eq=False)
class FitResult:
    """The written model, the classifier read back from it, and its accuracies."""

    model: onnx.ModelProto
    classifier: GmmClassifier
    train_accuracy: float
    test_accuracy: float
    seconds: float


def fit_classifier(encoder: Network, train_x: FloatArray, train_y: NDArray[np.int64], test_x: FloatArray,
                   test_y: NDArray[np.int64], n_classes: int, *, shrinkage: float = DEFAULT_SHRINKAGE,
                   per_class: bool = False, info: dict[str, Any] | None = None, name: str = "gmm",
                   diagnostic_samples: int = 20000) -> FitResult:
    """Fit the mixture on the training latents of ``encoder`` (the float32-valued encoder
    the file will store), write the classifier, read it back (every part checked), and
    record the accuracies (of the IR, the network the tool certifies) on both splits and
    the diagnostics (on the test latents) in its metadata."""
    start = time.perf_counter()
    z_train = encoder.forward(train_x)
    mixture = fit_mixture(z_train, train_y, n_classes, shrinkage=shrinkage, per_class=per_class)
    meta = dict(info or {})
    model = build_model(encoder, mixture, meta, name)
    classifier = classifier_from_onnx(model, name)
    net = classifier.network
    train_acc = float((net.predict(train_x) == train_y).mean())
    test_acc = float((net.predict(test_x) == test_y).mean())
    z_test = encoder.forward(test_x)
    diag = diagnostics(mixture, classifier.head_weight, classifier.head_bias, z_test, test_y,
                       samples=diagnostic_samples)
    stored = {**classifier.info, "train_accuracy": round(train_acc, 6), "test_accuracy": round(test_acc, 6),
              "train_size": len(train_y), "test_size": len(test_y), "network": net.describe(),
              "encoder_lipschitz": classifier.encoder_lipschitz, "diagnostics": diag}
    set_metadata(model, stored, mixture)
    classifier = GmmClassifier(net, classifier.encoder, classifier.head_weight, classifier.head_bias, mixture, stored)
    return FitResult(model, classifier, train_acc, test_acc, time.perf_counter() - start)
