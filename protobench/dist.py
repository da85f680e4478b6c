"""Which process this is and where it computes: the rank, the device, and gathering results across ranks.

What runs inside each process of a data-parallel run; `protobench.distributed` starts those processes.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from protobench.errors import UsageError

REQUIRED_ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def current_dist() -> Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    return Dist(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))


def pick_device(dist: Dist) -> torch.device:
    if os.environ.get("PROTOBENCH_DEVICE"):
        return torch.device(os.environ["PROTOBENCH_DEVICE"])
    if torch.cuda.is_available():
        return torch.device("cuda", dist.local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def device_info(device: torch.device, count: int) -> dict[str, Any]:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = platform.processor() or platform.machine() or "cpu"
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
        except OSError:
            pass
    return {"type": device.type, "name": name, "count": count}


def gather_to_main(tensor: Tensor, dist: Dist) -> Tensor:
    """Concatenate equally shaped shards from every rank (in rank order) on every rank."""
    if dist.world == 1:
        return tensor
    import torch.distributed as tdist

    parts = [torch.empty_like(tensor) for _ in range(dist.world)]
    tdist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)


# ---------------------------------------------------------------------------------------------
# DeepSpeed, inside each process


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


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def initialize_engine(model, optimizer, cfg, dist):
    """Wrap `model` and its torch `optimizer` in a DeepSpeed engine (rank 0's weights broadcast to all)."""
    import contextlib
    import sys

    # DeepSpeed prints (and logs) to stdout as it loads: a one-process run's stdout is its --json record
    with contextlib.redirect_stdout(sys.stderr):
        return _initialize_engine(model, optimizer, cfg, dist)


def _initialize_engine(model, optimizer, cfg, dist):
    import deepspeed
    import torch
    import torch.distributed as tdist
    from deepspeed.accelerator import get_accelerator

    if not tdist.is_initialized():
        if dist.world == 1:  # one process (ZeRO on one GPU): its own one-member process group, no launcher
            for key, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1"),
                               ("MASTER_ADDR", "127.0.0.1"), ("MASTER_PORT", str(_free_port()))):
                os.environ.setdefault(key, value)
        missing = [k for k in REQUIRED_ENV if k not in os.environ]
        if missing:
            raise UsageError(f"a {dist.world}-process run needs {', '.join(missing)} set (use `protobench run --gpus N`)")
        deepspeed.init_distributed(dist_backend=get_accelerator().communication_backend_name(), verbose=False)
    on_gpu = next(model.parameters()).device.type == "cuda" and torch.cuda.is_available()
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer,
                                           config=deepspeed_config(cfg, dist.world, on_gpu),
                                           dist_init_required=False)
    return engine


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
