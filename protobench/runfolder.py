"""A run folder, `<out>/runs/<run_id>/`: its validated path, its files, its lock, "completed?" and its record.

The one place that knows a run folder's layout; everything that reads or writes one goes through here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from protobench.errors import UsageError
from protobench.events import EVENTS_NAME, append_event, read_events
from protobench.io import atomic_write_json
from protobench.locks import LOCK_NAME, RunLock
from protobench.records import CONFIG_NAME, UnreadableRun, load_record

#: the folder of --out that holds one folder per run
RUNS = "runs"
#: a completed run's record, written beside its events
RECORD_NAME = "record.json"


def validate_run_id(run_id: str) -> str:
    """A run id is a folder name under <out>/runs, never a path: refuse '/', '..', hidden and empty names."""
    if not isinstance(run_id, str) or not run_id or run_id in (".", "..") or run_id.startswith(".") \
            or any(c in run_id for c in "/\\\0") or len(run_id.encode()) > 255:
        raise UsageError(f"not a run id: {run_id!r} (a run id is a folder name under <out>/runs, not a path)")
    return run_id


class RunFolder:
    """One run's folder under a results folder (`out`), named by its run id."""

    def __init__(self, out: str | Path, run_id: str):
        self.out = Path(out)
        self.run_id = validate_run_id(run_id)
        self.path = self.out / RUNS / self.run_id

    @classmethod
    def at(cls, path: str | Path) -> RunFolder:
        """The run folder at `path` (<out>/runs/<run_id>)."""
        path = Path(path)
        return cls(path.parent.parent, path.name)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.out)!r}, {self.run_id!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RunFolder) and other.path == self.path

    def __hash__(self) -> int:
        return hash(self.path)

    @property
    def config_path(self) -> Path:
        """config.json: the resolved config and the plugin versions, written when the run starts."""
        return self.path / CONFIG_NAME

    @property
    def events_path(self) -> Path:
        """events.jsonl: the append-only log the record is rebuilt from."""
        return self.path / EVENTS_NAME

    @property
    def record_path(self) -> Path:
        """record.json: the completed run's record, a convenience copy of what its events say."""
        return self.path / RECORD_NAME

    @property
    def lock_path(self) -> Path:
        return self.path / LOCK_NAME

    def started(self) -> bool:
        """Whether the run wrote its config (a folder without one holds no run yet)."""
        return self.config_path.exists()

    def lock(self) -> RunLock:
        """The per-run lock (not yet taken)."""
        return RunLock(self.path)

    def events(self) -> list[dict[str, Any]]:
        return read_events(self.events_path)

    def append(self, event: dict[str, Any]) -> None:
        append_event(self.events_path, event)

    def record(self) -> dict[str, Any]:
        """The run record (records.load_record); UnreadableRun when config.json cannot be read."""
        return load_record(self.path)

    def write_record(self, record: dict[str, Any]) -> None:
        """Write record.json (atomically) from the record the events give."""
        atomic_write_json(self.record_path, record, within=self.path)

    def completed(self, strict: bool = False) -> dict[str, Any] | None:
        """The record if the run has completed; None if it never started or is unfinished. A run that cannot be
        read is None too (a sweep then runs it again, and the run itself says what it finds), or with `strict`
        raises UnreadableRun (the run itself, which must not train over it)."""
        if not self.started():
            return None
        try:
            record = self.record()
        except Exception:
            if strict:
                raise
            return None
        return record if record["status"] == "completed" else None

def run_folders(out: str | Path) -> list[RunFolder]:
    """Every folder under <out>/runs that looks like a run (has a config.json or events.jsonl), by run id."""
    runs = Path(out) / RUNS
    if not runs.is_dir():
        return []
    return [RunFolder(out, p.name) for p in sorted(runs.iterdir())
            if p.is_dir() and not p.name.startswith(".") and ((p / CONFIG_NAME).exists() or (p / EVENTS_NAME).exists())]


def unreadable_runs(out: str | Path) -> list[dict[str, Any]]:
    """The runs under <out> that `report` cannot show in full, one entry per damaged file:
    {"run_id", "path", "file", "reason", "readable"}; readable is False when the run is left out entirely."""
    found: list[dict[str, Any]] = []
    for folder in run_folders(out):
        where = {"run_id": folder.run_id, "path": str(folder.path)}
        try:
            record = folder.record()
        except UnreadableRun as exc:
            found.append({**where, "file": exc.file, "reason": exc.reason, "readable": False})
            continue
        for problem in record.get("problems", []):
            found.append({**where, **problem, "readable": True})
    return found


def resolve_run(spec: str, out: str | Path) -> Path:
    """A run folder from a path or a run id under `out`."""
    path = Path(spec)
    if (path / CONFIG_NAME).exists():
        return path
    candidate = Path(out) / RUNS / spec
    if (candidate / CONFIG_NAME).exists():
        return candidate
    raise UsageError(f"no run {spec!r}: not a run folder and not a run id under {Path(out) / RUNS}")
