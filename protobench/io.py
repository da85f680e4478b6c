"""Atomic file writes that stay inside their folder, the append-only event log, and run ids."""

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
# paths: run ids are names, and nothing is written through a symbolic link


def validate_run_id(run_id: str) -> str:
    """A run id is a folder name under <out>/runs, never a path: refuse '/', '..', hidden and empty names."""
    if not isinstance(run_id, str) or not run_id or run_id in (".", "..") or run_id.startswith(".") \
            or any(c in run_id for c in "/\\\0") or len(run_id.encode()) > 255:
        raise UsageError(f"not a run id: {run_id!r} (a run id is a folder name under <out>/runs, not a path)")
    return run_id


def run_path(out: str | Path, run_id: str) -> Path:
    """<out>/runs/<run_id>, with the id checked first (so nothing outside --out is read or created)."""
    return Path(out) / "runs" / validate_run_id(run_id)


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


# ---------------------------------------------------------------------------------------------
# events.jsonl


def _torn_tail(fh) -> tuple[int, bool] | None:
    """None when the file ends cleanly; else (offset where the last line starts, whether that line is whole
    JSON missing only its newline)."""
    size = fh.seek(0, os.SEEK_END)
    if size == 0:
        return None
    chunk = 1 << 16
    data = b""
    pos = size
    while True:  # read backwards until the newline before the last line (or the start)
        step = min(chunk, pos)
        pos -= step
        fh.seek(pos)
        data = fh.read(step) + data
        cut = data.rstrip(b"\n").rfind(b"\n") if data.endswith(b"\n") else data.rfind(b"\n")
        if cut >= 0 or pos == 0:
            break
    start = pos + cut + 1  # cut == -1 at the start of the file: the whole file is the last line
    last = data[cut + 1:]
    try:
        json.loads(last.decode("utf-8"))
    except ValueError:
        return start, False
    return None if last.endswith(b"\n") else (start, True)


def append_event(path: str | Path, event: dict[str, Any]) -> None:
    """Append one JSON line; a torn last line (a write cut by a kill) is removed first, so it cannot
    swallow this event."""
    line = json.dumps(event, sort_keys=True, default=str) + "\n"
    path = Path(path)
    check_no_symlinks(path)
    with open(path, "ab+") as fh:
        tail = _torn_tail(fh)
        if tail is not None and tail[1]:  # a whole event that lost only its newline
            fh.write(b"\n")
        elif tail is not None:
            end = fh.seek(0, os.SEEK_END)
            warn(f"{path} ended in a damaged line ({end - tail[0]} bytes, a cut write); removed it before appending")
            fh.truncate(tail[0])
        fh.write(line.encode("utf-8"))
        fh.flush()
        os.fsync(fh.fileno())


def scan_events(path: str | Path) -> tuple[list[dict[str, Any]], list[str]]:
    """(events, problems): every readable line of events.jsonl, and one reason per line that is not."""
    events: list[dict[str, Any]] = []
    problems: list[str] = []
    path = Path(path)
    if not path.exists():
        return events, problems
    data = path.read_bytes()
    lines = data.split(b"\n")
    torn = lines.pop()  # b"" when the file ends with a newline
    for number, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            problems.append(f"line {number} is not UTF-8 (byte {exc.start})")
            continue
        try:
            events.append(json.loads(text))
        except json.JSONDecodeError as exc:
            problems.append(f"line {number} is not JSON ({exc.msg})")
    if torn:
        try:
            events.append(json.loads(torn.decode("utf-8")))  # whole, only its newline missing
        except ValueError:
            problems.append(f"the last line is cut off ({len(torn)} bytes without a newline: an interrupted write)")
    return events, problems


def read_events(path: str | Path) -> list[dict[str, Any]]:
    """Read events.jsonl, skipping lines that are not JSON (a torn last line left by a kill -9)."""
    return scan_events(path)[0]
