"""`protobench status`: where each combination of a results folder stands.

pending / running (where, since when) / completed / failed (the reason line) / interrupted (at how many
images), read from the run folders and, for Slurm jobs, from the scheduler (squeue, sacct). Reading never
writes: the per-run lock is looked up in /proc/locks, not taken (taking it, even shared, would make a run that
starts at that moment believe another process holds it).
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from protobench.events import INTERRUPTED
from protobench.records import UnreadableRun, best_text
from protobench.runfolder import RunFolder, run_folders


def lock_holder(folder: RunFolder) -> dict[str, Any] | None:
    """Who holds the run's lock ({"pid", "host", "since"}), or None when nobody does (as far as this host sees)."""
    try:
        st = folder.lock_path.stat()
    except OSError:
        return None
    holder = folder.lock().holder()
    try:
        text = Path("/proc/locks").read_text()
    except OSError:  # not Linux: the holder's pid, if it is on this host
        if holder.get("host") == socket.gethostname() and _alive(holder.get("pid")):
            return holder
        return None
    dev = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    for line in text.splitlines():
        fields = line.split()
        if "FLOCK" in fields and dev in fields:
            return holder or {}
    return None


def _alive(pid: Any) -> bool:
    try:
        os.kill(int(pid), 0)
    except (TypeError, ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


def _since(t: Any) -> str:
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(float(t)))
    except (TypeError, ValueError):
        return str(t)


def known_runs(out: Path) -> list[dict[str, Any]]:
    """Every combination the folder knows: those of its sweeps' manifests (with their Slurm job ids), then run
    folders no manifest lists."""
    from protobench.sweep import describe

    entries: dict[str, dict[str, Any]] = {}
    for manifest in sorted((out / "sweeps").glob("*.json"), key=lambda p: p.stat().st_mtime):
        try:
            data = json.loads(manifest.read_text())
            runs = data.get("runs", [])
        except (OSError, ValueError, AttributeError):
            continue
        for r in runs:
            if not isinstance(r, dict) or not r.get("run_id"):
                continue
            entry = entries.setdefault(r["run_id"], {"run_id": r["run_id"], "label": describe(r.get("combo") or {}),
                                                     "job_ids": []})
            for job in r.get("job_ids") or ([r["job_id"]] if r.get("job_id") else []):
                if job not in entry["job_ids"]:
                    entry["job_ids"].append(job)
    for folder in run_folders(out):
        if folder.run_id not in entries:
            label = folder.run_id
            try:
                label = json.loads(folder.config_path.read_text()).get("combination") or label
            except (OSError, ValueError, AttributeError):
                pass
            entries[folder.run_id] = {"run_id": folder.run_id, "label": label, "job_ids": []}
    return list(entries.values())


def run_status(out: Path, entry: dict[str, Any], sched: dict[str, dict[str, str]]) -> dict[str, Any]:
    """One combination's state, with `detail`: where and since when, the reason line, or the images reached."""
    folder = RunFolder(out, entry["run_id"])
    job = entry["job_ids"][-1] if entry["job_ids"] else None
    js = sched.get(job, {}) if job else {}
    row = {"run_id": entry["run_id"], "combination": entry["label"], "job_id": job, "state": "pending",
           "detail": "", "images_seen": 0, "budget": None, "where": None, "since": None, "reason": None}
    record = None
    if folder.started():
        try:
            record = folder.record()
            row["budget"] = record["config"].get("budget")
        except UnreadableRun as exc:
            return {**row, "state": "failed", "reason": str(exc), "detail": str(exc)}
    events = folder.events()
    seen = [int(e["images_seen"]) for e in events if isinstance(e.get("images_seen"), int)]
    row["images_seen"] = seen[-1] if seen else 0
    if record is not None and record["status"] == "completed":
        return {**row, "state": "completed", "images_seen": row["budget"] or row["images_seen"],
                "detail": _best(record)}
    if record is not None and record["status"] == "failed":
        reason = str(record.get("error") or "failed")
        return {**row, "state": "failed", "reason": reason, "detail": reason}
    holder = lock_holder(folder)
    if js.get("state") == "RUNNING" or holder is not None:
        where = js.get("node") if js.get("state") == "RUNNING" else None
        where = where or (holder or {}).get("host")
        since = js.get("start") if js.get("state") == "RUNNING" else _since((holder or {}).get("since"))
        detail = f"on {where} since {since}, at {row['images_seen']:,} images" + (f", Slurm job {job}" if job else "")
        return {**row, "state": "running", "where": where, "since": since, "detail": detail}
    state = js.get("state", "")
    if state in ("PENDING", "REQUEUED", "REQUEUE_HOLD", "CONFIGURING"):
        why = js.get("reason") or ""
        detail = f"Slurm job {job} queued" + (f" ({why})" if why and why != "None" else "")
        if events:
            detail += f"; resumes at {row['images_seen']:,} images"
        return {**row, "state": "pending", "detail": detail, "reason": why or None}
    stops = [e for e in events if e.get("event") == INTERRUPTED]
    if events:  # started, not finished, not running: interrupted (by a signal, a full disk, or a kill)
        last = stops[-1] if stops else {}
        at = int(last.get("images_seen", row["images_seen"]) or 0)
        reason = last.get("reason") or ("killed before it could checkpoint" if not stops else None)
        detail = f"at {at:,} images" + (f": {reason}" if reason else "") + "; run the sweep again to resume"
        return {**row, "state": "interrupted", "images_seen": at, "reason": reason, "detail": detail}
    if job and state and state not in ("PENDING",):
        reason = f"Slurm job {job} ended {state} before the run started (see <out>/slurm/)"
        return {**row, "state": "failed", "reason": reason, "detail": reason}
    return {**row, "detail": f"Slurm job {job}" if job else "not started"}


def _best(record: dict[str, Any]) -> str:
    best = record.get("best")
    if not best:
        return ""
    return f"{best_text(record)} at {best['images_seen']:,} images"


def statuses(out: Path, scheduler_states: Callable[[list[str]], dict[str, dict[str, str]]]) -> list[dict[str, Any]]:
    """Every combination's state; `scheduler_states(job_ids)` reads the scheduler's queue (slurm.scheduler_states),
    passed in so that reading results never reaches the launchers."""
    entries = known_runs(out)
    jobs = [e["job_ids"][-1] for e in entries if e["job_ids"]]
    sched = scheduler_states(jobs)
    return [run_status(out, e, sched) for e in entries]


COLOURS = {"pending": "yellow", "running": "cyan", "completed": "green", "failed": "red", "interrupted": "magenta"}
