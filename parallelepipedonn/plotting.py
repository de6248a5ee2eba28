"""Pictures of certificates (matplotlib, PNG, no display needed)."""

from __future__ import annotations

import io
import math
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from numpy.typing import NDArray

from .certificate import Certificate
from .io_utils import atomic_write_bytes

FloatArray = NDArray[np.float64]


def image_shape(input_shape: tuple[int, ...]) -> tuple[int, int] | None:
    """The 2-D shape to draw a flat input as (``None``: draw it as a 1-D profile)."""
    dims = [d for d in input_shape if d != 1]
    if len(dims) == 2:
        return dims[0], dims[1]
    n = int(np.prod(input_shape))
    side = math.isqrt(n)
    return (side, side) if side * side == n and n >= 16 else None


def _fmt(v: float | None) -> str:
    if v is None:
        return "n/a"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return f"{v:.4g}"


def _save(fig: Figure, path: str | Path) -> None:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    atomic_write_bytes(Path(path), buf.getvalue())


def _panel(fig: Figure, ax, values: FloatArray, shape: tuple[int, int] | None, title: str, *,
           vmin: float | None = None, vmax: float | None = None, cmap: str = "gray") -> None:
    ax.set_title(title, fontsize=9)
    if shape is None:
        ax.plot(values, lw=0.8)
        return
    img = np.ma.masked_invalid(values.reshape(shape))
    cm = matplotlib.colormaps[cmap].with_extremes(bad="#d0d0ff")
    im = ax.imshow(img, cmap=cm, vmin=vmin, vmax=vmax, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)


def plot_certificate(cert: Certificate, path: str | Path, class_names: tuple[str, ...] | None = None) -> None:
    """Write a PNG: the input, the box's lower and upper images, its edge widths and the
    per-pixel slack (distance from the input to the nearest face that is not on the
    domain's boundary; pale blue where both faces are on it). For an input that is not
    robust: the input, the counterexample and their difference."""
    shape = image_shape(cert.input_shape)
    dlo, dhi = float(cert.domain.lower.min()), float(cert.domain.upper.max())

    def name(c: int) -> str:
        return f"{c} ({class_names[c]})" if class_names and 0 <= c < len(class_names) else str(c)

    head = (f"status: {cert.status.value}   label {name(cert.label)}   apothem {_fmt(cert.apothem)}   "
            f"upper bound {_fmt(cert.apothem_upper_bound)}   min edge {_fmt(cert.min_edge)}\n"
            f"oracle {cert.oracle}, algorithm {cert.algorithm}, {cert.oracle_calls} oracle calls, "
            f"{cert.seconds:.3g} s")
    if cert.box is not None:
        box = cert.box
        panels = [(cert.input, "input", dlo, dhi, "gray"), (box.lower, "lower", dlo, dhi, "gray"),
                  (box.upper, "upper", dlo, dhi, "gray"), (box.width, "edge width (upper − lower)", 0, None, "magma"),
                  (box.slack(cert.input, cert.domain), "slack (distance to a face)", 0, None, "viridis")]
    else:
        panels = [(cert.input, "input", dlo, dhi, "gray")]
        if cert.counterexample is not None:
            panels += [(cert.counterexample, "counterexample", dlo, dhi, "gray"),
                       (cert.counterexample - cert.input, "counterexample − input", None, None, "coolwarm")]
        head += f"\n{cert.reason}"
    fig = Figure(figsize=(3.1 * len(panels), 3.6 if shape else 2.8))
    axes = fig.subplots(1, len(panels))
    axes = np.atleast_1d(axes)
    for ax, (vals, title, vmin, vmax, cmap) in zip(axes, panels):
        vals = np.where(np.isinf(vals), np.nan, vals)
        _panel(fig, ax, vals, shape, title, vmin=vmin, vmax=vmax, cmap=cmap)
    fig.suptitle(head, fontsize=9)
    _save(fig, path)


def plot_comparison(certs: list[Certificate], path: str | Path, class_names: tuple[str, ...] | None = None) -> None:
    """Write a PNG with one row per certificate (algorithm): the input, its box's lower
    and upper images, and its edge widths; the row's label gives status and metrics."""
    if not certs:
        raise ValueError("nothing to plot")
    shape = image_shape(certs[0].input_shape)
    dlo, dhi = float(certs[0].domain.lower.min()), float(certs[0].domain.upper.max())
    rows = len(certs)
    fig = Figure(figsize=(11.5, 2.6 * rows), layout="constrained")
    axes = np.atleast_2d(fig.subplots(rows, 4))
    for row, cert in enumerate(certs):
        heads = ("input", "lower", "upper", "edge width (upper − lower)") if row == 0 else ("", "", "", "")
        _panel(fig, axes[row, 0], cert.input, shape, heads[0], vmin=dlo, vmax=dhi)
        axes[row, 0].set_ylabel(f"{cert.algorithm}\n{cert.status.value}, apothem {_fmt(cert.apothem)}\n"
                                f"min edge {_fmt(cert.min_edge)}\nlog-volume {_fmt(cert.log_volume)}", fontsize=8)
        if cert.box is None:
            for ax in axes[row, 1:]:
                ax.axis("off")
            continue
        _panel(fig, axes[row, 1], cert.box.lower, shape, heads[1], vmin=dlo, vmax=dhi)
        _panel(fig, axes[row, 2], cert.box.upper, shape, heads[2], vmin=dlo, vmax=dhi)
        _panel(fig, axes[row, 3], cert.box.width, shape, heads[3], vmin=0, cmap="magma")
    label = certs[0].label
    name = f"{label} ({class_names[label]})" if class_names and 0 <= label < len(class_names) else str(label)
    fig.suptitle(f"label {name}: the boxes of {rows} algorithms", fontsize=10)
    _save(fig, path)


def plot_dual(dual, path: str | Path, input_shape: tuple[int, ...]) -> None:
    """Write a PNG of a dual box: its lower and upper images, which bounds are exact, and
    the centre input of a restricted dual."""
    shape = image_shape(input_shape)
    dlo, dhi = float(dual.region.lower.min()), float(dual.region.upper.max())
    panels = []
    if dual.center is not None:
        panels.append((dual.center, f"input (radius {_fmt(dual.radius)})", dlo, dhi, "gray"))
    if dual.box is not None:
        exact = dual.exact_lower.astype(float) + dual.exact_upper.astype(float)
        panels += [(dual.box.lower, "dual lower", dlo, dhi, "gray"), (dual.box.upper, "dual upper", dlo, dhi, "gray"),
                   (exact, "exact bounds per pixel (0, 1, 2)", 0, 2, "viridis")]
    head = (f"dual box of class {dual.label} ({dual.method}): " +
            ("empty: no point of the region has this class" if dual.box is None else
             f"min edge {_fmt(dual.min_edge())}, log-volume {_fmt(dual.log_volume())}, "
             f"{dual.exact_count}/{2 * dual.region.n} bounds exact, {dual.seconds:.3g} s"))
    fig = Figure(figsize=(3.2 * max(len(panels), 1), 3.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, max(len(panels), 1)))
    for ax, (vals, title, vmin, vmax, cmap) in zip(axes, panels):
        _panel(fig, ax, np.asarray(vals, dtype=float), shape, title, vmin=vmin, vmax=vmax, cmap=cmap)
    fig.suptitle(head, fontsize=9)
    _save(fig, path)
