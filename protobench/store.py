"""The results store: the run folders (`<out>/runs/<run_id>/`) are the truth; `<out>/index.sqlite` (WAL) indexes
them for `report` and `compare`. The index is refreshed from the folders whenever it is read, so runs made by
`protobench run`, by a sweep or copied in by hand all appear, and deleting the file loses nothing.

The index is never trusted over the folders: a damaged index (not a database, truncated, another schema) is
rebuilt from them, and a row whose stored record does not match its digest is re-read from its folder."""

from __future__ import annotations

import errno
import hashlib
import json
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

from protobench.diskspace import is_no_space
from protobench.events import EVENTS_NAME
from protobench.io import warn
from protobench.records import CONFIG_NAME, load_record
from protobench.runfolder import RUNS

INDEX_NAME = "index.sqlite"

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    stamp TEXT NOT NULL,            -- size and mtime of config.json + events.jsonl when indexed, and the row's digest
    status TEXT NOT NULL,
    combination TEXT NOT NULL,
    config_hash TEXT NOT NULL,
    dataset TEXT, conditioner TEXT, denoiser TEXT, guidance TEXT, sampler TEXT,
    seed INTEGER,
    device_type TEXT, device_count INTEGER,
    best_value REAL, device_hours_to_best REAL,
    error TEXT,
    record TEXT NOT NULL            -- the full record as JSON
);
CREATE INDEX IF NOT EXISTS runs_combination ON runs (combination);
"""
COLUMNS = ("run_id", "stamp", "status", "combination", "config_hash", "dataset", "conditioner", "denoiser",
           "guidance", "sampler", "seed", "device_type", "device_count", "best_value", "device_hours_to_best",
           "error", "record")


def index_path(out: Path) -> Path:
    return Path(out) / INDEX_NAME


def connect(out: Path) -> sqlite3.Connection:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(index_path(out), timeout=30)
    try:
        conn.execute("PRAGMA journal_mode=WAL")  # readers (report) never block a sweep that is writing
        conn.executescript(SCHEMA)
        names = tuple(row[1] for row in conn.execute("PRAGMA table_info(runs)"))
        if names != COLUMNS:
            raise sqlite3.DatabaseError(f"table runs has columns {', '.join(names)}")
    except BaseException:
        conn.close()
        raise
    return conn


def _stamp(run_dir: Path) -> str:
    parts = []
    for name in (CONFIG_NAME, EVENTS_NAME):
        p = run_dir / name
        st = p.stat() if p.exists() else None
        parts.append(f"{st.st_size}:{st.st_mtime_ns}" if st else "-")
    return "|".join(parts)


def _values(record: dict[str, Any]) -> tuple:
    cfg = record["config"]
    best = record.get("best") or {}
    return (record["status"], record["combination"], record["config_hash"],
            cfg.get("dataset"), cfg.get("conditioner"), cfg.get("denoiser"), cfg.get("guidance"), cfg.get("sampler"),
            cfg.get("seed"), record["device"]["type"], record["device"]["count"], best.get("value"),
            best.get("device_hours"), record.get("error"))


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _upsert(conn: sqlite3.Connection, record: dict[str, Any], stamp: str) -> dict[str, Any]:
    """Write the record's row; returns the record (load_record's, JSON types only: what a warm read gives)."""
    text = json.dumps(record, default=str)
    conn.execute(f"INSERT OR REPLACE INTO runs VALUES ({','.join('?' * len(COLUMNS))})",
                 (record["run_id"], f"{stamp}#{_digest(text)}", *_values(record), text))
    return record


def _row_record(row: tuple) -> dict[str, Any] | None:
    """The row's record if the row is what protobench wrote (the record matches its digest and every column
    matches the record, so a hand edit of either is caught); None if not."""
    stamp, values, text = row[1], tuple(row[2:-1]), row[-1]
    if "#" not in stamp or stamp.rsplit("#", 1)[1] != _digest(text):
        return None
    try:
        record = json.loads(text)
        return record if _values(record) == values else None
    except (ValueError, KeyError, TypeError):
        return None


def index_run(out: Path, run_dir: Path) -> dict[str, Any] | None:
    """(Re)index one run folder; returns its record (None if it has no config.json yet)."""
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG_NAME).exists():
        return None
    record = load_record(run_dir)
    _with_index(out, lambda conn: _upsert(conn, record, _stamp(run_dir)))
    return record


def _sync(conn: sqlite3.Connection, out: Path) -> dict[str, dict[str, Any]]:
    """Bring the index up to date with the run folders; returns every indexed record by run id (each JSON
    record parsed once)."""
    current: dict[str, dict[str, Any]] = {}
    runs = out / RUNS
    folders = {p.name: p for p in sorted(runs.iterdir()) if (p / CONFIG_NAME).exists()} if runs.is_dir() else {}
    rows = {row[0]: row for row in conn.execute(f"SELECT {', '.join(COLUMNS)} FROM runs").fetchall()}
    for run_id in set(rows) - set(folders):
        conn.execute("DELETE FROM runs WHERE run_id = ?", (run_id,))
    for run_id, folder in folders.items():
        stamp = _stamp(folder)
        row = rows.get(run_id)
        if row is not None and row[1].split("#", 1)[0] == stamp:
            if (record := _row_record(row)) is not None:
                current[run_id] = record
                continue
            warn(f"index row for run {run_id} does not match its record; re-reading the run folder")
        try:
            record = load_record(folder)
        except (OSError, ValueError, KeyError):  # unreadable (runfolder.unreadable_runs names it) or being written
            conn.execute("DELETE FROM runs WHERE run_id = ?", (run_id,))
            continue
        current[run_id] = _upsert(conn, record, stamp)
    return current


def _with_index(out: Path, work):
    """Run `work(conn)` in one transaction; on any index damage, rebuild the index from the folders and retry."""
    out = Path(out)
    for attempt in (1, 2):
        try:
            with closing(connect(out)) as conn, conn:
                return work(conn)
        except sqlite3.Error as exc:
            if is_no_space(exc):  # a full disk is not a damaged index: the index's path, as any full disk is said
                raise OSError(errno.ENOSPC, "No space left on device", str(index_path(out))) from exc
            busy = isinstance(exc, sqlite3.OperationalError) and ("locked" in str(exc) or "busy" in str(exc))
            if attempt == 2 or busy:  # a busy index is not a damaged one: never delete it under a writer
                raise
            warn(f"{index_path(out)} is damaged ({exc}); rebuilding it from the run folders")
            _remove_index(out)


def _remove_index(out: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(str(index_path(out)) + suffix).unlink(missing_ok=True)


def records(out: Path, status: str | None = None) -> list[dict[str, Any]]:
    """Every indexed run record (after a sync), optionally only those with `status`, in run_id order."""
    out = Path(out)
    if not out.exists():
        return []
    current = _with_index(out, lambda conn: _sync(conn, out))
    return [current[run_id] for run_id in sorted(current) if not status or current[run_id]["status"] == status]
