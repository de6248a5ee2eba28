"""Numerics of the oracles' tensors: the kernel settings under which torch's products
keep their documented rounding (:func:`sound_kernels`), the absolute rounding error of
narrowing weights below the normal range (:func:`subnormal_rounding`), and boxes as
tensors rounded outward (:func:`box_tensors`)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch

from parallelepipedonn.tolerances import gradual_underflow, smallest_subnormal

Tensor = torch.Tensor


def _fp32_backends() -> list[object]:
    """The backends whose ``fp32_precision`` (torch's newer API: ``"ieee"``, ``"tf32"``,
    ``"bf16"`` or ``"none"``, inheriting) can let float32 products round more coarsely than
    the dtype: oneDNN's convolutions, matrix products and RNNs, cuBLAS's matrix products,
    cuDNN's convolutions and RNNs; those this torch build lacks are skipped. All of them are
    set and restored on any device: ``torch.set_float32_matmul_precision`` moves the CUDA
    ones too."""
    backends = torch.backends
    groups = [("mkldnn", ("conv", "matmul", "rnn")), ("cuda", ("matmul",)), ("cudnn", ("conv", "rnn"))]
    found = []
    for parent, names in groups:
        for name in names:
            obj = getattr(getattr(backends, parent, None), name, None)
            if obj is not None and hasattr(obj, "fp32_precision"):
                found.append(obj)
    return found


class _FullPrecision:
    """torch's process-wide precision settings at full precision while any thread is inside
    :func:`sound_kernels`: set when the first enters, the caller's restored when the last
    leaves (one thread leaving must not hand another, still computing, the caller's reduced
    precision)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._inside = 0
        self._restore: Callable[[], None] | None = None

    def enter(self) -> None:
        with self._lock:
            if self._inside == 0:
                self._restore = _set_full_precision()
            self._inside += 1

    def leave(self) -> None:
        with self._lock:
            self._inside -= 1
            if self._inside == 0 and self._restore is not None:
                try:
                    self._restore()
                finally:
                    self._restore = None


def _set_full_precision() -> Callable[[], None]:
    """Sets float32 products to full precision through both of torch's APIs (the legacy
    ``set_float32_matmul_precision``, whose getter refuses once the newer API was used, and
    the backends' ``fp32_precision``), TF32 off on a torch before the newer API, cuDNN off;
    returns what restores the caller's settings."""
    fp32 = _fp32_backends()
    saved = [(obj, obj.fp32_precision) for obj in fp32]
    try:  # the legacy getter refuses once the newer API was used: then the values above restore it
        legacy: str | None = torch.get_float32_matmul_precision()
    except RuntimeError:
        legacy = None
    matmul = torch.backends.cuda.matmul
    tf32 = not hasattr(matmul, "fp32_precision") and matmul.allow_tf32  # a torch before the newer API
    cudnn = torch.backends.cudnn.enabled

    def restore() -> None:
        torch.backends.cudnn.enabled = cudnn
        if tf32:
            matmul.allow_tf32 = True
        if legacy is not None:
            torch.set_float32_matmul_precision(legacy)
        for obj, value in saved:
            if obj.fp32_precision != value:
                obj.fp32_precision = value

    try:
        torch.set_float32_matmul_precision("highest")  # the setter never refuses
        for obj in fp32:
            obj.fp32_precision = "ieee"
        if tf32:
            matmul.allow_tf32 = False
        torch.backends.cudnn.enabled = False
    except BaseException:  # nothing left half set
        restore()
        raise
    return restore


_FULL_PRECISION = _FullPrecision()


@contextlib.contextmanager
def sound_kernels(device: str | torch.device, dtype: torch.dtype | None = None) -> Iterator[None]:
    """Within the block, products round as the error model assumes (sums of products,
    each rounded once in the tensors' dtype): float32 matrix products and convolutions at
    full precision (no TF32 or bfloat16 passes, whatever ``torch.set_float32_matmul_precision``
    or the backends' ``fp32_precision`` say, through either API, and outside any
    ``torch.autocast`` block of the caller), no cuDNN (its FFT / Winograd convolutions and
    TF32 on CUDA); in any dtype, subnormal results kept (not flushed to zero:
    :func:`~parallelepipedonn.tolerances.gradual_underflow`). The caller's settings are
    restored after (process-wide ones when the last thread inside leaves:
    :class:`_FullPrecision`). float64 on a CPU (``dtype``) needs only the last."""
    cuda = torch.device(device).type == "cuda"
    if dtype == torch.float64 and not cuda:
        with gradual_underflow():
            yield
        return
    _FULL_PRECISION.enter()
    try:
        # autocast (a caller's ``torch.autocast`` block) would run float32 products in bfloat16 / float16
        with gradual_underflow(), torch.autocast(torch.device(device).type, enabled=False):
            yield
    finally:
        _FULL_PRECISION.leave()


