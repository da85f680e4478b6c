"""Slurm jobs through submitit, for `protobench sweep --executor slurm` (slurm_sweep.py): options, submission,
the job's own side, and what the queue says.

Each combination is one task of a job array (one array per resource shape: combinations asking for different
numbers of GPUs cannot share one). The sweep's --out must be on storage every node sees: each job writes its run
folder there, and the per-run lock (`<run>/.lock`) keeps a run from being trained twice by two sweeps.

Preemption loses nothing: SIGTERM, or the SIGUSR2 that submitit asks Slurm to send before the time limit
(`--signal=USR2@<signal_delay>`), stops training after the current step with a checkpoint (engine.StopRequest);
the job then requeues itself (`scontrol requeue`, submitit's checkpoint-and-requeue protocol) and its next start
resumes from that checkpoint. A run requeued MAX_STUCK times without progress is marked failed instead.

Options come from a `[slurm]` table of the sweep TOML, overridden by flags:

    [slurm]
    partition = "gpu"          # default: the cluster's default partition
    time = "4:00:00"           # per job: minutes, or [D-]H:MM:SS (default 60 minutes)
    gpus = 1                   # per job (default: the combination's --gpus when > 1, else none)
    cpus = 8                   # per job (default 1)
    mem = "32G"                # per job (default: the partition's)
    signal_delay = 120         # seconds of warning before the time limit (default 90)
    max_running = 16           # array tasks running at once (default 256)
    [slurm.sbatch]             # any other sbatch parameter, as `--key=value`
    account = "proj123"
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

try:  # the job's callable must be one submitit knows how to requeue
    from submitit.helpers import Checkpointable
except ImportError:  # pragma: no cover - submitit is a dependency; only `--executor slurm` needs it
    Checkpointable = object  # type: ignore[misc,assignment]

from protobench.errors import ExitCode, UsageError

#: requeues at the same number of images after which a run is marked failed instead of requeued again
MAX_STUCK = 3
#: scheduler states of a job that is still coming or going (squeue's long names)
ACTIVE = {"PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "COMPLETING",
          "SUSPENDED", "RESIZING", "PREEMPTED", "SIGNALING", "STAGE_OUT", "STOPPED", "RESV_DEL_HOLD"}


@dataclass(frozen=True)
class SlurmOptions:
    partition: str | None = None
    time: int = 60  # minutes
    gpus: int | None = None
    cpus: int = 1
    mem: str | None = None
    signal_delay: int = 90  # seconds
    max_running: int = 256
    sbatch: dict[str, Any] = field(default_factory=dict)


_TYPES: dict[str, tuple[type, ...]] = {"partition": (str,), "time": (int, str), "gpus": (int,), "cpus": (int,),
                                       "mem": (str,), "signal_delay": (int,), "max_running": (int,), "sbatch": (dict,)}


def parse_time(value: Any, where: str) -> int:
    """Slurm's time forms (minutes, M:S, H:M:S, D-H, D-H:M, D-H:M:S) -> whole minutes, rounded up."""
    if isinstance(value, bool):
        raise UsageError(f"{where}: time must be minutes or [D-]H:MM:SS, got {value!r}")
    if isinstance(value, int):
        minutes = value
    else:
        m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", str(value).strip())
        if not m:
            raise UsageError(f"{where}: time must be minutes or [D-]H:MM:SS, got {value!r}")
        days, a, b, c = (int(g) if g is not None else None for g in m.groups())
        if days is not None:  # D-H[:M[:S]]
            seconds = days * 86400 + a * 3600 + (b or 0) * 60 + (c or 0)
        elif c is not None:  # H:M:S
            seconds = a * 3600 + b * 60 + c
        elif b is not None:  # M:S
            seconds = a * 60 + b
        else:
            seconds = a * 60
        minutes = -(-seconds // 60)
    if minutes < 1:
        raise UsageError(f"{where}: time must be at least one minute, got {value!r}")
    return minutes


def slurm_options(table: Any, flags: dict[str, Any], where: str) -> SlurmOptions:
    """The `[slurm]` table (from `where`), then the flags that were given; each value checked."""
    if table is None:
        table = {}
    if not isinstance(table, dict):
        raise UsageError(f"{where}: [slurm] must be a table (partition, time, gpus, cpus, mem, signal_delay, "
                         "max_running, [slurm.sbatch])")
    merged = dict(table)
    merged.update({k: v for k, v in flags.items() if v is not None and v != {}})
    if flags.get("sbatch"):
        merged["sbatch"] = {**(table.get("sbatch") or {}), **flags["sbatch"]}
    known = ", ".join(_TYPES)
    for key, value in merged.items():
        if key not in _TYPES:
            raise UsageError(f"{where}: [slurm] has no key {key!r} (known: {known})")
        if not isinstance(value, _TYPES[key]) or isinstance(value, bool):
            kind = " or ".join(t.__name__ for t in _TYPES[key])
            raise UsageError(f"{where}: [slurm] {key} must be {kind}, got {value!r}")
    for key in ("gpus", "cpus", "signal_delay", "max_running"):
        if key in merged and merged[key] < (0 if key in ("gpus", "signal_delay") else 1):
            raise UsageError(f"{where}: [slurm] {key} must be >= {0 if key in ('gpus', 'signal_delay') else 1}, "
                             f"got {merged[key]}")
    for key, value in (merged.get("sbatch") or {}).items():
        if not re.fullmatch(r"[a-z][a-z0-9_-]*", key) or not isinstance(value, (str, int, bool)):
            raise UsageError(f"{where}: [slurm.sbatch] {key} = {value!r}: expected an sbatch option name "
                             "(e.g. account) and a string, number or true")
    if "time" in merged:
        merged["time"] = parse_time(merged["time"], f"{where}: [slurm] time")
    return replace(SlurmOptions(), **merged)


def parse_sbatch_flags(pairs: tuple[str, ...]) -> dict[str, Any]:
    """`--sbatch key=value` (repeatable) -> {key: value}."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip().lstrip("-")
        if not sep or not key:
            raise UsageError(f"--sbatch expects key=value (e.g. account=proj123), got {pair!r}")
        value = value.strip()
        out[key] = True if value.lower() == "true" else value  # `--hold`: a bare sbatch flag
    return out


def check_cluster(opts: SlurmOptions) -> None:
    """Refuse before anything is submitted: no Slurm client here, or a partition the cluster does not have."""
    if shutil.which("sbatch") is None:
        raise UsageError("--executor slurm: no sbatch on PATH (run from a Slurm login node, or use --executor local)")
    try:
        import submitit  # noqa: F401
    except ImportError:
        raise UsageError("--executor slurm needs submitit: pip install submitit") from None
    if opts.partition is None:
        return
    if shutil.which("sinfo") is None:
        return  # sbatch itself will say
    got = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True, timeout=60)
    if got.returncode != 0:
        raise UsageError(f"--executor slurm: sinfo failed: {' '.join(got.stderr.split()) or got.returncode}")
    names = sorted({p.strip().rstrip("*") for p in got.stdout.split() if p.strip()})
    if opts.partition not in names:
        raise UsageError(f"unknown Slurm partition {opts.partition!r}; this cluster has: {', '.join(names) or 'none'}")


def job_gpus(cfg: Any, opts: SlurmOptions) -> int:
    """GPUs one combination's job asks for: [slurm] gpus, else its --gpus when it runs DeepSpeed (> 1)."""
    if opts.gpus is not None:
        return opts.gpus
    return cfg.gpus if cfg.gpus > 1 else 0


# ---------------------------------------------------------------------------------------------
# inside the job


class SlurmRun(Checkpointable):
    """One combination, run inside its Slurm job. Interrupted (SIGTERM, SIGUSR2): requeue and resume."""

    def __init__(self, threads: int | None = None):
        self.threads = threads

    def __call__(self, config: dict[str, Any], out: str) -> str:
        from protobench.config import RunConfig
        from protobench.errors import Interrupted, NoSpace
        from protobench.launch import execute
        from protobench.locks import RunLocked
        from protobench.plugins import get_registry
        from protobench.runfolder import RunFolder

        cfg = RunConfig.from_dict(config)
        run_dir = RunFolder(out, cfg.run_id()).path
        try:
            record = execute(cfg, get_registry(), Path(out), show_progress=False, threads=self.threads)
        except RunLocked as exc:  # another sweep's job holds it: that one trains it
            print(f"skipped: {exc}", file=sys.stderr, flush=True)
            return "skipped"
        except NoSpace as exc:  # requeued it would fail again: room must be made first
            print(f"error: {exc.reason}", file=sys.stderr, flush=True)
            return "interrupted"
        except Interrupted as exc:
            return requeue(run_dir, exc.images_seen)
        return str(record["status"])


def requeue(run_dir: Path, images_seen: int) -> str:
    """Put this job back in the queue to resume from its checkpoint; after MAX_STUCK requeues without progress,
    mark the run failed with the reason instead."""
    from protobench.events import EVENTS_NAME, FAILED, REQUEUE, append_event, make_event, read_events

    events = run_dir / EVENTS_NAME
    stuck = sum(1 for e in read_events(events) if e.get("event") == REQUEUE and e.get("images_seen") == images_seen)
    if stuck >= MAX_STUCK:
        reason = (f"requeued {stuck} times without progress (each time at {images_seen:,} images); "
                  "not requeued again: see the job's log")
        append_event(events, make_event(FAILED, error=reason))
        print(f"error: {reason}", file=sys.stderr, flush=True)
        return "failed"
    job_id = os.environ.get("SLURM_ARRAY_JOB_ID")
    job_id = f"{job_id}_{os.environ['SLURM_ARRAY_TASK_ID']}" if job_id else os.environ.get("SLURM_JOB_ID")
    append_event(events, make_event(REQUEUE, images_seen=images_seen, job_id=job_id))
    print(f"requeueing job {job_id}: it resumes from its checkpoint at {images_seen:,} images", file=sys.stderr,
          flush=True)
    # submitit's protocol: requeue, then leave without a result (the next start runs the same call again)
    subprocess.run(["scontrol", "requeue", str(job_id)], check=False, timeout=60)
    sys.exit(ExitCode.REQUEUED)


# ---------------------------------------------------------------------------------------------
# the submitting side


def submit(todo: list[tuple[str, Any]], out: Path, sid: str, opts: SlurmOptions, threads: int | None,
           ) -> dict[str, str]:
    """Submit one array per resource shape; {run_id: Slurm job id ("<array>_<task>")}."""
    import submitit

    folder = out / "slurm" / sid  # submitit's pickles and the jobs' logs stay under --out
    groups: dict[int, list[tuple[str, Any]]] = {}
    for label, cfg in todo:
        groups.setdefault(job_gpus(cfg, opts), []).append((label, cfg))
    ids: dict[str, str] = {}
    n_threads = threads or 1
    for gpus, members in groups.items():
        executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=MAX_STUCK)
        params: dict[str, Any] = {
            "job_name": f"protobench-{sid}", "time": opts.time, "cpus_per_task": opts.cpus,
            "signal_delay_s": opts.signal_delay, "array_parallelism": opts.max_running,
            "setup": [f"export OMP_NUM_THREADS={n_threads}"],
            "additional_parameters": {"requeue": True, **opts.sbatch},
        }
        if opts.partition:
            params["partition"] = opts.partition
        if gpus:
            params["gpus_per_node"] = gpus
        if opts.mem:
            params["mem"] = opts.mem
        executor.update_parameters(**params)
        try:
            jobs = executor.map_array(SlurmRun(threads), [cfg.to_dict() for _, cfg in members],
                                      [str(out)] * len(members))
        except Exception as exc:  # sbatch refused (a bad --sbatch option, an account): its own words, one line
            message = " ".join(str(exc).split())
            raise UsageError(f"sbatch refused the jobs: {message[-400:]}") from None
        for (_, cfg), job in zip(members, jobs, strict=True):
            ids[cfg.run_id()] = str(job.job_id)
    return ids


