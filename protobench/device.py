"""Where a run computes: its device, the machine's GPUs and cores, and how many threads a CPU run uses.

On a few shared cores, OpenMP threads that compete with another job stall (measured on 2 cores: two threads
3.3× slower than one beside a single other job), while one-thread processes side by side add up (two did
1.41× the images/s of one two-thread run). So a CPU run uses one thread unless told otherwise, and
`protobench sweep --jobs N` runs N combinations at once. Nothing here imports torch before it is needed.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

THREADS_ENV = "OMP_NUM_THREADS"


def cpuinfo(path: str | Path = "/proc/cpuinfo") -> list[dict[str, str]]:
    """/proc/cpuinfo as one {field: value} per logical CPU (empty where there is none)."""
    cpus: list[dict[str, str]] = [{}]
    try:
        with open(path) as fh:
            for line in fh:
                if not line.strip():
                    cpus.append({})
                elif ":" in line:
                    key, value = line.split(":", 1)
                    cpus[-1][key.strip()] = value.strip()
    except OSError:
        return []
    return [cpu for cpu in cpus if cpu]


def pick_device(dist) -> Any:
    """The torch device of this rank: $PROTOBENCH_DEVICE, else its GPU, else the CPU."""
    import torch

    if os.environ.get("PROTOBENCH_DEVICE"):
        return torch.device(os.environ["PROTOBENCH_DEVICE"])
    if torch.cuda.is_available():
        return torch.device("cuda", dist.local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def device_info(device, count: int) -> dict[str, Any]:
    """What a record says about the device: its type, its model name, how many are in use."""
    if device.type == "cuda":
        import torch

        name = torch.cuda.get_device_name(device)
    else:
        models = [cpu["model name"] for cpu in cpuinfo() if "model name" in cpu]
        name = models[0] if models else platform.processor() or platform.machine() or "cpu"
    return {"type": device.type, "name": name, "count": count}


def has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def physical_cores(cpus: list[dict[str, str]] | None = None, allowed: int | None = None) -> int:
    """Cores this process may run on, counting each physical core once (hyper-threads share one); `cpus` as
    `cpuinfo()` gives them and `allowed` the logical CPUs it may use (both read when not given)."""
    if allowed is None:
        try:
            allowed = len(os.sched_getaffinity(0))
        except AttributeError:  # not Linux
            allowed = os.cpu_count() or 1
    cores = {(cpu.get("physical id", ""), cpu["core id"]) for cpu in (cpuinfo() if cpus is None else cpus)
             if "core id" in cpu}
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
