"""The compiled training step and sampler (`-o compile=auto|on|off`), and the clock of what compiling costs.

`auto` compiles on a GPU and stays eager on a CPU (where compiling the U-Net gave nothing here: its step is
already bound by the arithmetic, not by kernel launches). `on` compiles wherever the run is:

- on CUDA, `torch.compile(mode="reduce-overhead")`: inductor's fused kernels (GroupNorm + SiLU, the MSE, the
  residual adds) replayed as CUDA graphs, since the default batch is static; weights go channels-last, what
  tensor-core convolutions want (the U-Net already keeps its activations channels-last there). bf16 follows
  the `precision` option, as in the eager step.
- on a CPU, plain inductor (`mode="default"`).

`$PROTOBENCH_COMPILE_MODE` picks another torch.compile mode (e.g. `max-autotune-no-cudagraphs`) for a benchmark.

Compiling is never hidden: the calls during which it happens are charged to the run's `compile` device-seconds,
a ledger phase of its own, moved out of `train` or `eval` where they were measured. Those are the calls that
compiled a graph (dynamo's graph counter moved) and the first WARM_CALLS calls of each input shape (the
compile itself, then CUDA graphs' warm-up and capture); each includes its one step's or one sampler call's
work, a few steps of thousands. A run that resumes compiles again, and is charged again.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from protobench.interfaces import ConditionedNet

CHOICES = ("auto", "on", "off")
#: calls of each input shape charged to `compile`: the compiling call, CUDA graphs' warm-up and capture
WARM_CALLS = 3


def enabled(choice: str, device: torch.device) -> bool:
    """Whether `compile=<choice>` compiles on `device`: auto compiles on a GPU only."""
    if choice not in CHOICES:
        raise ValueError(f"compile must be one of {', '.join(CHOICES)}, got {choice!r}")
    return choice == "on" or (choice == "auto" and torch.device(device).type == "cuda")


def mode_for(device: torch.device) -> str:
    """torch.compile's mode: CUDA graphs on a GPU (static shapes), plain inductor on a CPU."""
    return os.environ.get("PROTOBENCH_COMPILE_MODE") or ("reduce-overhead" if torch.device(device).type == "cuda"
                                                          else "default")


def _graphs_compiled() -> int:
    """Graphs dynamo has compiled in this process so far (it moves when a call compiles or recompiles)."""
    try:
        from torch._dynamo.utils import counters

        return int(counters["stats"]["unique_graphs"])
    except Exception:  # a torch without the counter: WARM_CALLS alone decides
        return 0


class CompileClock:
    """Seconds spent in calls that compiled, measured per call, to be moved into the `compile` phase."""

    def __init__(self, device: torch.device):
        self.device = torch.device(device)
        self.seconds = 0.0
        self._calls: dict[Any, int] = {}

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @contextmanager
    def call(self, shape: Any = None):
        """Time one call: charged to compile if it compiled a graph or is among its shape's first WARM_CALLS."""
        seen = self._calls.get(shape, 0)
        self._calls[shape] = seen + 1
        warming = seen < WARM_CALLS
        if warming:
            self._sync()
        graphs, start = _graphs_compiled(), time.perf_counter()
        yield
        if warming or _graphs_compiled() != graphs:
            self._sync()
            self.seconds += time.perf_counter() - start

    def take(self) -> float:
        """The seconds charged since the last take (and zero them)."""
        seconds, self.seconds = self.seconds, 0.0
        return seconds


def move_to_compile(ledger, clock: CompileClock | None, phase: str) -> None:
    """Move the compiling calls' device-seconds, measured inside `phase`, to the ledger's `compile` phase."""
    if clock is None:
        return
    seconds = clock.take() * ledger.devices
    if seconds:
        ledger.add(phase, -seconds)
        ledger.add("compile", seconds)


def compile_model(model: nn.Module, device: torch.device, *alike: nn.Module) -> CompileClock:
    """Compile `model`'s forward in place (its backward is compiled with it; state_dict keys unchanged).
    On CUDA, `model` and the modules `alike` (its EMA) get channels-last weights."""
    device = torch.device(device)
    if device.type == "cuda":
        for m in (model, *alike):  # 4-d conv weights only; other tensors are left as they are
            m.to(memory_format=torch.channels_last)
    model.compile(mode=mode_for(device), dynamic=False)
    return CompileClock(device)


class CompiledNet(ConditionedNet):
    """`net(x_t, t, labels) -> ε` compiled for sampling (no gradients): the same function, fused.

    Guidances that take gradients through the net (feature guidance) get the eager net: the compiled graph is
    an inference one."""

    def __init__(self, net: ConditionedNet, device: torch.device):
        super().__init__(net.conditioner, net.denoiser, net.num_classes)
        self.eager = net
        self.clock = CompileClock(device)
        self.graphs = torch.device(device).type == "cuda" and mode_for(device) in ("reduce-overhead", "max-autotune")

        def eps(x_t: Tensor, t: Tensor, labels: Tensor) -> Tensor:
            return net.denoiser(x_t, t, net.conditioner(labels))

        self._eps: Callable[..., Tensor] = torch.compile(eps, mode=mode_for(device), dynamic=False)

    def __call__(self, x_t: Tensor, t: Tensor, labels: Tensor) -> Tensor:
        if torch.is_grad_enabled():
            return self.eager(x_t, t, labels)
        with self.clock.call(tuple(x_t.shape)):
            out = self._eps(x_t, t, labels)
        # a CUDA graph's output is overwritten by its next replay: the sampler keeps its own copy
        return out.clone() if self.graphs else out
