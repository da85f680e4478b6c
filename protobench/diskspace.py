"""A full disk (or a quota) is an interruption, not a crash: one line naming the path and the free space.

Shared cluster storage fills up and quotas bite mid-run; the run stops like Ctrl-C (its last good checkpoint
stays the latest) and resumes once there is room."""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

#: errno values that mean "no room": the disk is full, or the user's quota is
NO_ROOM = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


def is_no_space(exc: BaseException) -> bool:
    """An OSError for lack of space, or a library's wrapper of one (safetensors says `os error 28`, SQLite
    SQLITE_FULL)."""
    if isinstance(exc, OSError) and exc.errno in NO_ROOM:
        return True
    text = str(exc)
    if "database or disk is full" in text:  # SQLite's SQLITE_FULL (the results index)
        return True
    return any(f"os error {code})" in text or f"code: {code}," in text for code in NO_ROOM)


def no_space_in(exc: BaseException | None) -> BaseException | None:
    """The lack of space behind `exc` (it, or what it was raised from or while handling), or None."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if is_no_space(exc):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def free_bytes(path: str | Path) -> int | None:
    """Free bytes on the file system holding `path` (its nearest existing folder); None if unknown."""
    p = Path(path)
    for candidate in (p, *p.parents):
        if candidate.exists():
            try:
                return shutil.disk_usage(candidate).free
            except OSError:
                return None
    return None


def human_bytes(n: int | None) -> str:
    if n is None:
        return "unknown"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def no_space_reason(exc: BaseException | None, fallback: str | Path) -> tuple[str, str]:
    """(the path whose write failed, one line: which path and how much room is left)."""
    path = str(getattr(exc, "filename", None) or fallback)
    return path, f"no space left writing {path} ({human_bytes(free_bytes(path))} free there)"
