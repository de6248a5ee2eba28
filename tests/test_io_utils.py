"""Output files: written whole or not at all, through devices and FIFOs, never replacing a link."""

from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path

import pytest

from parallelepipedonn.errors import OutputPathError
from parallelepipedonn.io_utils import atomic_write_bytes, check_writable


def test_a_fifo_is_written_through_not_replaced(tmp_path):
    """``--json /dev/stdout`` (a link to a pipe) replaced the node by a regular file and wrote nothing to it."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    atomic_write_bytes(fifo, b"certificate\n")
    reader.join(timeout=10)
    assert got == [b"certificate\n"] and fifo.is_fifo()


def test_a_link_to_a_file_keeps_pointing_to_it(tmp_path):
    target, link = tmp_path / "c.json", tmp_path / "latest.json"
    target.write_text("old")
    link.symlink_to(target)
    atomic_write_bytes(link, b"new")
    assert link.is_symlink() and target.read_text() == "new"


def test_a_temporary_file_that_cannot_be_created_is_an_output_error(tmp_path, monkeypatch):
    """``--json /sys/a.json``: mkstemp's PermissionError was an internal error (exit 1), not exit 4."""
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    with pytest.raises(OutputPathError, match="Permission denied"):
        atomic_write_bytes(tmp_path / "c.json", b"x")
    assert not (tmp_path / "c.json").exists()


def test_a_directory_or_a_missing_parent_is_refused_before_any_work(tmp_path):
    with pytest.raises(OutputPathError, match="directory"):
        check_writable(tmp_path)
    with pytest.raises(OutputPathError, match="does not exist"):
        check_writable(tmp_path / "missing" / "c.json")
    assert check_writable(Path(os.devnull)) == Path(os.devnull)


def test_standard_output_redirected_to_a_file_keeps_what_was_printed(tmp_path):
    """``--json /dev/stdout > log`` replaced the log file (a link to it), losing the lines
    printed before and after; written through at the stream's own offset now."""
    import subprocess
    import sys

    script = ("import sys; from pathlib import Path; from parallelepipedonn.io_utils import atomic_write_bytes\n"
              "print('before', flush=True); atomic_write_bytes(Path('/dev/stdout'), b'{}\\n'); print('after')\n")
    for mode in ("w", "a"):
        log = tmp_path / f"log-{mode}.txt"
        log.write_text("earlier\n" if mode == "a" else "")
        with open(log, mode) as out:
            subprocess.run([sys.executable, "-c", script], stdout=out, check=True, cwd=Path(__file__).parents[1])
        assert log.read_text() == ("earlier\n" if mode == "a" else "") + "before\n{}\nafter\n"


def test_a_link_to_a_missing_file_keeps_the_link_and_a_loop_is_refused(tmp_path):
    from parallelepipedonn.io_utils import removed_on_failure

    link, target = tmp_path / "latest.json", tmp_path / "c.json"
    link.symlink_to(target)
    with pytest.raises(KeyboardInterrupt), removed_on_failure(link):
        atomic_write_bytes(link, b"x")
        raise KeyboardInterrupt  # the command fails after writing: what it created goes, the link stays
    assert link.is_symlink() and not target.exists()
    atomic_write_bytes(link, b"y")
    assert link.is_symlink() and target.read_text() == "y"
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    with pytest.raises(OutputPathError, match="loop"):
        check_writable(loop)
