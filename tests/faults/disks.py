"""Small file systems that fill up for real (a tmpfs mounted by the test: root only), shared by the fault tests."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


def mount_tmpfs(where: Path, size: str) -> None:
    """A tmpfs of `size` at `where`. Skips the test where it cannot be mounted."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root and mount(8)")
    where.mkdir(parents=True, exist_ok=True)
    got = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True,
                         text=True)
    if got.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {got.stderr.strip()}")


def unmount(where: Path) -> None:
    subprocess.run(["umount", "-l", str(where)], check=False)


def fill(disk: Path, filler: Path | None = None) -> Path:
    """Take every free byte of `disk` with one file (the test's own, so it can give the room back)."""
    filler = filler or disk / "filler"
    with open(filler, "ab", buffering=0) as fh:
        for size in (1 << 16, 1 << 12):  # then the last pages
            block = b"\0" * size
            try:
                while True:
                    fh.write(block)
            except OSError:
                pass
    return filler


@contextmanager
def kept_full(disk: Path) -> Iterator[Path]:
    """`disk` full from entry until exit, even of the room a process under test frees meanwhile (an old checkpoint
    it deletes while its disk is being filled): a run cannot slip past the full disk the test means."""
    filler = fill(disk)
    done = threading.Event()

    def refill() -> None:
        while not done.wait(0.005):
            fill(disk, filler)

    thread = threading.Thread(target=refill, daemon=True)
    thread.start()
    try:
        yield filler
    finally:
        done.set()
        thread.join()
