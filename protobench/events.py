"""The event schema of a run's append-only `events.jsonl`, and the one way to write, read and tail it.

Every line is {"event": KIND, "time": seconds since the epoch, **fields}. The engine, the records, the job
pool and the launchers all name kinds through the constants below; `records` rebuilds a run from them.
A reader ignores kinds it does not know (a later version's).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from protobench.io import check_no_symlinks, warn

#: the file of a run folder that holds its events
EVENTS_NAME = "events.jsonl"

START = "start"  # a fresh run begins (a rerun of a failed one starts over)
STAGE = "stage"  # what the run is doing now, for progress displays
PREPARE = "prepare"  # a conditioner's or guidance's prepare step (Stage I) finished
RESUME = "resume"  # continued from a checkpoint
LOSS = "loss"  # a logged training step
EVAL = "eval"  # an evaluation: metrics and the work spent to reach them
CHECKPOINT = "checkpoint"  # a checkpoint was saved
END = "end"  # the run finished its budget
FAILED = "failed"  # the run cannot go on (its error line)
INTERRUPTED = "interrupted"  # stopped resumably (signal, full disk, --stop-after): a rerun resumes
REQUEUE = "requeue"  # the scheduler requeued the run's job (Slurm)
REFUSED = "refused"  # a sweep job's input was refused (written to the job's own events file, not the run's)

#: each kind and the fields it carries besides "event" and "time" (optional ones included)
FIELDS: dict[str, tuple[str, ...]] = {
    START: ("device",),
    STAGE: ("name", "images_seen"),
    PREPARE: ("component", "device_seconds", "results", "work", "images_seen", "instruments"),
    RESUME: ("images_seen", "step", "checkpoint"),
    LOSS: ("step", "images_seen", "loss", "mse"),
    EVAL: ("images_seen", "step", "device_seconds", "work", "metrics", "metrics_se", "samples", "instruments",
           "acceptance_rate", "samples_dropped", "metrics_unscored", "conditioner", "grid", "final"),
    CHECKPOINT: ("file", "step", "images_seen"),
    END: ("status", "images_seen", "device_seconds", "param_digests"),
    FAILED: ("error", "step", "traceback", "log_tail"),
    INTERRUPTED: ("images_seen", "checkpoint", "reason"),
    REQUEUE: ("images_seen", "job_id"),
    REFUSED: ("exit_code", "error"),
}
#: the kinds that start, continue or end a run (what a launcher looks at to tell how a run stopped)
LIFECYCLE = (INTERRUPTED, RESUME, START, END, FAILED)


def make_event(kind: str, **fields: Any) -> dict[str, Any]:
    """One event line: {"event": kind, "time": now, **fields}."""
    return {"event": kind, "time": time.time(), **fields}


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


def follow(events: Path, offset: int) -> tuple[int, list[dict[str, Any]]]:
    """New complete lines of events.jsonl since `offset` (a torn last line waits for its newline)."""
    try:
        with open(events, "rb") as fh:
            fh.seek(offset)
            data = fh.read()
    except FileNotFoundError:
        return offset, []
    end = data.rfind(b"\n") + 1
    out = []
    for line in data[:end].splitlines():
        try:
            out.append(json.loads(line))
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
    return offset + end, out


def interruption(events: list[dict[str, Any]], run_id: str, where: str | Path = ""):
    """The resumable stop `events` end in: Interrupted with what was kept (NoSpace, with its reason, for a full
    disk) when the last lifecycle event is `interrupted`; None when they end otherwise. `where`: the path a full
    disk refused (the run folder when not known)."""
    from protobench.errors import Interrupted, NoSpace

    stops = [e for e in events if e.get("event") in LIFECYCLE]
    if not stops or stops[-1]["event"] != INTERRUPTED:
        return None
    stop = stops[-1]
    images_seen, checkpoint = int(stop.get("images_seen") or 0), stop.get("checkpoint")
    if stop.get("reason"):
        return NoSpace(run_id, images_seen, checkpoint, str(where), str(stop["reason"]))
    return Interrupted(run_id, images_seen, checkpoint)
