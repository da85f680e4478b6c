"""The results store: the run folders (`<out>/runs/<run_id>/`) are the truth; `<out>/index.sqlite` (WAL) indexes
them for `report` and `compare`. The index is refreshed from the folders whenever it is read, so runs made by
`protobench run`, by a sweep or copied in by hand all appear, and deleting the file loses nothing."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

INDEX_NAME = "index.sqlite"

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    stamp TEXT NOT NULL,            -- size and mtime of config.json + events.jsonl when indexed
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


def index_path(out: Path) -> Path:
    return Path(out) / INDEX_NAME


def connect(out: Path) -> sqlite3.Connection:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(index_path(out), timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")  # readers (report) never block a sweep that is writing
    conn.executescript(SCHEMA)
    return conn


def _stamp(run_dir: Path) -> str:
    parts = []
    for name in ("config.json", "events.jsonl"):
        p = run_dir / name
        st = p.stat() if p.exists() else None
        parts.append(f"{st.st_size}:{st.st_mtime_ns}" if st else "-")
    return "|".join(parts)


def _upsert(conn: sqlite3.Connection, record: dict[str, Any], stamp: str) -> None:
    cfg = record["config"]
    best = record.get("best") or {}
    conn.execute(
        "INSERT OR REPLACE INTO runs VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (record["run_id"], stamp, record["status"], record["combination"], record["config_hash"],
         cfg.get("dataset"), cfg.get("conditioner"), cfg.get("denoiser"), cfg.get("guidance"), cfg.get("sampler"),
         cfg.get("seed"), record["device"]["type"], record["device"]["count"], best.get("value"),
         best.get("device_hours"), record.get("error"), json.dumps(record, default=str)),
    )


def index_run(out: Path, run_dir: Path) -> dict[str, Any] | None:
    """(Re)index one run folder; returns its record (None if it has no config.json yet)."""
    from protobench.records import load_record

    run_dir = Path(run_dir)
    if not (run_dir / "config.json").exists():
        return None
    record = load_record(run_dir)
    with closing(connect(out)) as conn, conn:
        _upsert(conn, record, _stamp(run_dir))
    return record


def sync(out: Path) -> None:
    """Bring the index up to date with the run folders: new and changed runs re-read, vanished ones dropped."""
    from protobench.records import load_record

    out = Path(out)
    runs = out / "runs"
    folders = {p.name: p for p in sorted(runs.iterdir()) if (p / "config.json").exists()} if runs.is_dir() else {}
    with closing(connect(out)) as conn, conn:
        known = dict(conn.execute("SELECT run_id, stamp FROM runs").fetchall())
        for run_id in set(known) - set(folders):
            conn.execute("DELETE FROM runs WHERE run_id = ?", (run_id,))
        for run_id, folder in folders.items():
            stamp = _stamp(folder)
            if known.get(run_id) == stamp:
                continue
            try:
                record = load_record(folder)
            except (OSError, ValueError, KeyError):  # a folder being written right now; next sync gets it
                continue
            _upsert(conn, record, stamp)


def rebuild(out: Path) -> None:
    """Drop the index and build it again from the run folders."""
    for suffix in ("", "-wal", "-shm"):
        Path(str(index_path(out)) + suffix).unlink(missing_ok=True)
    sync(out)


def records(out: Path, status: str | None = None) -> list[dict[str, Any]]:
    """Every indexed run record (after a sync), optionally only those with `status`, in run_id order."""
    out = Path(out)
    if not out.exists():
        return []
    sync(out)
    query = "SELECT record FROM runs" + (" WHERE status = ?" if status else "") + " ORDER BY run_id"
    with closing(connect(out)) as conn:
        rows = conn.execute(query, (status,) if status else ()).fetchall()
    return [json.loads(r[0]) for r in rows]
