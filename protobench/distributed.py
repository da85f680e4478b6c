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
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from protobench.errors import UsageError

# ---------------------------------------------------------------------------------------------
# inside each process


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
    from protobench.engine import Run
    from protobench.plugins import get_registry

    cfg = RunConfig.from_dict(json.loads(args.config_json.read_text()))
    deepspeed.init_distributed(dist_backend=get_accelerator().communication_backend_name(), verbose=False)
    record = Run(cfg, get_registry(), args.out, show_progress=False).execute()
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
    """`deepspeed` on this module; `torchrun` if the deepspeed launcher is missing (single machine only)."""
    tail = ["--config-json", str(cfg_file), "--out", str(out)]
    deepspeed = shutil.which("deepspeed")
    if deepspeed:
        cmd = [deepspeed, "--master_port", str(port), "--no_local_rank", "--module"]
        if hostfile is not None:
            cmd += ["--hostfile", str(hostfile)]
        else:
            cmd += ["--num_gpus", str(processes)]
        return cmd + ["protobench.distributed", *tail]
    if hostfile is not None:
        raise UsageError("--hostfile needs the deepspeed launcher, which is not on PATH")
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


def _follow(events: Path, offset: int) -> tuple[int, list[dict[str, Any]]]:
    """New complete lines of events.jsonl since `offset`."""
    if not events.exists():
        return offset, []
    with open(events, "rb") as fh:
        fh.seek(offset)
        data = fh.read()
    end = data.rfind(b"\n") + 1
    out = []
    for line in data[:end].splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return offset + end, out


def _log_tail(log: Path, lines: int = 15) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def launch(cfg, out: Path, show_progress: bool = True, hostfile: Path | None = None,
           progress: Callable[[int, int, float], None] | None = None) -> dict[str, Any]:
    """Run `cfg` on cfg.gpus processes under the DeepSpeed launcher; the run's record once it exits."""
    from protobench.io import append_event, atomic_write_json
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
    bar = None
    if show_progress:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("images"),
                       TimeElapsedColumn(), console=Console(stderr=True), transient=True)
        task = bar.add_task(f"{cfg.conditioner} s{cfg.seed} ×{cfg.gpus} processes", total=cfg.budget)
        bar.start()
    with open(log, "ab") as log_fh:
        log_fh.write(("$ " + " ".join(cmd) + "\n").encode())
        log_fh.flush()
        proc = subprocess.Popen(cmd, stdout=log_fh, stderr=subprocess.STDOUT, env=_launch_env(cfg.gpus),
                                start_new_session=True)
        try:
            while True:
                rc = proc.poll()
                offset, new = _follow(events, offset)
                for ev in new:
                    if ev.get("event") == "loss":
                        if bar is not None:
                            bar.update(task, completed=ev["images_seen"],
                                       description=f"{cfg.conditioner} s{cfg.seed} ×{cfg.gpus} loss {ev['mse']:.4f}")
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
            if bar is not None:
                bar.stop()
    if not (run_dir / "config.json").exists():
        raise RuntimeError(f"the launcher exited with code {rc} before the run started; "
                           f"last lines of {log}:\n{_log_tail(log)}")
    record = load_record(run_dir)
    if rc != 0 and record["status"] != "failed":
        append_event(events, {"event": "failed", "time": time.time(),
                              "error": f"launcher exited with code {rc}; see {log}", "log_tail": _log_tail(log)})
        record = load_record(run_dir)
    return record


# ---------------------------------------------------------------------------------------------
# ZeRO-1/2 (and DeepSpeed's bf16/fp16 optimizers): one consolidated safetensors checkpoint, nothing pickled

ADAM_STATE = ("exp_avg", "exp_avg_sq")


def _trainable(engine) -> list:
    return [p for p in engine.module.parameters() if p.requires_grad]


def _json_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str)) or (
        isinstance(value, (list, tuple)) and all(isinstance(v, (int, float)) for v in value))


