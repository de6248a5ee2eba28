"""A latent-mixture classifier as one ONNX file: an encoder, then the mixture's Bayes rule
as one affine layer (Gemm), with the fit in the model's metadata.

The file is an ordinary ONNX ReLU classifier (float32 weights, like the tool's other
networks), so every oracle, search and command reads it; what the tool certifies is its
IR, as for any model (:func:`~parallelepipedonn.onnx_import.load_onnx`: a linear encoder
and the head fold into one affine map). :func:`load_gmm` also reads the parts:

* the **encoder**: the sub-graph from the input to the latent tensor named in the
  metadata, imported as a chain (its digest must be the one recorded at fit time);
* the **head**: the Gemm after it, its float32 weights exactly as stored;
* the **mixture**: means, shared covariance, priors, shrinkage (metadata ``gmm_mixture``),
  whose Bayes rule the head must be (rounded to float32).

Metadata: ``gmm`` (JSON: format and version, the latent tensor and head node, the encoder
kind and fingerprint, the dataset, accuracies, diagnostics) and ``gmm_mixture`` (JSON).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from numpy.typing import ArrayLike, NDArray
from onnx import TensorProto, helper, numpy_helper

from .._version import __version__
from ..errors import ConfigError, ModelError
from ..io_utils import atomic_write_bytes
from ..network import Affine, Network
from ..onnx_export import chain_nodes, finish_model, input_nodes
from ..onnx_import import model_from_onnx, network_from_onnx
from ..tolerances import GMM_HEAD_RTOL, smallest_subnormal
from .lipschitz import chain_lipschitz, margin_lipschitz
from .mixture import Mixture
from .radii import HeadRows, head_rows

FloatArray = NDArray[np.float64]

GMM_FORMAT = "parallelepipedonn-gmm"
GMM_VERSION = 1
META_KEY, MIXTURE_KEY = "gmm", "gmm_mixture"
HEAD_NODE = "gmm_head"
ENCODERS = ("pca", "penultimate", "trained")



def round_to_float32(net: Network) -> Network:
    """``net`` with its weights rounded to float32: the network an ONNX file stores."""
    layers = [Affine(layer.weight.astype(np.float32).astype(np.float64),
                     layer.bias.astype(np.float32).astype(np.float64)) if isinstance(layer, Affine) else layer
              for layer in net.layers]
    return Network(net.input_shape, tuple(layers), net.name)


@dataclass(frozen=True, eq=False)
class GmmClassifier:
    """A latent-mixture classifier read from its ONNX file: ``network`` (the IR every
    oracle certifies), ``encoder`` (input -> latent), the head ``W z + b`` as stored,
    the ``mixture`` and the ``info`` of the metadata."""

    network: Network
    encoder: Network
    head_weight: FloatArray
    head_bias: FloatArray
    mixture: Mixture
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def linear(self) -> bool:
        """Whether the whole classifier is one affine map (a linear encoder): its input
        certificates are then exact in closed form."""
        return len(self.network.layers) == 1

    @property
    def latent_dim(self) -> int:
        return int(self.head_weight.shape[1])

    @property
    def encoder_kind(self) -> str:
        return str(self.info.get("encoder", "unknown"))

    def latent(self, x: ArrayLike) -> tuple[FloatArray, FloatArray]:
        """The float64 latents of points ``x`` and per coordinate a proven bound of their
        rounding error (the exact latents lie within it)."""
        return self.encoder.forward_errors(x)

    @cached_property
    def encoder_lipschitz(self) -> float:
        """A proven upper bound of the encoder's L2 Lipschitz constant."""
        return chain_lipschitz(self.encoder)

    @cached_property
    def _margin_lipschitz(self) -> dict[int, FloatArray]:
        return {}

    @cached_property
    def _head_rows(self) -> dict[int, HeadRows]:
        return {}

    def head_rows(self, label: int) -> HeadRows:
        """The head's margins for ``label`` with their proven norms (the latent radii's
        per-model part; cached)."""
        if label not in self._head_rows:
            self._head_rows[label] = head_rows(self.head_weight, self.head_bias, label, self.mixture.covariance)
        return self._head_rows[label]

    def margin_lipschitz(self, label: int) -> FloatArray:
        """Proven upper bounds of the L2 Lipschitz constants of the classifier's margins
        for ``label`` (per other class; cached)."""
        if label not in self._margin_lipschitz:
            self._margin_lipschitz[label] = margin_lipschitz(self.network, label)
        return self._margin_lipschitz[label]


