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
