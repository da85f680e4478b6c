"""The training objective: ε-prediction (eq. 5, Ho et al. 2020) plus the conditioner's extra term."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from protobench.diffusion import NoiseSchedule
from protobench.interfaces import LossContext


def loss(net: DiffusionModel, x0: Tensor, labels: Tensor, t: Tensor, noise: Tensor) -> tuple[Tensor, Tensor]:
    """(training loss, its ε-MSE part) of `net` on clean images `x0` with `labels` (NULL_LABEL where dropped),
    noised at timesteps `t` with `noise` (both drawn by the batches, for the whole global batch)."""
    x_t = net.schedule.q_sample(x0, t, noise)
    eps_pred = net.denoiser(x_t, t, net.conditioner(labels))
    mse = F.mse_loss(eps_pred.float(), noise.float())  # ε-prediction objective (eq. 5, Ho et al. 2020)
    total = mse
    x0_pred = net.schedule.x0_from_eps(x_t, t, eps_pred)
    extra = net.conditioner.extra_loss(LossContext(x0, x_t, t, labels, noise, eps_pred, x0_pred))
    if extra is not None:
        total = total + extra
    return total, mse


class DiffusionModel(nn.Module):
    """Conditioner + denoiser; forward is the training `loss` (what DeepSpeed wraps)."""

    def __init__(self, conditioner: nn.Module, denoiser: nn.Module, schedule: NoiseSchedule):
        super().__init__()
        self.conditioner = conditioner
        self.denoiser = denoiser
        self.schedule = schedule

    def forward(self, x0: Tensor, labels: Tensor, t: Tensor, noise: Tensor) -> tuple[Tensor, Tensor]:
        return loss(self, x0, labels, t, noise)
