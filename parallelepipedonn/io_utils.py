"""Small file helpers: atomic writes and hashing."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import OutputPathError


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def check_writable(path: str | Path) -> Path:
    """Fail early (before any work) if ``path`` cannot be written."""
    p = Path(path)
    parent = p.parent if str(p.parent) else Path(".")
    if p.is_dir():
        raise OutputPathError(f"cannot write {str(p)!r}: it is a directory")
    if not parent.is_dir():
        problem = f"{str(parent)!r} is not a directory" if parent.exists() else \
            f"directory {str(parent)!r} does not exist"
        raise OutputPathError(f"cannot write {str(p)!r}: {problem}")
    if not os.access(parent, os.W_OK) or (p.exists() and not os.access(p, os.W_OK)):
        raise OutputPathError(f"cannot write {str(p)!r}: permission denied")
    return p


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see either the old file or the whole new one."""
    check_writable(path)
    parent = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise OutputPathError(f"cannot write {str(path)!r}: {exc.strerror or exc}") from exc
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def removed_on_failure(*paths: str | Path | None) -> Iterator[None]:
    """Delete the files among ``paths`` that the block created if it raises: a command
    that fails after writing one of its outputs leaves none of them behind."""
    new = [Path(p) for p in paths if p and not Path(p).exists()]
    try:
        yield
    except BaseException:
        for p in new:
            p.unlink(missing_ok=True)
        raise
