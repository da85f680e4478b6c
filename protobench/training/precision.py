"""Mixed precision for a training step: bf16 or fp16 autocast, and for fp16 a gradient scaler.

One object per run, whatever the device:

    precision = Precision(cfg.precision, device)
    with precision.autocast():
        loss = model(...)
    precision.backward(loss)
    precision.step(optimizer, params, max_norm=cfg.grad_clip)   # unscales before clipping (fp16)

Weights, gradients and optimizer state stay fp32 (autocast runs the matmuls and convolutions in the low
precision). fp16's scaler multiplies the loss so small gradients survive fp16 and skips a step whose
gradients overflowed (Micikevicius et al. 2018); its state goes into checkpoints with `state_dict()`,
plain numbers that JSON holds.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class Precision:
    """`deepspeed`: DeepSpeed's engine steps (its config sets bf16/fp16 on a GPU only), so autocast runs on CUDA
    alone and a CPU computes in fp32."""

    def __init__(self, precision: str = "fp32", device: torch.device | str = "cpu", deepspeed: bool = False):
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        self.precision = precision
        self.dtype = PRECISIONS[precision]
        self.device_type = torch.device(device).type
        self._autocast_dtype = None if deepspeed and self.device_type != "cuda" else self.dtype
        # bf16 has fp32's exponent range: no scaling needed
        self.scaler = torch.amp.GradScaler(self.device_type, enabled=precision == "fp16")

    @property
    def enabled(self) -> bool:
        return self.dtype is not None

    def autocast(self):
        """The forward pass's context: low-precision matmuls and convolutions, fp32 reductions."""
        if self._autocast_dtype is None:
            return torch.autocast(self.device_type, enabled=False)
        return torch.autocast(self.device_type, dtype=self._autocast_dtype)

    def backward(self, loss: Tensor) -> None:
        self.scaler.scale(loss).backward()

    def step(self, optimizer: torch.optim.Optimizer, params: Iterable[Tensor] | None = None,
             max_norm: float = 0.0) -> None:
        """Clip (on true, unscaled gradients) and step. With fp16, a step whose gradients overflowed is skipped
        and the scale lowered; nothing here waits for the device (no .item())."""
        if max_norm > 0:
            if params is None:
                params = [p for group in optimizer.param_groups for p in group["params"]]
            self.scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(params, max_norm)
        if not self.scaler.is_enabled():
            optimizer.step()
            return
        self.scaler.step(optimizer)
        self.scaler.update()

    def state_dict(self) -> dict[str, Any]:
        """JSON-friendly: {} unless fp16 (then the scaler's scale and growth tracker)."""
        return {k: (v.item() if isinstance(v, Tensor) else v) for k, v in self.scaler.state_dict().items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            self.scaler.load_state_dict(dict(state))
