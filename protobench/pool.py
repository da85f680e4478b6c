"""The local pool: runs in child processes (the worker), up to N at a time, one thread each on CPUs, one
process per GPU. The parent follows each child's events.jsonl for one progress display; Ctrl-C interrupts the
children, which checkpoint and exit, and the runs resume when they are started again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from protobench.device import THREADS_ENV, cpu_threads, gpu_count
from protobench.errors import ExitCode
from protobench.events import EVENTS_NAME, REFUSED, follow, interruption

STAGES = {
    "start": "starting", "prepare": "training", "resume": "training (resumed)", "loss": "training",
    "eval": "training", "end": "finished", "failed": "failed", "interrupted": "interrupted",
}


def exit_text(rc: int) -> str:
    """How a child ended, in words: its exit code, or the signal that killed it."""
    if rc < 0:
        try:
            return f"was killed by {signal.Signals(-rc).name}"
        except ValueError:
            return f"was killed by signal {-rc}"
    return f"exited with code {rc}"


def stage_of(ev: dict[str, Any]) -> str | None:
    """What a child is doing, from its latest event."""
    kind = ev.get("event")
    if kind == "stage":
        return str(ev.get("name"))
    if kind == "loss":
        return f"training, loss {ev['mse']:.4f}"
    return STAGES.get(kind)


@dataclass
class Job:
    """One run to start in a child: its resolved config and where its run folder is."""

    label: str
    cfg: Any  # RunConfig
    run_dir: Path
    proc: subprocess.Popen | None = None
    offset: int = 0  # how far the parent has read its events.jsonl
    started_at: int = 0  # where this start's events begin there
    images_seen: int = 0
    stage: str = "waiting"
    device: str | None = None  # the GPU it runs on, if any
    log: Any = None  # its open job.log
    refusals: int = 0  # where this start's refusals begin in job-events.jsonl

    @property
    def job_events(self) -> Path:
        """Where the child reports a refusal (`refused` events)."""
        return self.run_dir / "job-events.jsonl"

    def interrupted(self):
        """`Interrupted` with what the child kept (NoSpace for a full disk) once this start of it has recorded
        stopping resumably; None if it has not."""
        _, new = follow(self.run_dir / EVENTS_NAME, self.started_at)
        return interruption(new, self.cfg.run_id(), self.run_dir)

    def stopped(self, rc: int):
        """How the child, having exited with `rc`, stopped resumably by itself (a full disk, --stop-after, SIGTERM):
        as its events say, or, for a full disk that left no room to say it, from its last checkpoint; None if it
        did not."""
        if rc == ExitCode.OK:
            return None
        stop = self.interrupted()  # its events are the truth, whatever the code (a crash after the stop was saved)
        if stop is None and rc == ExitCode.NO_SPACE:
            from protobench.training.checkpoints import full_disk_stop

            stop = full_disk_stop(self.cfg.run_id(), self.run_dir)
        return stop

    def refusal(self) -> str | None:
        """Why the child was refused, as it said in one line (None: it was not)."""
        _, new = follow(self.job_events, self.refusals)
        said = [ev for ev in new if ev.get("event") == REFUSED]
        return str(said[-1]["error"]) if said else None


@dataclass
class Pool:
    """The children running now and what they may use."""

    out: Path
    threads: int | None  # per child (None: as $OMP_NUM_THREADS says)
    hostfile: Path | None
    free_devices: list[str]
    running: list[Job]

    def start(self, job: Job) -> None:
        """Start `job`'s child, logging to <run>/job.log; on the next free GPU if there is one."""
        from protobench.io import atomic_write_json

        job.run_dir.mkdir(parents=True, exist_ok=True)
        cfg_file = job.run_dir / "job-config.json"
        atomic_write_json(cfg_file, job.cfg.to_dict())
        events = job.run_dir / EVENTS_NAME
        job.offset = job.started_at = events.stat().st_size if events.exists() else 0
        job.refusals = job.job_events.stat().st_size if job.job_events.exists() else 0
        cmd = [sys.executable, "-m", "protobench.worker", "--config-json", str(cfg_file), "--out", str(self.out),
               "--events", str(job.job_events)]
        env = dict(os.environ)
        if self.threads is not None:
            cmd += ["--threads", str(self.threads)]
            env[THREADS_ENV] = str(self.threads)
        if self.hostfile is not None:
            cmd += ["--hostfile", str(self.hostfile)]
        if self.free_devices and job.cfg.gpus <= 1:  # a DeepSpeed run (--gpus N) takes the GPUs its launcher picks
            job.device = self.free_devices.pop(0)
            cmd += ["--device", job.device]
        job.log = open(job.run_dir / "job.log", "ab")  # noqa: SIM115 - closed when the job ends
        # its own process group: the parent forwards Ctrl-C itself, once
        job.proc = subprocess.Popen(cmd, stdout=job.log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        job.stage = "starting"
        self.running.append(job)

    def poll(self, job: Job) -> int | None:
        """Read `job`'s new events; its exit code once it has exited (its GPU is free again), else None."""
        job.offset, new = follow(job.run_dir / EVENTS_NAME, job.offset)
        for ev in new:
            if "images_seen" in ev:
                job.images_seen = int(ev["images_seen"])
            job.stage = stage_of(ev) or job.stage
        rc = job.proc.poll()
        if rc is None:
            return None
        job.log.close()
        if job.device is not None:
            self.free_devices.append(job.device)
        self.running.remove(job)
        return rc

    def interrupt(self) -> None:
        """Ctrl-C: each child checkpoints on SIGINT and exits (killed after a minute)."""
        for job in self.running:
            if job.proc.poll() is None:
                job.proc.send_signal(signal.SIGINT)
        deadline = time.monotonic() + 60
        for job in self.running:
            try:
                job.proc.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                job.proc.kill()
            job.log.close()


def run_pool(jobs: list[Job], out: Path, processes: int, threads: int | None,
             on_done: Callable[[Job, int], None], show: bool = True, console=None,
             hostfile: Path | None = None) -> None:
    """Run `jobs` in up to `processes` children; `on_done(job, exit code)` as each one exits."""
    from rich.markup import escape

    from protobench.progress import make_progress

    progress = make_progress("images", show=show, console=console)  # the standard columns: rate, elapsed, ETA
    pending = list(jobs)
    pool = Pool(Path(out), cpu_threads(threads), hostfile, [str(i) for i in range(gpu_count())], [])
    finished = done_images = 0
    stopped = None
    with progress:
        overall = progress.add_task(f"sweep 0/{len(jobs)} done", total=sum(j.cfg.budget for j in jobs))
        rows: dict[int, Any] = {}
        try:
            while pending or pool.running:
                while pending and len(pool.running) < processes:
                    job = pending.pop(0)
                    pool.start(job)
                    rows[id(job)] = progress.add_task(escape(job.label), total=job.cfg.budget)
                for job in list(pool.running):
                    rc = pool.poll(job)
                    progress.update(rows[id(job)], completed=job.images_seen,
                                    description=f"{escape(job.label)} · {escape(job.stage)}")
                    if rc is None:
                        continue
                    progress.remove_task(rows.pop(id(job)))
                    stopped = job.stopped(rc)
                    if stopped is not None:  # it stopped resumably by itself (a full disk, --stop-after, SIGTERM)
                        break
                    finished += 1
                    done_images += job.cfg.budget
                    on_done(job, rc)
                if stopped is not None:
                    break
                progress.update(overall, completed=done_images + sum(j.images_seen for j in pool.running),
                                description=f"sweep {finished}/{len(jobs)} done, {len(pool.running)} running")
                time.sleep(0.3)
        except KeyboardInterrupt as exc:
            stopping = list(pool.running)
            pool.interrupt()
            stopped = stopping[0].interrupted() if len(stopping) == 1 else None
            if stopped is not None:  # one run was going: say what it kept, as `protobench run` does
                raise stopped from exc
            raise
        except BaseException:  # the parent itself failed (say, a full disk writing the manifest): no orphans
            pool.interrupt()
            raise
    if stopped is not None:  # so does the sweep, as on Ctrl-C: the others checkpoint, and all resume next time
        pool.interrupt()
        raise stopped
