"""One process per run: a per-run lock (`<run>/.lock`, fcntl.flock), so two sweeps on one --out never train
the same run twice. The kernel drops the lock when its holder exits, even on kill -9: no stale locks.

    with run_lock(run_dir) as held:          # non-blocking try
        if not held:
            ...  # another process is running it: skip it (or run_lock(run_dir, wait=True) to wait)
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from protobench.errors import UsageError

LOCK_NAME = ".lock"


class RunLocked(UsageError):
    """The run is held by another process (who holds it is in the message)."""


class RunLock:
    """An exclusive lock on one run folder, held by this process until `release` (or exit)."""

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, wait: bool = False, timeout: float | None = None, poll: float = 0.5) -> bool:
        """Try to take the lock; with `wait`, keep trying (up to `timeout` seconds). True when taken."""
        if self._fd is not None:
            return True
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.path.is_symlink():
            raise UsageError(f"refusing to lock {self.path}: it is a symbolic link")
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not wait or (deadline is not None and time.monotonic() >= deadline):
                    os.close(fd)
                    return False
                time.sleep(poll)
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}).encode())
        os.fsync(fd)
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            os.close(self._fd)
            self._fd = None

    def holder(self) -> dict[str, Any]:
        """Who wrote the lock file last (the holder while it is held): {"pid", "host", "since"}, or {}."""
        try:
            data = json.loads(self.path.read_text())
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def describe_holder(self) -> str:
        h = self.holder()
        if not h:
            return "another process"
        return f"process {h.get('pid')} on {h.get('host')}"

    def __enter__(self) -> RunLock:
        if not self.acquire():
            raise RunLocked(f"run {self.run_dir.name} is being run by {self.describe_holder()}")
        return self

    def __exit__(self, *exc) -> None:
        self.release()


@contextmanager
def run_lock(run_dir: str | Path, wait: bool = False, timeout: float | None = None) -> Iterator[bool]:
    """Hold the run's lock for the block; yields False (without waiting) when another process holds it."""
    lock = RunLock(run_dir)
    taken = lock.acquire(wait=wait, timeout=timeout)
    try:
        yield taken
    finally:
        if taken:
            lock.release()
