"""Ancestral DDPM (Ho et al. 2020, Alg. 2) and DDIM (Song et al. 2021, eq. 12) samplers."""

from __future__ import annotations

import torch
from torch import Tensor

from protobench import EpsFn, Sampler


def _noise(shape, generator: torch.Generator, device) -> Tensor:
    return torch.randn(shape, generator=generator, device=generator.device).to(device)


class DDPMSampler(Sampler):
    name = "ddpm"

    def __init__(self, clip_x0: bool = True):
        self.clip_x0 = clip_x0

    @torch.no_grad()
    def sample(self, eps_fn: EpsFn, schedule, shape, generator: torch.Generator) -> Tensor:
        device = generator.device
        x = _noise(shape, generator, device)
        betas, alphas, abar = (v.to(device, torch.float32) for v in (schedule.betas, schedule.alphas, schedule.alpha_bar))
        for i in reversed(range(schedule.timesteps)):
            t = torch.full((shape[0],), i, dtype=torch.long, device=device)
            eps = eps_fn(x, t).float()
            x0 = (x - (1 - abar[i]).sqrt() * eps) / abar[i].sqrt()
            if self.clip_x0:
                x0 = x0.clamp(-1, 1)
            # posterior mean μ̃_t(x_t, x̂0) (eq. 7, Ho et al. 2020)
            prev = abar[i - 1] if i > 0 else torch.tensor(1.0, device=device)
            mean = (prev.sqrt() * betas[i] / (1 - abar[i])) * x0 + (alphas[i].sqrt() * (1 - prev) / (1 - abar[i])) * x
            if i > 0:
                var = betas[i] * (1 - prev) / (1 - abar[i])
                x = mean + var.sqrt() * _noise(shape, generator, device)
            else:
                x = mean
        return x.clamp(-1, 1)


class DDIMSampler(Sampler):
    name = "ddim"

    def __init__(self, steps: int = 25, eta: float = 0.0, clip_x0: bool = True):
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        if eta < 0:
            raise ValueError(f"eta must be >= 0, got {eta}")
        self.steps, self.eta, self.clip_x0 = steps, eta, clip_x0

    @torch.no_grad()
    def sample(self, eps_fn: EpsFn, schedule, shape, generator: torch.Generator) -> Tensor:
        device = generator.device
        x = _noise(shape, generator, device)
        abar = schedule.alpha_bar.to(device, torch.float32)
        steps = min(self.steps, schedule.timesteps)
        ts = torch.linspace(schedule.timesteps - 1, 0, steps, device=device).round().long()
        for k, i in enumerate(ts.tolist()):
            t = torch.full((shape[0],), i, dtype=torch.long, device=device)
            eps = eps_fn(x, t).float()
            x0 = (x - (1 - abar[i]).sqrt() * eps) / abar[i].sqrt()
            if self.clip_x0:
                x0 = x0.clamp(-1, 1)
                eps = (x - abar[i].sqrt() * x0) / (1 - abar[i]).sqrt()
            if k == steps - 1:
                x = x0
                break
            prev = abar[ts[k + 1]]
            sigma = self.eta * ((1 - prev) / (1 - abar[i]) * (1 - abar[i] / prev)).sqrt()
            x = prev.sqrt() * x0 + (1 - prev - sigma**2).clamp(min=0).sqrt() * eps
            if self.eta > 0:
                x = x + sigma * _noise(shape, generator, device)
        return x.clamp(-1, 1)
