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
