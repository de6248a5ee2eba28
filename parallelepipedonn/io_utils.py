"""Small file helpers: atomic writes and hashing."""

from __future__ import annotations

import hashlib
import os
import sys
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


def _special(p: Path) -> bool:
    """Whether ``p`` is written through (appended to), never replaced: a device, a FIFO, or
    a path under ``/dev`` or ``/proc`` or a link leading there (``/dev/stdout``, which may
    be a file the shell redirected standard output to: replacing it lost what was in it)."""
    if p.exists() and not p.is_file() and not p.is_dir():
        return True
    hop, seen = p if p.is_absolute() else Path.cwd() / p, 0
    while seen < 40:
        if str(hop).startswith(("/dev/", "/proc/")):
            return True
        if not hop.is_symlink():
            return False
        hop, seen = hop.parent / os.readlink(hop), seen + 1
    return False


def _own_stream(p: Path) -> int | None:
    """1 or 2 where ``p`` is this process's standard output or error (the same file)."""
    try:
        st = os.stat(p)
    except OSError:
        return None
    for fd in (1, 2):
        try:
            own = os.fstat(fd)
        except OSError:
            continue
        if (own.st_dev, own.st_ino) == (st.st_dev, st.st_ino):
            return fd
    return None


def check_writable(path: str | Path) -> Path:
    """Fail early (before any work) if ``path`` cannot be written."""
    p = Path(path)
    if p.is_dir():
        raise OutputPathError(f"cannot write {str(p)!r}: it is a directory")
    if _special(p):
        if not os.access(p, os.W_OK):
            raise OutputPathError(f"cannot write {str(p)!r}: permission denied")
        return p
    if p.is_symlink():  # a link to a file: the file is written (replaced), the link kept
        try:
            p.resolve(strict=True)
        except FileNotFoundError:
            pass  # a link to a file to create
        except (RuntimeError, OSError) as exc:  # a loop of links
            raise OutputPathError(f"cannot write {str(p)!r}: it is a loop of symbolic links") from exc
        p = Path(os.path.realpath(p))
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        problem = f"{str(parent)!r} is not a directory" if parent.exists() else \
            f"directory {str(parent)!r} does not exist"
        raise OutputPathError(f"cannot write {str(p)!r}: {problem}")
    if not os.access(parent, os.W_OK) or (p.exists() and not os.access(p, os.W_OK)):
        raise OutputPathError(f"cannot write {str(p)!r}: permission denied")
    return Path(path)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see either the old file or the whole new
    one; a device or FIFO (``/dev/stdout``) is written through, and a link to a file keeps
    pointing to it (the file is replaced)."""
    check_writable(path)
    if _special(path):
        try:
            fd = _own_stream(path)
            if fd is not None:  # this process's standard output or error: written at its own offset
                (sys.stdout if fd == 1 else sys.stderr).flush()
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                return
            with open(path, "ab") as f:  # (a file redirected to with >> or > keeps what it holds)
                f.write(data)
        except OSError as exc:
            raise OutputPathError(f"cannot write {str(path)!r}: {exc.strerror or exc}") from exc
        return
    if path.is_symlink():
        path = Path(os.path.realpath(path))
    parent = path.parent if str(path.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent)
    except OSError as exc:
        raise OutputPathError(f"cannot write {str(path)!r}: {exc.strerror or exc}") from exc
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
    # a link to a missing file: the file is what gets created (the link is the user's)
    new = [Path(os.path.realpath(p)) if Path(p).is_symlink() else Path(p) for p in paths if p and not Path(p).exists()]
    try:
        yield
    except BaseException:
        for p in new:
            p.unlink(missing_ok=True)
        raise
