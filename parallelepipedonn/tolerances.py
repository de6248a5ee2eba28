"""The soundness tolerances of the tool, in one place, and the floating-point error model
they implement (README, "Floating-point soundness").

Bounds are computed in floating point (float64 by default, float32 on request). A
bound is sound for the exact real-valued network when it is moved outward by a bound of
the rounding error of every operation that produced it. The model used here:

* a dot product or matrix product with ``n`` terms, in any summation order (blocked,
  pairwise or with fused multiply-adds), has an error of at most ``gamma_n * sum |terms|``
  with ``gamma_n = n u / (1 - n u)`` (``u`` the unit roundoff of the dtype), plus
  ``n`` times the smallest subnormal number where products underflow;
* the bound propagation therefore carries, beside each coefficient, the *magnitude* of
  the terms it came from (``|Lambda| |W|`` times a bound of ``|z|``), never only the
  magnitude of the result: a coefficient out of a cancelling sum carries the rounding
  error of its terms;
* :func:`relative_slack` gives the factor applied to those magnitudes: four times
  ``gamma`` of the longest chain of additions, and never below :data:`REL_SLACK_FLOOR`
  for float64 (a floor far above the model's need on networks of ordinary size);
* any non-finite number in a bound (overflow, ``inf - inf``) proves nothing: the bound
  becomes ``-inf`` (UNKNOWN);
* results below the normal range are subnormal numbers (gradual underflow, IEEE 754's
  default), not zero: :func:`gradual_underflow` keeps it so where a setting of the
  processor (``torch.set_flush_denormal(True)``) would flush them.

Solver tolerances (MILP, Marabou) are not rounding errors of our own arithmetic, and no
a priori bound of them exists: :data:`PROOF_MARGIN` and :func:`solver_error_scale` are an
*error model*, documented as such.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import threading
from collections.abc import Iterator
from typing import Any, NamedTuple

import numpy as np

from .errors import ConfigError

#: float64's unit roundoff (2^-53): the relative error of one rounded operation.
UNIT_ROUNDOFF_F64 = 2.0 ** -53

#: The smallest relative slack applied to float64 bounds: ``4 gamma_(n + 8)`` itself for sums
#: of more than about 2,200 terms, above it for shorter ones (3.6e-13 at the MNIST MLPs'
#: 784). It was 1e-9, a margin over the error model of no use to it, which loosened float64
#: CROWN margins by that times their terms' magnitude: about 1.5e-6 relative on the seeded
#: CIFAR-size convnet of ``benchmarks.crown_vs_lirpa``, more than float32's own rounding.
REL_SLACK_FLOOR = 1e-12

#: The smallest relative slack charged on another tool's bound propagation (auto_LiRPA's
#: results, :mod:`oracles.lirpa`): its intermediate bounds are not rounded outward, so the
#: chords of every ReLU layer may be off by that layer's own rounding, which compounds with
#: depth beyond the ``4 gamma_n`` of one pass; this many times the terms' magnitude (as
#: every float64 bound got before :data:`REL_SLACK_FLOOR` became 1e-12).
FOREIGN_REL_SLACK_FLOOR = 1e-9

#: An absolute slack added to every proven bound (covers the last subtraction).
ABS_SLACK = 1e-12

#: A solver bound (MILP with HiGHS, Marabou) counts as a proof of ``value > 0`` only when
#: it exceeds this (and :func:`solver_error_scale` times the problem's scale): it covers
#: the solvers' feasibility and optimality tolerances (1e-9 .. 1e-6, times coefficient
#: sums) on networks of ordinary scale.
PROOF_MARGIN = 1e-4

#: The range of the feasibility tolerances (primal, dual, MIP) HiGHS runs with (see
#: :func:`solver_tolerance`). HiGHS's defaults are 1e-7 / 1e-6: at those a ReLU row
#: ``a = z`` slipped by 1e-6 at an LP optimum, which a crafted output weight of 2e6 turned
#: into a wrong proof.
SOLVER_TOLERANCE_RANGE = (1e-9, 1e-7)

#: The solver error model: a problem of scale ``E`` solved to feasibility tolerance
#: ``tol`` is off by at most ``SOLVER_ERROR_FACTOR * tol * E`` on its objective.
#: Calibrated, not derived (the tolerances apply to HiGHS's scaled rows): the crafted
#: networks of ``tests/test_crafted_nets.py`` were off by about ``tol * E``, and with it
#: the proof margin held in every soundness test; networks whose weights make the
#: tolerances meaningless (1e12 weights that cancel, a ReLU whose output weight is 2e8)
#: get no solver proofs.
SOLVER_ERROR_FACTOR = 10.0

#: HiGHS drops the matrix entries at or below its ``small_matrix_value``; ours is set to
#: its minimum, this. A weight this small on a large value (1e-13 times a hidden value of
#: 1e11) is no small change of its row: a crafted network was verified by milp and bab
#: with the product gone.
HIGHS_SMALL_MATRIX_VALUE = 1e-12

#: A solve whose dropped entries (coefficient times the larger magnitude of its variable's
#: bounds, summed per row; unbounded variable: infinite) can move a row by more than this
#: share of the primal feasibility tolerance proves nothing: within it, their loss is one
#: more slip of the row inside what the error model (:data:`SOLVER_ERROR_FACTOR`) charges.
DROPPED_ROW_SHARE = 0.01

#: HiGHS's default ``small_matrix_value``: entries below it are outside what its numerics
#: are made for. Kept (above :data:`HIGHS_SMALL_MATRIX_VALUE`), weights of 2e-12 .. 2e-10
#: on hidden values of 1e10 .. 1e8 (terms of 0.02) were still lost in its MIP solves (a
#: crafted network verified, its class regions proven empty).
HIGHS_RELIABLE_COEFFICIENT = 1e-9

#: A solve whose entries between :data:`HIGHS_SMALL_MATRIX_VALUE` and
#: :data:`HIGHS_RELIABLE_COEFFICIENT` can move a row (measured as above) by more than this
#: proves nothing: 1e-3 of :data:`PROOF_MARGIN`, a loss the proof margin absorbs unless the
#: network amplifies it a thousandfold. Calibrated, not derived: the trained MNIST nets'
#: rows reach about 5e-9, the crafted one 0.035.
FRAGILE_ROW_SHIFT = 1e-7

#: MILP class constraints ``logit_c - logit_j >= -CLASS_SLACK`` define a (slightly larger)
#: superset of the class region, so that solver tolerances cannot cut true points off
#: (:mod:`oracles.milp_regions`, :mod:`oracles.milp`).
CLASS_SLACK = 1e-6

#: A distance bound from HiGHS counts as proven after a cut of ``DISTANCE_MARGIN`` times
#: the bound plus ``DISTANCE_ABS_MARGIN``: 10 times the feasibility tolerances the distance
#: problems are solved with (:data:`oracles.milp.DISTANCE_OPTIONS`; the ``|x' - x| <= t``
#: rows have coefficients 1, and the inputs lie in boxes of width <= 1 in the reference
#: domains).
DISTANCE_MARGIN = 1e-6
DISTANCE_ABS_MARGIN = 1e-8

#: The distance MILP's cap on ``t`` lies this much (relative) above the best distance
#: found: with the cap at the optimum's doorstep (within 3e-6), HiGHS's presolve, at its
#: default tolerances, reported the cap itself as the proven bound, above the optimum.
DISTANCE_CAP_SLACK = 1e-4

#: recheck: relative tolerance when comparing a stored log-volume with the one recomputed
#: from the box (JSON keeps float64 exactly; the logarithms' last bits may differ between
#: numpy builds), and an exact search's gap with its precision.
METRIC_RTOL = 1e-12

#: A latent Gaussian-mixture model's head must be the mixture's Bayes rule rounded to
#: float32: within this relative distance (two float32 units, room for another machine's
#: float64 solves), else the model is refused (:mod:`parallelepipedonn.gmm.model`).
GMM_HEAD_RTOL = 2.0 ** -22


def _np_dtype(dtype: Any) -> np.dtype:
    """numpy dtype of a numpy or torch dtype (torch's name without importing torch)."""
    try:
        return np.dtype(dtype)
    except TypeError:  # a torch dtype: "torch.float32"
        return np.dtype(str(dtype).rsplit(".", 1)[-1])


@functools.lru_cache(maxsize=4096)  # pure; called per bound in hot loops
def unit_roundoff(dtype: Any = np.float64) -> float:
    """The unit roundoff of a floating-point dtype (2^-53 for float64, 2^-24 for float32)."""
    return float(np.finfo(_np_dtype(dtype)).eps) / 2


@functools.lru_cache(maxsize=4096)  # pure; called per bound in hot loops
def smallest_subnormal(dtype: Any = np.float64) -> float:
    """The spacing of the dtype's subnormal numbers: the absolute error of an underflow."""
    return float(np.finfo(_np_dtype(dtype)).smallest_subnormal)


@functools.lru_cache(maxsize=4096)  # pure; called per bound in hot loops
def smallest_normal(dtype: Any = np.float64) -> float:
    """The dtype's smallest normal number: below it, results carry an absolute (underflow)
    error, no longer a relative one."""
    return float(np.finfo(_np_dtype(dtype)).tiny)


@functools.lru_cache(maxsize=4096)  # pure; called per bound in hot loops
def gamma(n: int, dtype: Any = np.float64) -> float:
    """``gamma_n = n u / (1 - n u)``: the relative error bound of a sum of ``n`` terms."""
    nu = n * unit_roundoff(dtype)
    if nu >= 0.5:
        return math.inf
    return nu / (1 - nu)


@functools.lru_cache(maxsize=4096)  # pure; called per bound in hot loops
def relative_slack(n_terms: int, dtype: Any = np.float64) -> float:
    """The factor applied to the magnitude of a bound's terms to cover its rounding error:
    ``4 gamma_(n_terms)`` (float64: at least :data:`REL_SLACK_FLOOR`). ``n_terms`` is the
    longest chain of additions that feeds one result (widest layer plus the number of
    accumulations); the factor 4 covers the products whose error the magnitudes bound
    only up to a factor ``1 + gamma``, the rounding of the magnitudes themselves and of
    the weights to the dtype."""
    rel = 4 * gamma(n_terms + 8, dtype)
    if _np_dtype(dtype) == np.float64:
        rel = max(rel, REL_SLACK_FLOOR)
    return rel


def solver_tolerance(scale: float | None) -> float:
    """The feasibility tolerance to solve a problem of this scale with: as loose as
    HiGHS's primal default (1e-7) where the error model still keeps the error below
    :data:`PROOF_MARGIN`, tighter (down to 1e-9) as the scale grows; the tightest where
    the scale is unknown."""
    lo, hi = SOLVER_TOLERANCE_RANGE
    if scale is None or not math.isfinite(scale) or scale <= 0:
        return lo if scale is None or not math.isfinite(scale) else hi
    return min(hi, max(lo, PROOF_MARGIN / (SOLVER_ERROR_FACTOR * scale)))


def solver_error(scale: float) -> float:
    """The solver error model's bound on the objective of a problem of this scale, solved
    at :func:`solver_tolerance`: ``SOLVER_ERROR_FACTOR * tol * scale``."""
    if not math.isfinite(scale):
        return math.inf
    return SOLVER_ERROR_FACTOR * solver_tolerance(scale) * scale


def solver_proof_margin(scale: float) -> float:
    """The least solver bound that counts as a proof of ``value > 0`` for a problem whose
    terms have magnitude ``scale`` (the sum over the network of each neuron's term
    magnitudes weighted by how much it can move the margin): :data:`PROOF_MARGIN`, or the
    error model's bound (:func:`solver_error`) where that is larger (scales above 1e4).
    An error model, not a bound: solvers' tolerances apply to scaled problems and no a
    priori bound of their error exists; the model keeps proofs out of reach on networks
    whose weights make the solver's tolerances meaningless (e.g. 1e12 weights that
    cancel)."""
    return max(PROOF_MARGIN, solver_error(scale))


def solver_coordinate_error(scale: float, width: float) -> float:
    """The solver error model's bound on an objective in input coordinates (how far a class
    point can lie beyond a box's face) of a class-region problem of this ``scale`` over a
    region of this ``width``: :data:`SOLVER_ERROR_FACTOR` times the tolerance it is solved
    with times ``max(1, width)``. A found maximum excess proves ``no point beyond the face
    by more than tol`` only at or below ``tol`` minus this (HiGHS's presolve answered -0.0
    where the superset's optimum was 3.5e-9)."""
    return SOLVER_ERROR_FACTOR * solver_tolerance(scale) * max(1.0, width)


def solver_trusted(scale: float) -> bool:
    """Whether a solver's claim that is not a number (infeasible, ``unsat``) counts as a
    proof on a problem of this scale: only where the error model's bound stays within
    :data:`PROOF_MARGIN` (scales up to 1e4)."""
    return solver_error(scale) <= PROOF_MARGIN * (1 + 1e-12)


#: 2^-1062, a subnormal number, made from its bits: a literal (``2.0**-1062``) would be
#: folded to 0 when this module is compiled in a thread that flushes subnormals.
_SUBNORMAL = np.array([1 << 12], dtype=np.uint64).view(np.float64)


def flushes_subnormals() -> bool:
    """Whether this thread's floating-point unit flushes subnormal results to zero or reads
    subnormal operands as zero (x86's FTZ / DAZ modes, which ``torch.set_flush_denormal``
    sets for the calling thread; numpy's arithmetic in that thread runs under them too)."""
    return bool(np.float64(2.0**-1000) * np.float64(2.0**-60) == 0.0 or _SUBNORMAL[0] * np.float64(1.0) == 0.0)


#: Per calling thread (OpenMP gives each its own pool of torch workers) and torch thread
#: count, whether those workers flush subnormals; per thread count of numpy's BLAS pools
#: (one per process; ``None``: counts unknown), whether their threads do. Checked once
#: each: a worker's mode is its creator's at creation, and a pool found flushing is kept
#: out for good (a pool resized after may mix threads of both kinds).
_TORCH_WORKERS = threading.local()
_BLAS_FLUSH: dict[tuple[int, ...] | None, bool] = {}


def _torch_workers_flush() -> bool:
    """Whether torch's intra-op worker threads flush subnormals (they take the mode of the
    thread that started them: ``torch.set_flush_denormal(True)`` before torch's first
    parallel operation leaves every worker flushing). False where torch is not imported
    or runs on one thread."""
    import sys

    torch = sys.modules.get("torch")
    if torch is None or (n := torch.get_num_threads()) <= 1:
        return False
    seen: dict[int, bool] | None = getattr(_TORCH_WORKERS, "flush", None)
    if seen is None:
        seen = _TORCH_WORKERS.flush = {}
    if True in seen.values():
        return True
    if n not in seen:  # on the CPU whatever torch's default device: 2^-1050, a subnormal, per product
        products = torch.full((n * 2**16,), 2.0**-500, dtype=torch.float64, device="cpu") * 2.0**-550
        seen[n] = bool((products == 0).any())
    return seen[n]


def _blas_probe(threads: int = 1) -> bool:
    """Does a numpy product that BLAS shares out among its ``threads`` threads lose subnormal
    numbers? Every entry of the product is one subnormal product, 2^-1060, and 255 exact
    zeros: a thread that flushes leaves zeros in its block. The product has 16 rows per
    thread at least (OpenBLAS shares a 256-row product among 16 threads at most: a pool grown
    to 64 threads, its new ones flushing, was not seen). (Full matrices of subnormal products
    took 70 ms, once per process: arithmetic on subnormals is about a hundred times slower.)"""
    left, right = np.zeros((max(256, 16 * threads), 256)), np.zeros((256, 256))
    left[:, -1], right[-1, :] = 2.0**-500, 2.0**-560
    return bool(((left @ right) == 0).any())


#: numpy's BLAS libraries as ``threadpoolctl`` finds them (looked for once: ``[None]`` where
#: threadpoolctl is not installed).
_BLAS_LIBS: list[Any] = []


def _blas_libraries() -> list[Any] | None:
    """The BLAS libraries loaded (``threadpoolctl`` controllers), or None without threadpoolctl."""
    if not _BLAS_LIBS:
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:
            _BLAS_LIBS.append(None)
        else:
            _BLAS_LIBS.append([lib for lib in ThreadpoolController().lib_controllers if lib.user_api == "blas"])
    return _BLAS_LIBS[0]


def _blas_threads_flush() -> bool:
    """Whether numpy's BLAS threads flush subnormals (they take the mode of the thread that
    imported numpy: a flush-to-zero mode set before, e.g. by an extension built with
    ``-ffast-math``, leaves them flushing). Checked once per thread count of the pools (a
    pool limited to one thread, e.g. within a caller's ``threadpool_limits(1)``, shows
    only the calling thread's mode: its other threads are checked once they work again);
    a pool found flushing is kept out for good."""
    if True in _BLAS_FLUSH.values():
        return True
    libs = _blas_libraries()
    counts = None if libs is None else tuple(lib.get_num_threads() for lib in libs)
    if counts not in _BLAS_FLUSH:
        _BLAS_FLUSH[counts] = _blas_probe(max(counts, default=1) if counts is not None else os.cpu_count() or 1)
    return _BLAS_FLUSH[counts]


class _BlasLimit(NamedTuple):
    """How to keep one BLAS library's threads out of a block's products: ``set_count(n)``
    sets its thread count, ``get_count()`` reads it; ``per_thread``: the count is the
    calling thread's own (MKL's ``MKL_Set_Num_Threads_Local``), else the process's
    (OpenBLAS with its own threads: one count for every thread)."""

    set_count: Any
    get_count: Any
    per_thread: bool


#: numpy's BLAS libraries' limits (found once), and the process-wide hold: the blocks of
#: :func:`_one_blas_thread` now running in any thread, and the counts they replaced.
_BLAS_LIMITS: list[list[_BlasLimit]] = []
_BLAS_HOLD: dict[str, Any] = {"blocks": 0, "before": []}
_BLAS_LOCK = threading.Lock()
_OPENBLAS_AFFIXES = [(p, s) for p in ("", "scipy_") for s in ("", "64_", "_64")]  # (as threadpoolctl lists them)
#: MKL threading layers whose threads ``MKL_Set_Num_Threads_Local`` counts (not TBB's)
_MKL_LAYERS = ("intel", "gnu", "sequential")


def _flushing_blas(what: str) -> ConfigError:
    return ConfigError("numpy's BLAS threads flush subnormal numbers to zero (a flush-to-zero mode was on when numpy "
                       f"was imported) and {what}: set OPENBLAS_NUM_THREADS=1 before numpy is imported")


def _blas_limits() -> list[_BlasLimit]:
    """The thread-count controls of the BLAS libraries loaded (asked only where their threads
    flush); a :class:`ConfigError` where threadpoolctl is missing, finds no BLAS library, or
    finds one whose threads this module cannot keep out."""
    if not _BLAS_LIMITS:
        import ctypes

        libs = _blas_libraries()
        if libs is None:
            raise _flushing_blas("threadpoolctl, which finds them, is not installed")
        if not libs:
            raise _flushing_blas("threadpoolctl finds no BLAS library to keep them out of")
        found = []
        for lib in libs:
            layer = getattr(lib, "threading_layer", None)
            lim = None
            if lib.internal_api == "mkl" and layer in _MKL_LAYERS and hasattr(lib.dynlib, "MKL_Set_Num_Threads_Local"):
                lim = _BlasLimit(lib.dynlib.MKL_Set_Num_Threads_Local, None, True)
            elif lib.internal_api == "openblas" and layer == "pthreads":
                names = [(f"{p}openblas_set_num_threads{s}", f"{p}openblas_get_num_threads{s}")
                         for p, s in _OPENBLAS_AFFIXES if hasattr(lib.dynlib, f"{p}openblas_get_num_threads{s}")]
                if names:
                    lim = _BlasLimit(getattr(lib.dynlib, names[0][0]), getattr(lib.dynlib, names[0][1]), False)
            if lim is None:
                raise _flushing_blas(f"this module cannot keep {lib.internal_api}'s ({layer} threads) out")
            lim.set_count.argtypes, lim.set_count.restype = [ctypes.c_int], ctypes.c_int if lim.per_thread else None
            if lim.get_count is not None:
                lim.get_count.argtypes, lim.get_count.restype = [], ctypes.c_int
            found.append(lim)
        _BLAS_LIMITS.append(found)
    return _BLAS_LIMITS[0]


@contextlib.contextmanager
def _one_blas_thread() -> Iterator[None]:
    """numpy's BLAS products of the calling thread on that thread alone, within the block.
    A per-thread count (MKL) is set and restored by each block. OpenBLAS's count is the
    process's: the first block in, in any thread, sets it to 1, and the last one out
    restores it (a block restoring its own on leaving handed a block still running in
    another thread the flushing pool back; and ``threadpoolctl.threadpool_limits`` lets
    only the first thread that set it change OpenBLAS's count, silently ignoring the others:
    ``tests/test_float_soundness.py``). The block that sets a count checks that a product
    BLAS would share out keeps its subnormal numbers (a :class:`ConfigError` if not). Another
    thread's setting the count meanwhile is not guarded against."""
    limits = _blas_limits()
    own, shared = [lim for lim in limits if lim.per_thread], [lim for lim in limits if not lim.per_thread]
    own_before = [lim.set_count(1) for lim in own]
    entered = False
    try:
        with _BLAS_LOCK:
            first = _BLAS_HOLD["blocks"] == 0
            if first:
                _BLAS_HOLD["before"] = [lim.get_count() for lim in shared]
                for lim in shared:
                    lim.set_count(1)
            _BLAS_HOLD["blocks"] += 1
            entered = True
        if (first or own) and _blas_probe():  # (a block within a held one: checked by the first)
            raise _flushing_blas("their thread count, set to 1, did not keep them out")
        yield
    finally:
        if entered:
            with _BLAS_LOCK:
                _BLAS_HOLD["blocks"] -= 1
                if _BLAS_HOLD["blocks"] == 0:
                    for lim, n in zip(shared, _BLAS_HOLD["before"]):
                        lim.set_count(n)
        for lim, n in zip(own, own_before):
            lim.set_count(n)


@contextlib.contextmanager
def gradual_underflow() -> Iterator[None]:
    """Within the block, the computation keeps subnormal numbers, as the error model assumes:
    a product that underflows is off by at most one subnormal spacing (2^-1074 in float64,
    2^-149 in float32). Flushed to zero it would be off by up to the smallest normal number
    (2^-1022, 2^-126), which the bounds do not charge: a product of 2^-1050 lost to a
    flush, times an input of 2^1020, moves a margin by 2^-30 (``tests/test_float_soundness.py``
    builds such networks). This thread's ``torch.set_flush_denormal(True)`` is turned off
    for the block and on again after (``torch.set_flush_denormal(True)`` then sets both x86
    modes, flush-to-zero and denormals-are-zero, whichever the caller had); torch's worker
    threads, if they flush (started while it was on), are left out (one torch thread for
    the block); numpy's BLAS threads, if they flush, are left out of this thread's products
    for the block (:func:`_one_blas_thread`). A
    :class:`~parallelepipedonn.errors.ConfigError` where none of this can be done."""
    caller = flushes_subnormals()
    if caller:
        import torch

        torch.set_flush_denormal(False)
    with contextlib.ExitStack() as stack:
        try:
            if caller and flushes_subnormals():
                raise ConfigError("this thread flushes subnormal numbers to zero and torch.set_flush_denormal(False) "
                                  "does not stop it: bounds and checks would not cover the rounding")
            if _torch_workers_flush():
                import torch

                threads = torch.get_num_threads()
                torch.set_num_threads(1)
                stack.callback(torch.set_num_threads, threads)
            if _blas_threads_flush():
                stack.enter_context(_one_blas_thread())
            yield
        finally:
            if caller:
                import torch

                torch.set_flush_denormal(True)