def consolidated_optimizer_state(engine) -> tuple[dict[str, Any], dict[str, Any]]:
    """The whole optimizer state of a DeepSpeed engine that shards (ZeRO-1/2) or wraps (bf16/fp16) its
    optimizer, gathered from every rank: per trainable parameter i (in `module.parameters()` order) its fp32
    master weights `optim.<i>.master` and Adam moments `optim.<i>.exp_avg`, `optim.<i>.exp_avg_sq`, on the
    CPU, plus JSON metadata (step count, hyper-parameters, loss scale). A collective: every rank calls it;
    rank 0 writes the tensors with safetensors. Independent of the number of processes that saved it."""
    from deepspeed.utils import safe_get_full_fp32_param, safe_get_full_optimizer_state

    tensors: dict[str, Any] = {}
    for i, p in enumerate(_trainable(engine)):
        master = safe_get_full_fp32_param(p)
        if master is None:
            raise UsageError("this DeepSpeed optimizer keeps no per-parameter fp32 state to gather "
                             "(fp16 without ZeRO): use zero_stage=1 or 2 with fp16")
        tensors[f"optim.{i}.master"] = master.detach().float().cpu()
        for key in ADAM_STATE:
            tensors[f"optim.{i}.{key}"] = safe_get_full_optimizer_state(p, key).detach().float().cpu()
    inner = engine.optimizer.optimizer  # the torch AdamW over this rank's flat fp32 partitions
    steps = [float(s["step"]) for s in inner.state.values() if "step" in s]
    meta: dict[str, Any] = {
        "consolidated": "deepspeed", "step": max(steps, default=0.0),
        "param_groups": [{k: v for k, v in g.items() if k != "params" and _json_scalar(v)} for g in inner.param_groups],
    }
    scaler = getattr(engine.optimizer, "loss_scaler", None)
    if scaler is not None and hasattr(scaler, "cur_scale"):
        meta["loss_scale"] = float(scaler.cur_scale)
    return tensors, meta


def _ensure_optimizer_state(engine) -> None:
    """A fresh engine's AdamW has no state until its first step, and DeepSpeed links each parameter to its
    slice of that state only then: create the (zero) state as AdamW would, and let DeepSpeed link it."""
    import torch

    inner = engine.optimizer.optimizer
    if inner.state or not hasattr(engine.optimizer, "_lazy_init_hp_params_optimizer_state"):
        return
    for group in inner.param_groups:
        on_device = group.get("fused") or group.get("capturable")
        for flat in group["params"]:
            inner.state[flat] = {"step": torch.zeros((), dtype=torch.float32, device=flat.device if on_device else "cpu"),
                                 "exp_avg": torch.zeros_like(flat), "exp_avg_sq": torch.zeros_like(flat)}
    engine.optimizer._hp_optimizer_states_linked = False
    engine.optimizer._lazy_init_hp_params_optimizer_state()


def load_consolidated_optimizer_state(engine, tensors: dict[str, Any], meta: dict[str, Any]) -> None:
    """Restore what `consolidated_optimizer_state` saved, into an engine with any number of processes: each
    rank takes its shard of the master weights and moments; the module's own (possibly bf16) weights are
    set from the fp32 masters."""
    import torch
    from deepspeed.utils import safe_set_full_fp32_param, safe_set_full_optimizer_state

    _ensure_optimizer_state(engine)
    params = _trainable(engine)
    if f"optim.{len(params) - 1}.master" not in tensors or f"optim.{len(params)}.master" in tensors:
        raise UsageError("this checkpoint's optimizer state was saved for a different model")
    for i, p in enumerate(params):
        master = tensors[f"optim.{i}.master"].to(p.device)
        safe_set_full_fp32_param(p, master)
        for key in ADAM_STATE:
            safe_set_full_optimizer_state(p, tensors[f"optim.{i}.{key}"].to(p.device), key)
        with torch.no_grad():
            p.data.copy_(master.view_as(p.data))
    inner = engine.optimizer.optimizer
    for state in inner.state.values():
        if "step" in state:
            step = state["step"]
            state["step"] = torch.full_like(step, meta["step"]) if torch.is_tensor(step) else type(step)(meta["step"])
    for group, saved in zip(inner.param_groups, meta["param_groups"], strict=True):
        group.update({k: (tuple(v) if isinstance(group.get(k), tuple) else v) for k, v in saved.items()})
    if "loss_scale" in meta:
        engine.optimizer.loss_scaler.cur_scale = meta["loss_scale"]


if __name__ == "__main__":
    sys.exit(worker())
