"""ParallelepipedoNN: trustworthy robustness certifications for ReLU classifiers.

Quick use::

    import parallelepipedonn as ppn
    net = ppn.load_onnx("model.onnx")
    x = ppn.load_input("digit.csv", net.input_shape)
    cert = ppn.certify(net, x)           # label: the network's prediction
    print(cert.status, cert.apothem)
    cert.save("certificate.json")
"""

from __future__ import annotations

import sys
import types
from typing import TYPE_CHECKING, Any

from ._lazy import lazy_attributes
from ._version import __version__

if TYPE_CHECKING:
    from .batch import BatchInput, BatchReport, certify_batch
    from .box import Box
    from .certificate import Certificate
    from .certify import CertifyConfig, certify
    from .datasets import Dataset, load_dataset
    from .dual import DualBox, dual_box
    from .errors import (
        ConfigError,
        DatasetNotFoundError,
        InputDataError,
        LabelError,
        ModelError,
        ModelMismatchError,
        OracleError,
        OutputPathError,
        ParallelepipedoNNError,
        PropertyError,
        UnsupportedOperatorError,
    )
    from .inputs import load_input
    from .models import default_model_path
    from .network import Affine, Network, ReLU
    from .onnx_export import network_to_onnx, save_onnx
    from .onnx_import import load_onnx, network_from_onnx
    from .plotting import plot_certificate
    from .recheck import Recheck, recheck
    from .search import Problem, SearchResult, Status, make_search
    from .store import ResultStore, StoredResult
    from .threads import configure_threads
    from .verify import Verification, VerifyConfig, verify_epsilon, verify_property
    from .vnnlib import VnnlibProperty, read_vnnlib

# Importing the package is cheap: each public name is imported from its module on first
# use (PEP 562), so that ``parallelepipedonn --version`` or reading a certificate never
# loads torch, pyomo or matplotlib.
_LAZY = {
    "BatchInput": ".batch", "BatchReport": ".batch", "certify_batch": ".batch", "Box": ".box",
    "Certificate": ".certificate", "CertifyConfig": ".certify", "certify": ".certify", "Dataset": ".datasets",
    "load_dataset": ".datasets", "DualBox": ".dual", "dual_box": ".dual", "ConfigError": ".errors",
    "DatasetNotFoundError": ".errors", "InputDataError": ".errors", "LabelError": ".errors",
    "ModelError": ".errors", "ModelMismatchError": ".errors", "OracleError": ".errors",
    "OutputPathError": ".errors", "ParallelepipedoNNError": ".errors", "UnsupportedOperatorError": ".errors",
    "load_input": ".inputs", "default_model_path": ".models", "Affine": ".network", "Network": ".network",
    "ReLU": ".network", "network_to_onnx": ".onnx_export", "save_onnx": ".onnx_export", "load_onnx": ".onnx_import",
    "network_from_onnx": ".onnx_import", "plot_certificate": ".plotting", "Recheck": ".recheck",
    "recheck": ".recheck", "Problem": ".search", "SearchResult": ".search", "Status": ".search",
    "make_search": ".search", "ResultStore": ".store", "StoredResult": ".store", "configure_threads": ".threads",
    "PropertyError": ".errors", "Verification": ".verify", "VerifyConfig": ".verify", "verify_epsilon": ".verify",
    "verify_property": ".verify", "VnnlibProperty": ".vnnlib", "read_vnnlib": ".vnnlib",
}


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)


class _Package(types.ModuleType):
    """The package module: importing the submodule ``certify`` (or ``recheck``) binds it
    on the package; the package's public name stays the function of that name."""

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, types.ModuleType) and _LAZY.get(name) == f".{name}" and hasattr(value, name):
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

__all__ = [
    "Affine", "BatchInput", "BatchReport", "Box", "Certificate", "CertifyConfig", "ConfigError", "Dataset",
    "DatasetNotFoundError", "DualBox", "InputDataError", "LabelError", "ModelError", "ModelMismatchError", "Network",
    "OracleError", "OutputPathError", "ParallelepipedoNNError", "Problem", "PropertyError", "ReLU", "Recheck",
    "ResultStore", "SearchResult", "Status", "StoredResult", "UnsupportedOperatorError", "Verification",
    "VerifyConfig", "VnnlibProperty", "__version__", "certify", "certify_batch", "configure_threads",
    "default_model_path", "dual_box", "load_dataset", "load_input", "load_onnx", "make_search", "network_from_onnx",
    "network_to_onnx", "plot_certificate", "read_vnnlib", "recheck", "save_onnx", "verify_epsilon", "verify_property",
]
