"""ParallelepipedoNN: trustworthy robustness certifications for ReLU classifiers.

Quick use::

    import parallelepipedonn as ppn
    net = ppn.load_onnx("model.onnx")
    x = ppn.load_input("digit.csv", net.input_shape)
    cert = ppn.certify(net, x)           # label: the network's prediction
    print(cert.status, cert.apothem)
    cert.save("certificate.json")
"""

from ._version import __version__
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

__all__ = [
    "Affine", "BatchInput", "BatchReport", "Box", "Certificate", "CertifyConfig", "ConfigError", "Dataset", "DatasetNotFoundError", "DualBox",
    "InputDataError", "LabelError", "ModelError", "ModelMismatchError", "Network", "OracleError", "OutputPathError",
    "ParallelepipedoNNError", "Problem", "ReLU", "Recheck", "ResultStore", "SearchResult", "Status", "StoredResult", "UnsupportedOperatorError",
    "__version__", "certify", "certify_batch", "default_model_path", "dual_box", "load_dataset", "load_input", "load_onnx", "make_search",
    "network_from_onnx", "network_to_onnx", "plot_certificate", "recheck", "save_onnx",
]
