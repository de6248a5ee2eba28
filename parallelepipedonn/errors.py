"""Typed exceptions of the library.

The library raises these; only the CLI turns them into exit codes (``exit_code``).
Every message is meant to be shown to a user as one line.
"""

from __future__ import annotations


class ParallelepipedoNNError(Exception):
    """Base class of every error the library raises on purpose."""

    exit_code: int = 1


class ModelError(ParallelepipedoNNError):
    """The network file cannot be read or is not a supported feed-forward ReLU classifier."""

    exit_code = 2


class UnsupportedOperatorError(ModelError):
    """An ONNX node whose operator (or use of it) the importer does not support."""

    def __init__(self, node_name: str, op_type: str, detail: str = "") -> None:
        self.node_name = node_name
        self.op_type = op_type
        msg = f"unsupported ONNX node {node_name!r} (op {op_type})"
        super().__init__(f"{msg}: {detail}" if detail else msg)


class ValueRangeError(ModelError):
    """A model whose values would leave its float type's range in onnxruntime (overflow to
    infinity, or an underflow to 0 that the rest of the model amplifies): the IR, exact
    arithmetic on the weights, would not compute what the model computes. A refusal on
    the numbers, not on the structure: no other importer may accept the model instead."""


class ModelTooLargeError(ModelError):
    """A network whose import would build a dense array over the importer's memory limit."""


class NotAChainError(ModelError):
    """A graph whose ReLUs do not form a chain (a residual connection across a ReLU,
    ReLUs side by side): it has no equivalent chain ``Network``, so only the oracles that
    read graphs (``crown``, ``attack``) take it."""


class InputDataError(ParallelepipedoNNError):
    """An input point (or dataset) that is unreadable, malformed, or outside the domain."""

    exit_code = 2


class LabelError(InputDataError):
    """A label that is not a class of the network."""


class PropertyError(InputDataError):
    """A property file (VNN-LIB) that is unreadable, malformed, unsupported, or does not fit
    the model or the domain. ``path`` and ``line`` (1-based, ``None`` for the whole file)
    say where; the message starts with ``path:line:``."""

    def __init__(self, path: str, line: int | None, message: str) -> None:
        self.path = path
        self.line = line
        super().__init__(f"{path}:{line}: {message}" if line is not None else f"{path}: {message}")


class DatasetNotFoundError(InputDataError):
    """The dataset files cannot be found on this machine."""


class OutputPathError(ParallelepipedoNNError):
    """An output file cannot be written."""

    exit_code = 4


class ModelMismatchError(ParallelepipedoNNError):
    """A stored certificate refers to another model file than the one given (sha256 differs)."""

    exit_code = 3


class OracleError(ParallelepipedoNNError):
    """An oracle was misconfigured or asked something it cannot answer."""

    exit_code = 2


class ConfigError(ParallelepipedoNNError):
    """An invalid option value (unknown oracle or algorithm name, bad precision, ...)."""

    exit_code = 2
