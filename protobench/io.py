"""Atomic file writes that stay inside their folder, digests and warnings."""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from protobench.errors import UsageError


def json_digest(obj: Any, length: int = 16) -> str:
    """A short, stable identity of a JSON-able value (sorted keys): config hashes and cache keys."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:length]


def warn(message: str) -> None:
    """One line on stderr: damage found and what protobench does instead."""
    print(f"protobench: {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# paths: nothing is written through a symbolic link


def check_no_symlinks(path: str | Path, within: str | Path | None = None) -> None:
    """Refuse `path` if it, or a folder between `within` and it, is a symbolic link (without `within`:
    the path and its own folder). A link placed inside a run folder must not redirect writes outside it."""
    path = Path(path)
    if within is None:
        folders = [path.parent]
    else:
        within = Path(within)
        try:
            rel = path.parent.relative_to(within)
        except ValueError:
            raise UsageError(f"refusing to write {path}: it is not inside {within}") from None
        folders = [within / Path(*rel.parts[:i]) for i in range(1, len(rel.parts) + 1)]
    for candidate in (path, *folders):
        if candidate.is_symlink():
            raise UsageError(f"refusing to write {path}: {candidate} is a symbolic link")


def atomic_write_bytes(path: str | Path, data: bytes, within: str | Path | None = None) -> None:
    """Write through a temp file and a rename; refuses to write through a symbolic link (check_no_symlinks)."""
    path = Path(path)
    check_no_symlinks(path, within)
    path.parent.mkdir(parents=True, exist_ok=True)
    check_no_symlinks(path, within)  # again: mkdir may have met a link made in between
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.filename is None:  # a failed write names the file it was for
            exc.filename = str(path)
        raise


def copy_file(src: str | Path, dst: str | Path, within: str | Path | None = None) -> None:
    """Copy a file atomically, never writing through a symbolic link at `dst`."""
    atomic_write_bytes(dst, Path(src).read_bytes(), within)


def atomic_write_json(path: str | Path, obj: Any, within: str | Path | None = None) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode(), within)
