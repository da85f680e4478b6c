"""Parallel sweeps: independent runs in child processes, one thread each on CPUs, one process per GPU.

On a few shared cores, OpenMP threads that compete with another job stall (measured on 2 cores: two threads
3.3× slower than one beside a single other job), while one-thread processes side by side add up (two did
1.41× the images/s of one two-thread run). So a CPU run uses one thread unless told otherwise, and
`protobench sweep --jobs N` runs N combinations at once. The parent follows each child's events.jsonl for
one progress display; Ctrl-C interrupts the children, which checkpoint and exit, and the sweep resumes
them when it is run again.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

THREADS_ENV = "OMP_NUM_THREADS"
#: a child's exit code when another process holds its run (a second sweep on the same folder)
HELD = 75


def last_error(log: Path) -> str | None:
    """The last `error: ...` line a child wrote to its job.log (without the prefix)."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return None
    said = [line[len("error: "):] for line in lines if line.startswith("error: ")]
    return said[-1] if said else None


def physical_cores() -> int:
    """Cores this process may run on, counting each physical core once (hyper-threads share one)."""
    try:
        allowed = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        allowed = os.cpu_count() or 1
    cores: set[tuple[str, str]] = set()
    try:
        phys = ""
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("physical id"):
                    phys = line.split(":", 1)[1].strip()
                elif line.startswith("core id"):
                    cores.add((phys, line.split(":", 1)[1].strip()))
    except OSError:
        pass
    return max(1, min(allowed, len(cores)) if cores else allowed)


def gpu_count() -> int:
    """CUDA devices, without importing torch when there are none to find."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return 0
    if not Path("/proc/driver/nvidia").exists() and not os.environ.get("PROTOBENCH_PROBE_CUDA"):
        return 0
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def default_jobs() -> int:
    """One job per GPU; on CPUs one per physical core."""
    return gpu_count() or physical_cores()


def cpu_threads(threads: int | None) -> int | None:
    """Threads a CPU run uses: --threads, else $OMP_NUM_THREADS as set by the user, else 1 (None: leave as is)."""
    if threads is not None:
        return threads
    if os.environ.get(THREADS_ENV):
        return None
    return 1


def apply_threads(threads: int | None) -> int:
    """Set torch's intra-op threads for this process; the number in use."""
    import torch

    n = cpu_threads(threads)
    if n is not None and not torch.cuda.is_available():
        torch.set_num_threads(n)
    return torch.get_num_threads()


def prepare_instruments(cfgs: list[Any], registry, out: Path, show: bool) -> None:
    """Build the measuring instruments (evaluator, real statistics) once, in this process, before the jobs that
    share them start: with the first of `cfgs` that builds (one that refuses its options says so in its job)."""
    from protobench.errors import UsageError
    from protobench.training.run import Run

    for cfg in cfgs:
        run = Run(cfg, registry, out, show_progress=show)
        try:
            run.build()
        except UsageError:
            continue
        run.prepare_instruments()
        return


# ---------------------------------------------------------------------------------------------
# the child: one run, no display


def child_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="protobench.jobs")
    parser.add_argument("--config-json", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default=None)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # kill / a scheduler's preemption: as Ctrl-C
    if args.device is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = args.device
    apply_threads(args.threads)
    from protobench.config import RunConfig
    from protobench.errors import UsageError
    from protobench.locks import RunLocked
    from protobench.plugins import get_registry
    from protobench.training.run import Run

    cfg = RunConfig.from_dict(json.loads(args.config_json.read_text()))
    try:
        record = Run(cfg, get_registry(), args.out, show_progress=False).execute()
    except KeyboardInterrupt as exc:
        if getattr(exc, "reason", None):  # a full disk: the parent reads this line of job.log
            print(f"error: {exc.reason}", file=sys.stderr, flush=True)
        return 130
    except RunLocked as exc:  # another process holds the run: the parent records it as skipped
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return HELD
    except UsageError as exc:  # refused before the run held a record: the parent reads this line of job.log
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2
    except Exception:  # recorded in the run's events; the parent reads the record
        return 1
    return 0 if record["status"] == "completed" else 1


# ---------------------------------------------------------------------------------------------
# the parent


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


