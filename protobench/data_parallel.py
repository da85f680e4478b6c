"""Data-parallel runs under DeepSpeed: its config, the engine inside each rank, and the launcher that starts them.

`protobench run --gpus N` resolves the config in the parent process, writes it to the run folder and starts
the DeepSpeed launcher (`deepspeed --num_gpus N`; with `--hostfile`, the hostfile's slots) on the worker
(`protobench.worker`). Each rank runs the run, which calls `initialize_engine` to wrap the model in a DeepSpeed
engine. On a machine without accelerators DeepSpeed's CPU accelerator runs the same path with gloo. The ranks
print no progress bars and log to `<run>/launcher.log`; the parent shows one bar, following events.jsonl, and
returns the record read from the run folder once the launcher exits.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from protobench.device import has_cuda
from protobench.errors import ExitCode, UsageError

#: what a rank needs to join its process group
REQUIRED_ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
#: the module each launched rank runs
WORKER = "protobench.worker"

# ---------------------------------------------------------------------------------------------
# inside each rank


def deepspeed_config(cfg, world: int, on_gpu: bool) -> dict[str, Any]:
    """The DeepSpeed config for a RunConfig: the global batch kept, split evenly over `world` processes."""
    config: dict[str, Any] = {
        "train_batch_size": cfg.batch_size,
        "train_micro_batch_size_per_gpu": cfg.batch_size // world,
        "gradient_accumulation_steps": 1,
        "gradient_clipping": float(cfg.grad_clip),  # explicit: DeepSpeed's own default would be 1.0
        "zero_optimization": {"stage": int(cfg.zero_stage)},
        "steps_per_print": 2**31 - 1,
        "wall_clock_breakdown": False,
    }
    if on_gpu and cfg.precision == "bf16":
        config["bf16"] = {"enabled": True}
    elif on_gpu and cfg.precision == "fp16":
        config["fp16"] = {"enabled": True}
    return config


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def quiet_deepspeed() -> None:
    """DeepSpeed's accelerator chosen before it loads, and its logger kept to warnings."""
    import logging

    os.environ.setdefault("DS_ACCELERATOR", "cpu" if not has_cuda() else "cuda")
    try:
        from deepspeed.utils import logger

        logger.setLevel(logging.WARNING)
    except ImportError:
        pass


def skip_inference_shm_op() -> None:
    """On a CPU, DeepSpeed's comm backend compiles its shared-memory all-reduce (C++, about a minute on a new
    install) as it starts. Only `inference_all_reduce` uses that op, never training, which all-reduces through
    the process group (gloo): so it is not built."""
    from deepspeed.accelerator import get_accelerator

    if get_accelerator().device_name() != "cpu":
        return
    import importlib

    ds_comm = importlib.import_module("deepspeed.comm.torch")  # `import ... as` would give deepspeed.comm's `torch`
    if hasattr(ds_comm, "build_shm_op"):
        ds_comm.build_shm_op = lambda: None


def init_process_group() -> None:
    """Join the launched ranks' process group, on the accelerator's backend."""
    import deepspeed
    from deepspeed.accelerator import get_accelerator

    skip_inference_shm_op()
    deepspeed.init_distributed(dist_backend=get_accelerator().communication_backend_name(), verbose=False)


def initialize_engine(model, optimizer, cfg, dist):
    """Wrap `model` and its torch `optimizer` in a DeepSpeed engine (rank 0's weights broadcast to all)."""
    # DeepSpeed prints (and logs) to stdout as it loads: a one-process run's stdout is its --json record
    with contextlib.redirect_stdout(sys.stderr):
        return _initialize_engine(model, optimizer, cfg, dist)


def _initialize_engine(model, optimizer, cfg, dist):
    import deepspeed
    import torch
    import torch.distributed as tdist

    skip_inference_shm_op()  # deepspeed.initialize starts DeepSpeed's comm backend even in a joined group

    if not tdist.is_initialized():
        if dist.world == 1:  # one process (ZeRO on one GPU): its own one-member process group, no launcher
            for key, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1"),
                               ("MASTER_ADDR", "127.0.0.1"), ("MASTER_PORT", str(free_port()))):
                os.environ.setdefault(key, value)
        missing = [k for k in REQUIRED_ENV if k not in os.environ]
        if missing:
            raise UsageError(f"a {dist.world}-process run needs {', '.join(missing)} set (use `protobench run --gpus N`)")
        init_process_group()
    on_gpu = next(model.parameters()).device.type == "cuda" and torch.cuda.is_available()
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer,
                                           config=deepspeed_config(cfg, dist.world, on_gpu),
                                           dist_init_required=False)
    return engine


