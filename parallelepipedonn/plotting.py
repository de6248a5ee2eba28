"""Pictures of certificates (matplotlib, PNG, no display needed)."""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from .certificate import Certificate
from .io_utils import atomic_write_bytes

if TYPE_CHECKING:
    from matplotlib.figure import Figure

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


def _figure(**options: Any) -> Figure:
    """A matplotlib figure (matplotlib is imported here, on first use: not with the package)."""
    from matplotlib.figure import Figure

    return Figure(**options)


def _save(fig: Figure, path: str | Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    atomic_write_bytes(Path(path), buf.getvalue())


def _panel(fig: Figure, ax, values: FloatArray, shape: tuple[int, int] | None, title: str, *,
           vmin: float | None = None, vmax: float | None = None, cmap: str = "gray", colorbar: bool = True):
    """Draw ``values`` on ``ax`` as an image (a line without ``shape``); returns the image."""
    ax.set_title(title, fontsize=9)
    if shape is None:
        ax.plot(values, lw=0.8)
        return None
    import matplotlib

    img = np.ma.masked_invalid(values.reshape(shape))
    cm = matplotlib.colormaps[cmap].with_extremes(bad="#d0d0ff")
    im = ax.imshow(img, cmap=cm, vmin=vmin, vmax=vmax, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if colorbar:
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    return im


# Per coordinate, where the box's faces are (see _faces): categories, their colours and names.
_FACE_KINDS = (("#b2182b", "both faces binding"), ("#ef8a62", "binding +\ndomain edge"),
               ("#fddbc7", "binding + loose"), ("#67a9cf", "no binding face"), ("#e0e0e0", "both on\ndomain edge"))
_TIGHT_RTOL = 1e-9


def _faces(cert: Certificate) -> dict[str, FloatArray]:
    """Per coordinate of a certificate with a box: the room from the input to its lower and
    upper face (``nan`` where the face is on the domain's boundary), which faces bind (room
    equal to the apothem: they decide it) and the face category (an index of _FACE_KINDS)."""
    box, x, dom = cert.box, cert.input, cert.domain
    assert box is not None
    below = np.where(box.lower > dom.lower, x - box.lower, np.nan)
    above = np.where(box.upper < dom.upper, box.upper - x, np.nan)
    a = cert.apothem
    tol = a * (1 + _TIGHT_RTOL) + 1e-15 if a is not None and math.isfinite(a) else -np.inf
    tight_lo, tight_hi = below <= tol, above <= tol          # nan compares False
    edge_lo, edge_hi = np.isnan(below), np.isnan(above)
    n_tight = tight_lo.astype(int) + tight_hi
    kind = np.full(x.size, 3)
    kind[(n_tight == 1) & (edge_lo | edge_hi)] = 1
    kind[(n_tight == 1) & ~edge_lo & ~edge_hi] = 2
    kind[n_tight == 2] = 0
    kind[edge_lo & edge_hi] = 4
    return {"below": below, "above": above, "tight_below": tight_lo, "tight_above": tight_hi, "kind": kind}


def _room_scale(cert: Certificate) -> tuple[float, str]:
    """What the room to a face is divided by (the apothem when it is a positive number)."""
    a = cert.apothem
    return (a, "/ apothem") if a is not None and math.isfinite(a) and a > 0 else (1.0, "")


def _margin(network, point: FloatArray, label: int) -> float | None:
    return None if network is None else float(network.margins(point.reshape(1, -1), label)[0])


def _cex_class(cert: Certificate, network) -> int | None:
    if cert.counterexample_class is not None or cert.counterexample is None or network is None:
        return cert.counterexample_class
    from .certify import counterexample_class

    return counterexample_class(network, cert.counterexample, cert.label)


def plot_certificate(cert: Certificate, path: str | Path, class_names: tuple[str, ...] | None = None,
                     network=None) -> Figure:
    """Write a PNG explaining a certificate (and return its figure).

    Top row: the input with its label; the closest counterexample found, with its class
    (and, given the ``network``, the logit margins: label's logit minus the highest other);
    counterexample − input on a diverging scale centred at 0. Bottom row (with a box): the
    room from the input to the box's lower and upper face relative to the apothem on a log
    scale — red where the face binds (room = apothem), grey where the face is on the domain's
    boundary — and a map of which faces bind. An input that is not an image is drawn as
    per-coordinate line and bar plots of the same quantities."""
    shape = image_shape(cert.input_shape)
    dlo, dhi = float(cert.domain.lower.min()), float(cert.domain.upper.max())

    def name(c: int | None) -> str:
        if c is None:
            return "?"
        return f"{c} ({class_names[c]})" if class_names and 0 <= c < len(class_names) and class_names[c] != str(c) \
            else str(c)

    cex, cls = cert.counterexample, _cex_class(cert, network)
    m_in = _margin(network, cert.input, cert.label)
    m_cex = None if cex is None else _margin(network, cex, cert.label)
    dist = None if cex is None else float(np.abs(cex - cert.input).max())
    input_title = f"input: label {name(cert.label)}"
    if cert.true_label is not None and cert.true_label != cert.label:
        input_title += f", true {name(cert.true_label)}"
    input_title += "\n" + (f"logit margin {m_in:+.4g}" if m_in is not None else f"network predicts "
                                                                               f"{name(cert.predicted_label)}")
    if cex is None:
        cex_title = "no counterexample found" + ("" if cert.falsifier else " (no falsifier)")
    else:
        cex_title = f"closest counterexample: class {name(cls)}\n"
        cex_title += (f"logit margin {m_cex:+.3g}, " if m_cex is not None else "") + f"distance {_fmt(dist)}"

    status = cert.status.value.upper()
    gap = f" (gap {_fmt(cert.gap)})" if cert.gap is not None else ""
    head = (f"{status}   label {name(cert.label)}   apothem {_fmt(cert.apothem)}   "
            + (f"best apothem ≤ {_fmt(cert.apothem_upper_bound)}{gap}\n" if cert.apothem_upper_bound is not None
               else "best apothem: no upper bound known\n")
            + f"oracle {cert.oracle} · algorithm {cert.algorithm} · {cert.oracle_calls} boxes in {cert.rounds} calls"
            + (f" · falsifier {cert.falsifier}" if cert.falsifier else "") + f" · {cert.seconds:.3g} s")
    if cert.box is None and cert.reason:
        head += f"\n{cert.reason}"
    foot = "logit margin: the label's logit minus the highest other (> 0: classified as the label)"
    if cert.box is not None:
        foot += ("\nbinding face: its distance to the input equals the apothem (it decides the apothem); "
                 "faces on the domain edge cannot move outwards")
    if shape is None:
        fig = _certificate_profile(cert, input_title, cex_title, cls, dist)
    else:
        fig = _certificate_images(cert, shape, dlo, dhi, input_title, cex_title, dist)
    fig.suptitle(head, fontsize=10)
    fig.supxlabel(foot, fontsize=8)
    _save(fig, path)
    return fig


_SAME = "the counterexample is the input itself:\nthe network does not classify it as the label"


def _diff_limit(diff: FloatArray | None) -> float:
    lim = float(np.abs(diff).max()) if diff is not None and diff.size else 0.0
    return lim if lim > 0 else 1e-12


def _certificate_images(cert: Certificate, shape: tuple[int, int], dlo: float, dhi: float, input_title: str,
                        cex_title: str, dist: float | None) -> Figure:
    import matplotlib
    import matplotlib.colors
    import matplotlib.patches

    rows = 2 if cert.box is not None else 1
    fig = _figure(figsize=(12.5, 3.9 * rows + 1.1), layout="constrained")
    axes = np.atleast_2d(fig.subplots(rows, 3))
    _panel(fig, axes[0, 0], cert.input, shape, input_title, vmin=dlo, vmax=dhi)
    cex = cert.counterexample
    if cex is None:
        for ax in axes[0, 1:]:
            ax.axis("off")
        axes[0, 1].text(0.5, 0.5, cex_title, ha="center", va="center", fontsize=10, transform=axes[0, 1].transAxes)
    elif not dist:
        _panel(fig, axes[0, 1], cex, shape, cex_title, vmin=dlo, vmax=dhi)
        axes[0, 2].axis("off")
        axes[0, 2].text(0.5, 0.5, _SAME, ha="center", va="center", fontsize=10, transform=axes[0, 2].transAxes)
    else:
        _panel(fig, axes[0, 1], cex, shape, cex_title, vmin=dlo, vmax=dhi)
        diff = cex - cert.input
        lim = _diff_limit(diff)
        changed = int((diff != 0).sum())
        _panel(fig, axes[0, 2], diff, shape, f"counterexample − input\n{changed} of {diff.size} pixels changed, "
               f"max |·| {_fmt(dist)}", vmin=-lim, vmax=lim, cmap="RdBu_r")
    if cert.box is None:
        return fig
    faces = _faces(cert)
    scale, per = _room_scale(cert)
    rooms = [faces["below"] / scale, faces["above"] / scale]
    tights = [faces["tight_below"], faces["tight_above"]]
    loose = np.concatenate([r[~t & ~np.isnan(r)] for r, t in zip(rooms, tights)])
    vmin = 1.0 if per else max(float(loose.min()) if loose.size else 1e-6, 1e-12)
    vmax = max(float(loose.max()) if loose.size else 2 * vmin, 2 * vmin)
    norm = matplotlib.colors.LogNorm(vmin=vmin, vmax=vmax)
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="#e0e0e0", under="#d7191c")
    for ax, room, tight, side in zip(axes[1, :2], rooms, tights, ("lower", "upper")):
        shown = np.where(tight, 0.5 * vmin, room)        # binding faces: below vmin, drawn red
        im = ax.imshow(np.ma.masked_invalid(shown.reshape(shape)), cmap=cmap, norm=norm, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        what = "x − lower" if side == "lower" else "upper − x"
        ax.set_title(f"room to the {side} face: ({what}) {per}\nred: binding ({int(tight.sum())}) · "
                     f"grey: on domain edge ({int(np.isnan(room).sum())})", fontsize=9)
        cb = fig.colorbar(im, ax=ax, extend="min", fraction=0.046, pad=0.04)
        ticks = np.geomspace(vmin, vmax, 5)
        cb.set_ticks(ticks, labels=[f"{t:.3g}" for t in ticks])
        cb.ax.minorticks_off()
        cb.ax.tick_params(labelsize=8)
    kinds = faces["kind"]
    colours = matplotlib.colors.ListedColormap([c for c, _ in _FACE_KINDS])
    ax = axes[1, 2]
    im = ax.imshow(kinds.reshape(shape), cmap=colours, vmin=-0.5, vmax=len(_FACE_KINDS) - 0.5,
                   interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title("which faces bind, per pixel\n(binding: at the apothem; loose: beyond it)", fontsize=9)
    cb = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    cb.set_ticks(range(len(_FACE_KINDS)),
                 labels=[f"{label} ({int((kinds == k).sum())})" for k, (_, label) in enumerate(_FACE_KINDS)])
    cb.ax.tick_params(labelsize=7, length=0)
    return fig


def _certificate_profile(cert: Certificate, input_title: str, cex_title: str, cls: int | None,
                         dist: float | None) -> Figure:
    """The certificate of an input that is not an image: per-coordinate plots."""
    import matplotlib
    import matplotlib.ticker

    x, n, cex, box = cert.input, cert.input.size, cert.counterexample, cert.box
    idx = np.arange(n)
    small = n <= 60
    rows = 3 if box is not None else 2
    fig = _figure(figsize=(10, 2.6 * rows + 1.2), layout="constrained")
    axes = fig.subplots(rows, 1, sharex=True)
    ax = axes[0]
    if box is not None:
        ax.fill_between(idx, box.lower, box.upper, step="mid", color="#9ecae1", alpha=0.6, label="certified box")
    ax.plot(idx, x, "o-" if small else "-", color="black", ms=4, lw=1, label=input_title.replace("\n", ", "))
    if cex is not None:
        ax.plot(idx, cex, "x" if small else "-", color="#d7191c", ms=6, lw=0.8, label=cex_title.replace("\n", ", "))
    for b in (cert.domain.lower, cert.domain.upper):
        ax.plot(idx, b, ":", color="grey", lw=0.8)
    ax.set_ylabel("value")
    ax.set_title("input, counterexample and certified box (dotted: domain)", fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax = axes[1]
    if cex is None or not dist:
        ax.text(0.5, 0.5, cex_title if cex is None else _SAME, ha="center", va="center", transform=ax.transAxes)
        ax.set_yticks([])
    else:
        diff = cex - x
        lim = _diff_limit(diff)
        colours = matplotlib.colormaps["RdBu_r"](0.5 + 0.5 * diff / lim)
        ax.bar(idx, diff, color=colours, width=0.8 if small else 1.0)
        ax.axhline(0, color="black", lw=0.6)
        a = cert.apothem
        if a is not None and math.isfinite(a) and a > 0:
            for s in (-a, a):
                ax.axhline(s, color="grey", ls="--", lw=0.8)
            lim = max(lim, a)
        ax.set_ylim(-1.1 * lim, 1.1 * lim)
        ax.set_ylabel("cex − x")
        ax.set_title(f"counterexample − input (max |·| {_fmt(dist)}; dashed: ± apothem)", fontsize=9)
    if box is not None:
        ax = axes[2]
        faces = _faces(cert)
        scale, per = _room_scale(cert)
        rooms = {key: faces[key] / scale for key in ("below", "above")}
        loose = {key: ~faces[f"tight_{key}"] & ~np.isnan(r) for key, r in rooms.items()}
        values = np.concatenate([r[loose[key]] for key, r in rooms.items()])
        # binding faces are at the apothem (1 relative to it; at the bottom when the apothem is 0)
        low = 1.0 if per else 0.5 * float(values.min()) if values.size else 1e-3
        top = 2 * max(float(values.max()) if values.size else low, low)
        for key, marker, label in (("below", "v", "lower face"), ("above", "^", "upper face")):
            room, tight = rooms[key], faces[f"tight_{key}"]
            edge = np.isnan(room)
            ax.scatter(idx[tight], np.full(int(tight.sum()), low), marker=marker, color="#d7191c", s=22, zorder=3,
                       label=f"{label}: binding ({int(tight.sum())})" + ("" if per else ", drawn at the bottom"))
            ax.scatter(idx[loose[key]], room[loose[key]], marker=marker, color="#2c7bb6", s=16,
                       label=f"{label}: loose ({int(loose[key].sum())})")
            ax.scatter(idx[edge], np.full(int(edge.sum()), top), marker=marker, color="#bdbdbd", s=16,
                       label=f"{label}: on domain edge ({int(edge.sum())}), drawn at the top")
        ax.set_yscale("log")
        ax.set_ylim(low / 1.5, top * 1.5)
        plain = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:.3g}")
        ax.yaxis.set_major_formatter(plain)
        ax.yaxis.set_minor_formatter(plain if top / low < 30 else matplotlib.ticker.NullFormatter())
        ax.tick_params(axis="y", which="both", labelsize=8)
        ax.set_ylabel(f"room {per}".strip())
        ax.set_title(f"room from the input to each face {per} (log; binding: at the apothem, it decides it)",
                     fontsize=9)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    axes[-1].set_xlabel("input coordinate")
    return fig


def plot_comparison(certs: list[Certificate], path: str | Path, class_names: tuple[str, ...] | None = None) -> Figure:
    """Write a PNG with one row per certificate (algorithm): the input, its box's lower
    and upper images, and its edge widths; the row's label gives status and metrics. Every
    row uses the same colour scales (one colorbar for the images, one for the widths), so
    rows compare directly. Returns the figure."""
    if not certs:
        raise ValueError("nothing to plot")
    shape = image_shape(certs[0].input_shape)
    dlo, dhi = float(certs[0].domain.lower.min()), float(certs[0].domain.upper.max())
    widths = [c.box.width[np.isfinite(c.box.width)] for c in certs if c.box is not None]
    wmax = max([float(w.max()) for w in widths if w.size] + [0.0]) or 1.0
    rows = len(certs)
    fig = _figure(figsize=(11.5, 2.6 * rows + 0.6), layout="constrained")
    axes = np.atleast_2d(fig.subplots(rows, 4))
    image = width = None
    for row, cert in enumerate(certs):
        heads = ("input", "lower", "upper", "edge width (upper − lower)") if row == 0 else ("", "", "", "")
        image = _panel(fig, axes[row, 0], cert.input, shape, heads[0], vmin=dlo, vmax=dhi, colorbar=False)
        axes[row, 0].set_ylabel(f"{cert.algorithm}\n{cert.status.value}, apothem {_fmt(cert.apothem)}\n"
                                f"min edge {_fmt(cert.min_edge)}\nlog-volume {_fmt(cert.log_volume)}", fontsize=8)
        if cert.box is None:
            for ax in axes[row, 1:]:
                ax.axis("off")
            continue
        _panel(fig, axes[row, 1], cert.box.lower, shape, heads[1], vmin=dlo, vmax=dhi, colorbar=False)
        _panel(fig, axes[row, 2], cert.box.upper, shape, heads[2], vmin=dlo, vmax=dhi, colorbar=False)
        width = _panel(fig, axes[row, 3], cert.box.width, shape, heads[3], vmin=0, vmax=wmax, cmap="magma",
                       colorbar=False)
        if shape is None:  # a margin, so that faces on the domain's boundary (a whole-domain box) show
            pad = 0.04 * (dhi - dlo)
            for ax in axes[row, :3]:
                ax.set_ylim(dlo - pad, dhi + pad)
            axes[row, 3].set_ylim(-0.04 * wmax, 1.05 * wmax)
    if image is not None:
        fig.colorbar(image, ax=list(axes[:, :3].reshape(-1)), shrink=0.8, label="value (every row)")
    if width is not None:
        fig.colorbar(width, ax=list(axes[:, 3]), shrink=0.8, label="edge width (every row)")
    label = certs[0].label
    name = f"{label} ({class_names[label]})" if class_names and 0 <= label < len(class_names) \
        and class_names[label] != str(label) else str(label)
    fig.suptitle(f"label {name}: the boxes of {rows} algorithms (one colour scale for all rows)", fontsize=10)
    _save(fig, path)
    return fig


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
    fig = _figure(figsize=(3.2 * max(len(panels), 1), 3.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, max(len(panels), 1)))
    for ax, (vals, title, vmin, vmax, cmap) in zip(axes, panels):
        _panel(fig, ax, np.asarray(vals, dtype=float), shape, title, vmin=vmin, vmax=vmax, cmap=cmap)
    fig.suptitle(head, fontsize=9)
    _save(fig, path)