# -- writing ---------------------------------------------------------------------------------
def _float32_head(w: FloatArray, b: FloatArray) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """The head's weights and offsets in float32, or :class:`ConfigError` where they do not
    fit it (overflow, or nonzero weights all below its range): the latents' scale is
    outside what a float32 head can classify."""
    with np.errstate(over="ignore"):
        w32, b32 = w.astype(np.float32), b.astype(np.float32)
    if not (np.isfinite(w32).all() and np.isfinite(b32).all()) or (np.any(w != 0) and not np.any(w32 != 0)):
        raise ConfigError(f"the mixture's head (weights up to {float(np.abs(w).max()):.3g}, offsets up to "
                          f"{float(np.abs(b).max()):.3g}) does not fit float32: the encoder's latents are on a scale "
                          "no float32 head can classify; rescale the encoder")
    return w32, b32


def build_model(encoder: Network, mixture: Mixture, info: dict[str, Any], name: str = "gmm") -> onnx.ModelProto:
    """The ONNX classifier ``head(encoder(x))`` (float32 weights: the encoder as given —
    already rounded, see :func:`round_to_float32` — and the mixture's head rounded), with
    ``info`` and the mixture in its metadata."""
    if encoder.n_classes != mixture.dim:
        raise ModelError(f"the encoder has {encoder.n_classes} outputs, the mixture {mixture.dim} dimensions")
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []
    latent = chain_nodes(encoder, input_nodes(encoder, nodes), nodes, inits, prefix="encoder_")
    w, b = mixture.head
    w32, b32 = _float32_head(w, b)
    inits += [numpy_helper.from_array(w32, f"{HEAD_NODE}_W"), numpy_helper.from_array(b32, f"{HEAD_NODE}_B")]
    nodes.append(helper.make_node("Gemm", [latent, f"{HEAD_NODE}_W", f"{HEAD_NODE}_B"], ["scores"], transB=1,
                                  name=HEAD_NODE))
    doc = f"latent Gaussian-mixture classifier ({info.get('encoder', 'encoder')} encoder) written by parallelepipedonn"
    model = finish_model(nodes, inits, name, encoder.input_shape, mixture.n_classes, doc)
    meta = {"format": GMM_FORMAT, "format_version": GMM_VERSION, "latent_tensor": latent, "head_node": HEAD_NODE,
            "latent_dim": mixture.dim, "encoder_digest": _encoder_of(model, latent, mixture.dim).digest, **info}
    set_metadata(model, meta, mixture)
    return model


def set_metadata(model: onnx.ModelProto, meta: dict[str, Any], mixture: Mixture) -> None:
    """Replace the model's metadata by ``meta`` and the mixture (and the tool's version)."""
    del model.metadata_props[:]
    helper.set_model_props(model, {"parallelepipedonn_version": __version__, META_KEY: json.dumps(meta, allow_nan=False),
                                   MIXTURE_KEY: mixture.to_json()})


def save_model(model: onnx.ModelProto, path: str | Path) -> None:
    atomic_write_bytes(Path(path), model.SerializeToString())


# -- reading ---------------------------------------------------------------------------------
def _encoder_of(model: onnx.ModelProto, latent: str, dim: int) -> Network:
    """The sub-graph of ``model`` from its input to the tensor ``latent``, as a chain."""
    sub = onnx.ModelProto()
    sub.CopyFrom(model)
    g = sub.graph
    producer = [k for k, node in enumerate(g.node) if latent in node.output]
    if not producer:
        raise ModelError(f"the mixture metadata names the latent tensor {latent!r}, which no node of the model makes")
    kept = list(g.node[:producer[0] + 1])
    del g.node[:]
    g.node.extend(kept)
    used = {i for node in kept for i in node.input}
    inits = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(inits)
    del g.output[:]
    g.output.append(helper.make_tensor_value_info(latent, TensorProto.FLOAT, ["N", dim]))
    del sub.metadata_props[:]
    try:
        return network_from_onnx(sub, "encoder")
    except ModelError as exc:
        raise ModelError(f"the encoder of the mixture classifier is not a ReLU chain: {exc}") from exc


def _head_of(model: onnx.ModelProto, latent: str, node_name: str) -> tuple[FloatArray, FloatArray]:
    nodes = [n for n in model.graph.node if n.name == node_name]
    if len(nodes) != 1 or nodes[0].op_type != "Gemm" or list(nodes[0].input[:1]) != [latent] or len(nodes[0].input) != 3:
        raise ModelError(f"the model has no Gemm node {node_name!r} reading the latent {latent!r} (the mixture head)")
    node = nodes[0]
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if attrs.get("transA", 0) != 0 or attrs.get("transB", 0) != 1 or attrs.get("alpha", 1.0) != 1.0 \
            or attrs.get("beta", 1.0) != 1.0:
        raise ModelError(f"the head node {node_name!r} must be a plain Gemm with transB=1")
    if node.output[0] != model.graph.output[0].name:
        raise ModelError(f"the head node {node_name!r} is not the model's last node")
    inits = {t.name: numpy_helper.to_array(t).astype(np.float64) for t in model.graph.initializer}
    if node.input[1] not in inits or node.input[2] not in inits:
        raise ModelError(f"the head node {node_name!r} must have constant weights")
    return inits[node.input[1]], inits[node.input[2]]