def scheduler_states(job_ids: list[str]) -> dict[str, dict[str, str]]:
    """{job id: {"state", "node", "start", "reason"}} from squeue (sacct for jobs squeue no longer shows)."""
    found: dict[str, dict[str, str]] = {}
    if not job_ids or shutil.which("squeue") is None:
        return found
    arrays = sorted({j.split("_")[0] for j in job_ids})
    fmt = "%i|%T|%N|%S|%r"
    for batch in ([",".join(arrays)], arrays):  # all at once; one by one if one of them is unknown by now
        ok = True
        for ids in batch:
            got = subprocess.run(["squeue", "-h", "-r", "-t", "all", "-j", ids, "-o", fmt], capture_output=True,
                                 text=True, timeout=60)
            ok = ok and got.returncode == 0
            for line in got.stdout.splitlines():
                parts = line.strip().split("|")
                if len(parts) == 5:
                    found[parts[0]] = {"state": parts[1], "node": parts[2], "start": parts[3], "reason": parts[4]}
        if ok:
            break
    missing = [j for j in job_ids if j not in found]
    if missing and shutil.which("sacct"):
        got = subprocess.run(["sacct", "-n", "-P", "-X", "-j", ",".join(missing), "-o", "JobID,State,NodeList,Start"],
                             capture_output=True, text=True, timeout=60)
        if got.returncode == 0:  # no accounting storage: sacct says so and we go by the run folders
            for line in got.stdout.splitlines():
                parts = line.strip().split("|")
                if len(parts) == 4 and parts[0] in missing:
                    found[parts[0]] = {"state": parts[1].split()[0], "node": parts[2], "start": parts[3],
                                       "reason": ""}
    return found
