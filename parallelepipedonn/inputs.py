"""Reading one input point: CSV (the original system's 28×28 grid or one flat line),
``.npy`` and grayscale PNG (scaled to [0, 1]).

Every reader returns a flat float64 array; :func:`load_input` also checks the size
against the network and that the point is finite and inside the domain. Problems raise
:class:`InputDataError` with a one-line message.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from .box import Box, check_in_domain
from .errors import InputDataError

FloatArray = NDArray[np.float64]

_SEPARATORS = re.compile(r"[,;\s]+")


def _describe_shape(shape: tuple[int, ...]) -> str:
    return "×".join(str(d) for d in shape)


def read_text_grid(path: Path) -> FloatArray:
    """Numbers separated by commas, semicolons or white space; one row per line.

    Returns a 2-D array (rows × columns) — a single line gives one row. Ragged rows are
    an error.
    """
    try:
        text = path.read_text()
    except UnicodeDecodeError as exc:
        raise InputDataError(f"input {str(path)!r} is not a text file") from exc
    rows: list[list[float]] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        tokens = [t for t in _SEPARATORS.split(line.strip()) if t]
        if not tokens:
            continue
        try:
            rows.append([float(t) for t in tokens])
        except ValueError as exc:
            raise InputDataError(f"input {str(path)!r} line {lineno}: {exc}") from exc
    if not rows:
        raise InputDataError(f"input {str(path)!r} is empty")
    widths = {len(r) for r in rows}
    if len(widths) > 1:
        raise InputDataError(
            f"input {str(path)!r} has rows of different lengths ({', '.join(str(w) for w in sorted(widths))})")
    return np.array(rows, dtype=np.float64)


def read_npy(path: Path) -> FloatArray:
    try:
        a = np.load(path, allow_pickle=False)
    except (ValueError, EOFError) as exc:
        raise InputDataError(f"input {str(path)!r} is not a valid .npy array: {exc}") from exc
    if not isinstance(a, np.ndarray):  # an .npz archive under a .npy name
        a.close()
        raise InputDataError(f"input {str(path)!r} is an .npz archive, not one .npy array")
    if a.size == 0:
        raise InputDataError(f"input {str(path)!r} is empty")
    if not (np.issubdtype(a.dtype, np.number) and not np.issubdtype(a.dtype, np.complexfloating)):
        raise InputDataError(f"input {str(path)!r} holds {a.dtype} values, not real numbers")
    return np.asarray(a, dtype=np.float64)


def read_png(path: Path) -> FloatArray:
    """A grayscale image scaled to [0, 1] (8-bit: /255, 16-bit: /65535). Colour images are
    rejected rather than silently converted."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()
            mode = img.mode
            if mode in ("L", "P") or (mode == "LA"):
                arr = np.asarray(img.convert("L"), dtype=np.float64) / 255.0
            elif mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(img, dtype=np.float64) / 65535.0
            elif mode == "1":
                arr = np.asarray(img, dtype=np.float64)
            else:
                raise InputDataError(f"input {str(path)!r} is a {mode} image; a grayscale PNG is expected")
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise InputDataError(f"input {str(path)!r} is not a readable image: {exc}") from exc
    return arr


def read_input_file(path: str | Path) -> FloatArray:
    """The numbers of an input file, in its own shape (format chosen by the suffix)."""
    p = Path(path)
    if not p.exists():
        raise InputDataError(f"input file {str(p)!r} does not exist")
    if p.is_dir():
        raise InputDataError(f"input {str(p)!r} is a directory, not a file")
    try:
        if p.stat().st_size == 0:
            raise InputDataError(f"input {str(p)!r} is empty")
        suffix = p.suffix.lower()
        if suffix == ".npy":
            return read_npy(p)
        if suffix == ".png":
            return read_png(p)
        return read_text_grid(p)
    except PermissionError as exc:
        raise InputDataError(f"cannot read input {str(p)!r}: permission denied") from exc
    except OSError as exc:
        raise InputDataError(f"cannot read input {str(p)!r}: {exc.strerror or exc}") from exc


def as_network_input(values: FloatArray, input_shape: tuple[int, ...], domain: Box, source: str = "input") -> FloatArray:
    """Check ``values`` against the network's input and the domain; return it flat.

    ``values`` is flat, or shaped as the input (dimensions of size 1 aside) where the input
    has several: a ``(32, 32, 3)`` image for a ``(3, 32, 32)`` input is refused, not read in
    the wrong order (a flat input takes any shape, row by row)."""
    n = int(np.prod(input_shape))
    if values.size != n:
        raise InputDataError(
            f"{source} has {values.size} values ({_describe_shape(values.shape)}); "
            f"the network expects {n} ({_describe_shape(input_shape)})")
    shape, expected = (tuple(d for d in sh if d != 1) for sh in (np.shape(values), input_shape))
    if len(shape) > 1 and len(expected) > 1 and shape != expected:  # (a flat input reads any shape row by row)
        raise InputDataError(
            f"{source} is shaped {_describe_shape(np.shape(values))}, the network's input "
            f"{_describe_shape(input_shape)}: its values would be read in another order (channels last?); give it "
            "in the input's shape, or flat in the input's order")
    flat = np.asarray(values, dtype=np.float64).reshape(-1).copy()
    check_in_domain(flat, domain, source)
    flat.setflags(write=False)
    return flat


def load_input(path: str | Path, input_shape: tuple[int, ...], domain: Box | None = None) -> FloatArray:
    """Read an input file and check it fits a network with ``input_shape`` and ``domain``
    (default ``[0, 1]^n``)."""
    n = int(np.prod(input_shape))
    dom = domain if domain is not None else Box.unit(n)
    return as_network_input(read_input_file(path), input_shape, dom, f"input {str(path)!r}")