# ---------------------------------------------------------------------------------------------
# the parent: start the launcher, follow the run, return its record


def launcher_command(cfg_file: Path, out: Path, processes: int, hostfile: Path | None, port: int) -> list[str]:
    """DeepSpeed's launcher on the worker; `torchrun` if DeepSpeed is missing (single machine only). Both run
    under this interpreter, so the ranks do too (a `deepspeed` on PATH may belong to another Python)."""
    tail = ["--config-json", str(cfg_file), "--out", str(out), "--deepspeed"]
    if importlib.util.find_spec("deepspeed") is not None:
        cmd = [sys.executable, "-m", "deepspeed.launcher.runner", "--master_port", str(port), "--no_local_rank",
               "--module"]
        if hostfile is not None:
            cmd += ["--hostfile", str(hostfile)]
        else:
            cmd += ["--num_gpus", str(processes)]
        return cmd + [WORKER, *tail]
    if hostfile is not None:
        raise UsageError("--hostfile needs DeepSpeed, which this Python does not have")
    return [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={processes}",
            f"--master_port={port}", "-m", WORKER, *tail]


def _launch_env(processes: int) -> dict[str, str]:
    env = dict(os.environ)
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    if not has_cuda():
        env.setdefault("DS_ACCELERATOR", "cpu")
        # N processes sharing the cores: without this each would start a thread per core
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // processes)))
    return env


def _log_tail(log: Path, lines: int = 15) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def launch(cfg, out: Path, show_progress: bool = True, hostfile: Path | None = None) -> dict[str, Any]:
    """Run `cfg` on cfg.gpus processes under the DeepSpeed launcher; the run's record once it exits."""
    from protobench.io import atomic_write_json
    from protobench.runfolder import RunFolder

    out = Path(out)
    if hostfile is not None and not Path(hostfile).is_file():
        raise UsageError(f"hostfile not found: {hostfile}")
    folder = RunFolder(out, cfg.run_id())
    run_dir = folder.path
    if (prior := folder.completed(strict=True)) is not None:
        return prior
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg_file = run_dir / "launch-config.json"
    atomic_write_json(cfg_file, cfg.to_dict())
    log = run_dir / "launcher.log"
    cmd = launcher_command(cfg_file.resolve(), out.resolve(), cfg.gpus, hostfile, free_port())
    rc = _run_launcher(cmd, cfg, run_dir, log, show_progress)
    if not folder.started():
        raise RuntimeError(f"the launcher exited with code {rc} before the run started; "
                           f"last lines of {log}:\n{_log_tail(log)}")
    return _launched_record(cfg, run_dir, log, rc)


def _run_launcher(cmd: list[str], cfg, run_dir: Path, log: Path, show_progress: bool) -> int:
    """Start the launcher and show its ranks' progress until it exits; its exit code. Ctrl-C stops it."""
    from protobench.events import EVENTS_NAME, follow
    from protobench.progress import stage

    events = run_dir / EVENTS_NAME
    offset = events.stat().st_size if events.exists() else 0
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
                if rc is not None:
                    return rc
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


def _launched_record(cfg, run_dir: Path, log: Path, rc: int) -> dict[str, Any]:
    """The record of a run the launcher has left: Interrupted if its ranks stopped resumably, failed if they died."""
    from protobench.events import FAILED, interruption, make_event
    from protobench.locks import run_lock
    from protobench.runfolder import RunFolder

    folder = RunFolder.at(run_dir)
    with run_lock(run_dir, wait=True, timeout=120):  # rank 0 may still be checkpointing after a signal
        record = folder.record()
    stop = interruption(folder.events(), cfg.run_id(), run_dir) if rc != ExitCode.OK else None
    if stop is not None:  # SIGTERM reached the ranks, or a full disk: resumable
        raise stop
    if rc != ExitCode.OK and record["status"] != "failed":
        folder.append(make_event(FAILED, error=f"launcher exited with code {rc}; see {log}", log_tail=_log_tail(log)))
        record = folder.record()
    return record