def metadata(model: onnx.ModelProto, name: str = "model") -> tuple[dict[str, Any], Mixture]:
    """The mixture metadata of an ONNX model (:class:`ModelError`, one line, if absent or
    malformed)."""
    props = {p.key: p.value for p in model.metadata_props}
    if META_KEY not in props or MIXTURE_KEY not in props:
        raise ModelError(f"model {name!r} has no mixture metadata: not a latent-mixture classifier (write one with "
                         f"'parallelepipedonn gmm fit')")
    try:
        meta = json.loads(props[META_KEY])
        mixture = Mixture.from_dict(json.loads(props[MIXTURE_KEY]))
    except json.JSONDecodeError as exc:
        raise ModelError(f"model {name!r} has malformed mixture metadata: {exc}") from exc
    if not isinstance(meta, dict) or meta.get("format") != GMM_FORMAT:
        raise ModelError(f"model {name!r} has malformed mixture metadata (format {meta.get('format')!r})"
                         if isinstance(meta, dict) else f"model {name!r} has malformed mixture metadata")
    if int(meta.get("format_version", 0)) > GMM_VERSION:
        raise ModelError(f"model {name!r}: mixture metadata version {meta['format_version']} is newer than this tool's")
    return meta, mixture


def classifier_from_onnx(model: onnx.ModelProto, name: str = "model") -> GmmClassifier:
    """The :class:`GmmClassifier` of a loaded ONNX model, its parts checked against each
    other and against the metadata (:class:`ModelError`, one line, otherwise)."""
    meta, mixture = metadata(model, name)
    try:
        latent, head_node, dim = str(meta["latent_tensor"]), str(meta["head_node"]), int(meta["latent_dim"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"model {name!r} has malformed mixture metadata: missing {exc}") from exc
    network = model_from_onnx(model, name)
    if not isinstance(network, Network):
        raise ModelError(f"model {name!r} is not a ReLU chain (a graph with convolutions or residual connections)")
    encoder = _encoder_of(model, latent, dim)
    if meta.get("encoder_digest") not in (None, encoder.digest):
        raise ModelError(f"model {name!r}: its encoder is not the one the mixture was fitted on (digest differs)")
    w, b = _head_of(model, latent, head_node)
    if w.shape != (mixture.n_classes, mixture.dim) or b.shape != (mixture.n_classes,) or encoder.n_classes != dim \
            or mixture.dim != dim:
        raise ModelError(f"model {name!r}: head {w.shape}, latent dimension {dim}, encoder output {encoder.n_classes} "
                         f"and mixture ({mixture.n_classes} classes, dimension {mixture.dim}) do not agree")
    try:
        fw, fb = mixture.head
    except ConfigError:  # (its message is advice for fitting)
        raise ModelError(f"model {name!r}: the covariance in its metadata is singular or not positive definite "
                         "(not a mixture this tool fits)") from None
    # absolute room: float32's smallest subnormal, and the relative room of the largest entry
    # of the row (an entry far below its row's scale may differ in relative terms on another
    # machine), of all offsets for the offsets
    tiny = smallest_subnormal(np.float32)  # a head entry rounded to float32: off by at most half of it, absolutely
    atol_w = GMM_HEAD_RTOL * np.abs(fw).max(axis=1, keepdims=True, initial=0.0) + tiny
    atol_b = GMM_HEAD_RTOL * float(np.abs(fb).max(initial=0.0)) + tiny
    if not (bool(np.all(np.abs(w - fw) <= atol_w + GMM_HEAD_RTOL * np.abs(fw))) and np.allclose(b, fb, rtol=GMM_HEAD_RTOL, atol=atol_b)):
        raise ModelError(f"model {name!r}: its head is not the Bayes rule of the mixture in its metadata")
    return GmmClassifier(network, encoder, w, b, mixture, meta)


def load_gmm(path: str | Path) -> GmmClassifier:
    """Read a latent-mixture classifier file (:func:`classifier_from_onnx`)."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise ModelError(f"cannot read model file {str(p)!r}: {exc.strerror or exc}") from exc
    try:
        model = onnx.load_from_string(data)
    except Exception as exc:  # protobuf DecodeError, ...
        raise ModelError(f"model {p.name!r} is not a valid ONNX model: {str(exc).splitlines()[0] if str(exc) else exc}"
                         ) from exc
    c = classifier_from_onnx(model, p.name)
    return dataclasses.replace(c, network=dataclasses.replace(c.network, file_sha256=hashlib.sha256(data).hexdigest()))