@dataclass
class Job:
    """One combination to run: its resolved config and where its run folder is."""

    label: str
    cfg: Any  # RunConfig
    run_dir: Path
    proc: subprocess.Popen | None = None
    offset: int = 0
    images_seen: int = 0
    stage: str = "waiting"
    device: str | None = None  # the GPU it runs on, if any
    log: Any = None  # its open job.log


STAGES = {
    "start": "starting", "prepare": "training", "resume": "training (resumed)", "loss": "training",
    "eval": "training", "end": "finished", "failed": "failed", "interrupted": "interrupted",
}


def stage_of(ev: dict[str, Any]) -> str | None:
    """What a child is doing, from its latest event."""
    kind = ev.get("event")
    if kind == "stage":
        return str(ev.get("name"))
    if kind == "loss":
        return f"training, loss {ev['mse']:.4f}"
    return STAGES.get(kind)


def run_parallel(jobs: list[Job], out: Path, processes: int, threads: int | None,
                 on_done: Callable[[Job, int], None], show: bool = True, console=None) -> None:
    """Run `jobs` in up to `processes` children; `on_done(job, returncode)` as each one exits."""
    from rich.markup import escape

    from protobench.progress import make_progress

    gpus = gpu_count()
    total_images = sum(j.cfg.budget for j in jobs)
    progress = make_progress("images", show=show, console=console)  # the standard columns: rate, elapsed, ETA
    pending = list(jobs)
    running: list[Job] = []
    finished = 0
    done_images = 0
    free_devices = [str(i) for i in range(gpus)]
    child_threads = threads if threads is not None else (None if os.environ.get(THREADS_ENV) else 1)
    with progress:
        overall = progress.add_task(f"sweep 0/{len(jobs)} done", total=total_images)
        rows: dict[int, Any] = {}
        try:
            while pending or running:
                while pending and len(running) < processes:
                    job = pending.pop(0)
                    job.run_dir.mkdir(parents=True, exist_ok=True)
                    cfg_file = job.run_dir / "job-config.json"
                    from protobench.io import atomic_write_json

                    atomic_write_json(cfg_file, job.cfg.to_dict())
                    events = job.run_dir / "events.jsonl"
                    job.offset = events.stat().st_size if events.exists() else 0
                    cmd = [sys.executable, "-m", "protobench.jobs", "--config-json", str(cfg_file),
                           "--out", str(out)]
                    env = dict(os.environ)
                    if child_threads is not None:
                        cmd += ["--threads", str(child_threads)]
                        env[THREADS_ENV] = str(child_threads)
                    if free_devices:
                        job.device = free_devices.pop(0)
                        cmd += ["--device", job.device]
                    log = open(job.run_dir / "job.log", "ab")  # noqa: SIM115 - closed when the job ends
                    job.log = log
                    # its own process group: the parent forwards Ctrl-C itself, once
                    job.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                                start_new_session=True)
                    job.stage = "starting"
                    rows[id(job)] = progress.add_task(escape(job.label), total=job.cfg.budget)
                    running.append(job)
                for job in list(running):
                    job.offset, new = follow(job.run_dir / "events.jsonl", job.offset)
                    for ev in new:
                        if "images_seen" in ev:
                            job.images_seen = int(ev["images_seen"])
                        job.stage = stage_of(ev) or job.stage
                    rc = job.proc.poll()
                    progress.update(rows[id(job)], completed=job.images_seen,
                                    description=f"{escape(job.label)} · {escape(job.stage)}")
                    if rc is None:
                        continue
                    job.log.close()
                    if job.device is not None:
                        free_devices.append(job.device)
                    running.remove(job)
                    progress.remove_task(rows.pop(id(job)))
                    finished += 1
                    done_images += job.cfg.budget
                    on_done(job, rc)
                progress.update(overall, completed=done_images + sum(j.images_seen for j in running),
                                description=f"sweep {finished}/{len(jobs)} done, {len(running)} running")
                time.sleep(0.3)
        except KeyboardInterrupt:
            for job in running:  # each child checkpoints on SIGINT and exits
                if job.proc.poll() is None:
                    job.proc.send_signal(signal.SIGINT)
            deadline = time.monotonic() + 60
            for job in running:
                try:
                    job.proc.wait(timeout=max(1.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    job.proc.kill()
                job.log.close()
            raise


if __name__ == "__main__":
    sys.exit(child_main())
