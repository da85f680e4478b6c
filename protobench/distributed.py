"""Data-parallel runs under DeepSpeed.

`protobench run --gpus N` resolves the config in the parent process, writes it to the run folder and starts
the DeepSpeed launcher (`deepspeed --num_gpus N`; with `--hostfile`, the hostfile's slots) on this module.
Each child process runs `engine.Run`, which calls `dist.initialize_engine` to wrap the model in a DeepSpeed engine.
On a machine without accelerators DeepSpeed's CPU accelerator runs the same path with gloo. The children
print no progress bars and log to `<run>/launcher.log`; the parent shows one bar, following events.jsonl,
and returns the record read from the run folder once the launcher exits.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from protobench.errors import Interrupted, UsageError
from protobench.jobs import follow

# ---------------------------------------------------------------------------------------------
# inside each process

#: a rank's exit code when the run stopped on request with a checkpoint (as Ctrl-C's)
STOPPED = 130


def _quiet_deepspeed() -> None:
    import logging

    os.environ.setdefault("DS_ACCELERATOR", "cpu" if not _has_cuda() else "cuda")
    try:
        from deepspeed.utils import logger

        logger.setLevel(logging.WARNING)
    except ImportError:
        pass


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def worker(argv: list[str] | None = None) -> int:
    """What each launched process runs: one rank of the run described by --config-json."""
    parser = argparse.ArgumentParser(prog="protobench.distributed")
    parser.add_argument("--config-json", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--local_rank", type=int, default=None)  # in case a launcher passes it
    args = parser.parse_args(argv)
    _quiet_deepspeed()
    import deepspeed
    import torch.distributed as tdist
    from deepspeed.accelerator import get_accelerator

    from protobench.config import RunConfig
    from protobench.plugins import get_registry
    from protobench.training.run import Run

    cfg = RunConfig.from_dict(json.loads(args.config_json.read_text()))
    deepspeed.init_distributed(dist_backend=get_accelerator().communication_backend_name(), verbose=False)
    try:
        record = Run(cfg, get_registry(), args.out, show_progress=False).execute()
    except Interrupted:  # every rank agreed to stop (--stop-after) and rank 0 recorded it: resumable
        tdist.destroy_process_group()
        return STOPPED
    tdist.barrier()  # rank 0 writes the record; nobody leaves before it has
    tdist.destroy_process_group()
    return 0 if record["status"] == "completed" else 1


# ---------------------------------------------------------------------------------------------
# the parent: start the launcher, follow the run, return its record


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launcher_command(cfg_file: Path, out: Path, processes: int, hostfile: Path | None, port: int) -> list[str]:
    """DeepSpeed's launcher on this module; `torchrun` if DeepSpeed is missing (single machine only). Both run
    under this interpreter, so the ranks do too (a `deepspeed` on PATH may belong to another Python)."""
    tail = ["--config-json", str(cfg_file), "--out", str(out)]
    if importlib.util.find_spec("deepspeed") is not None:
        cmd = [sys.executable, "-m", "deepspeed.launcher.runner", "--master_port", str(port), "--no_local_rank",
               "--module"]
        if hostfile is not None:
            cmd += ["--hostfile", str(hostfile)]
        else:
            cmd += ["--num_gpus", str(processes)]
        return cmd + ["protobench.distributed", *tail]
    if hostfile is not None:
        raise UsageError("--hostfile needs DeepSpeed, which this Python does not have")
    return [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={processes}",
            f"--master_port={port}", "-m", "protobench.distributed", *tail]


def _launch_env(processes: int) -> dict[str, str]:
    env = dict(os.environ)
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    if not _has_cuda():
        env.setdefault("DS_ACCELERATOR", "cpu")
        # N processes sharing the cores: without this each would start a thread per core
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // processes)))
    return env


def _log_tail(log: Path, lines: int = 15) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def launch(cfg, out: Path, show_progress: bool = True, hostfile: Path | None = None,
           progress: Callable[[int, int, float], None] | None = None) -> dict[str, Any]:
    """Run `cfg` on cfg.gpus processes under the DeepSpeed launcher; the run's record once it exits."""
    from protobench.io import append_event, atomic_write_json, read_events
    from protobench.records import load_record

    out = Path(out)
    if hostfile is not None and not Path(hostfile).is_file():
        raise UsageError(f"hostfile not found: {hostfile}")
    run_dir = out / "runs" / cfg.run_id()
    if (run_dir / "config.json").exists():
        prior = load_record(run_dir)
        if prior["status"] == "completed":
            return prior
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg_file = run_dir / "launch-config.json"
    atomic_write_json(cfg_file, cfg.to_dict())
    log = run_dir / "launcher.log"
    events = run_dir / "events.jsonl"
    offset = events.stat().st_size if events.exists() else 0
    cmd = launcher_command(cfg_file.resolve(), out.resolve(), cfg.gpus, hostfile, free_port())
    from protobench.progress import stage

    display = stage(f"{cfg.conditioner} s{cfg.seed} ×{cfg.gpus} processes", total=cfg.budget, unit="images",
                    show=show_progress)
    bar = display.__enter__()
    with open(log, "ab") as log_fh:
        log_fh.write(("$ " + " ".join(cmd) + "\n").encode())
        log_fh.flush()
        proc = subprocess.Popen(cmd, stdout=log_fh, stderr=subprocess.STDOUT, env=_launch_env(cfg.gpus),
                                start_new_session=True)
        try:
            while True:
                rc = proc.poll()
                offset, new = follow(events, offset)
                for ev in new:
                    if ev.get("event") == "loss":
                        bar.update(completed=ev["images_seen"], note=f"loss {ev['mse']:.4f}")
                        if progress is not None:
                            progress(ev["images_seen"], cfg.budget, ev["mse"])
                if rc is not None:
                    break
                time.sleep(0.5)
        except BaseException:  # Ctrl-C: stop the launcher and its children; the run resumes next time
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
            raise
        finally:
            display.__exit__(None, None, None)
    if not (run_dir / "config.json").exists():
        raise RuntimeError(f"the launcher exited with code {rc} before the run started; "
                           f"last lines of {log}:\n{_log_tail(log)}")
    from protobench.locks import run_lock

    with run_lock(run_dir, wait=True, timeout=120):  # rank 0 may still be checkpointing after a signal
        record = load_record(run_dir)
    stops = [e for e in read_events(events) if e.get("event") in ("interrupted", "resume", "start", "end", "failed")]
    if rc != 0 and stops and stops[-1]["event"] == "interrupted":  # SIGTERM reached the ranks: resumable
        raise Interrupted(cfg.run_id(), int(stops[-1].get("images_seen") or 0), stops[-1].get("checkpoint"))
    if rc != 0 and record["status"] != "failed":
        append_event(events, {"event": "failed", "time": time.time(),
                              "error": f"launcher exited with code {rc}; see {log}", "log_tail": _log_tail(log)})
        record = load_record(run_dir)
    return record


if __name__ == "__main__":
    sys.exit(worker())