def subnormal_rounding(arrays: Sequence[np.ndarray], dtype: torch.dtype) -> float:
    """The largest absolute error of rounding to ``dtype`` the entries of ``arrays`` below
    its normal range (float32: ``|w| < 2^-126``, where rounding has an absolute, not a
    relative, error; those beyond its range become ``inf``, which poisons every bound); 0
    in float64, where the weights are the stored ones."""
    if dtype == torch.float64:
        return 0.0
    tiny = torch.finfo(dtype).tiny
    err = 0.0
    for p in arrays:
        small = p[(p != 0) & (np.abs(p) < tiny)]
        if small.size:
            err = max(err, float(np.abs(torch.tensor(small).to(dtype).double().numpy() - small).max()))
    return err


def box_tensors(lower: np.ndarray, upper: np.ndarray, dtype: torch.dtype = torch.float64,
                device: str | torch.device = "cpu") -> tuple[Tensor, Tensor]:
    """``(lower, upper)`` as tensors of ``dtype``, rounded outward (so that the tensors'
    box contains the float64 box) when ``dtype`` is narrower than float64, and with
    :func:`even_subnormals`."""
    lower, upper = np.asarray(lower, dtype=np.float64), np.asarray(upper, dtype=np.float64)
    lo64, hi64 = torch.tensor(lower, device=device), torch.tensor(upper, device=device)
    # (outward rounding keeps a coordinate at or above twice the normal range there)
    least = 2 * torch.finfo(dtype).tiny
    near = bool(lower.size) and bool(_near_zero(lower, least).any() or _near_zero(upper, least).any())
    return rounded_box(lo64, hi64, dtype) if near else outward(lo64, hi64, dtype, even=False)


def rounded_box(lower: Tensor, upper: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """A float64 box as ``dtype`` tensors, as :func:`box_tensors` makes them: rounded
    outward, then :func:`even_subnormals` (in float64 too)."""
    return even_subnormals(*outward(lower, upper, dtype, even=False))


def outward(lower: Tensor, upper: Tensor, dtype: torch.dtype, even: bool = True) -> tuple[Tensor, Tensor]:
    """Float64 bounds as ``dtype``, rounded outward (``lower`` down, ``upper`` up: still
    bounds); with ``even``, :func:`even_subnormals` too (a box's coordinates)."""
    if dtype == torch.float64:
        return lower, upper
    lo, hi = lower.to(dtype), upper.to(dtype)
    lo = torch.where(lo.to(torch.float64) > lower, torch.nextafter(lo, torch.full_like(lo, -torch.inf)), lo)
    hi = torch.where(hi.to(torch.float64) < upper, torch.nextafter(hi, torch.full_like(hi, torch.inf)), hi)
    return even_subnormals(lo, hi) if even else (lo, hi)


def _near_zero(x: np.ndarray, least: float) -> np.ndarray:
    """The nonzero coordinates of ``x`` below ``least`` in magnitude (a zero needs no rounding)."""
    return (np.abs(x) < least) & (x != 0)


def even_subnormals(lower: Tensor, upper: Tensor) -> tuple[Tensor, Tensor]:
    """The box with its coordinates below twice the normal range rounded outward to even
    multiples of the smallest subnormal ``s`` (a superset: bounds over it hold on the box).
    Every float at or above twice the normal range is such a multiple too, so the sum or
    difference of two coordinates that lands below the normal range is exact and even,
    and halving it (a box's center and radius) is exact: the bounds' rounding model, whose
    errors are relative, needs no term for the absolute error of halving an odd ``s``."""
    info = torch.finfo(lower.dtype)
    near = ((lower.abs() < 2 * info.tiny) & (lower != 0)) | ((upper.abs() < 2 * info.tiny) & (upper != 0))
    if not bool(near.any()):  # (a zero is an even multiple of s already)
        return lower, upper
    unit = torch.tensor(2 * smallest_subnormal(lower.dtype), dtype=lower.dtype, device=lower.device)
    return (torch.where(lower.abs() < 2 * info.tiny, torch.floor(lower / unit) * unit, lower),
            torch.where(upper.abs() < 2 * info.tiny, torch.ceil(upper / unit) * unit, upper))
