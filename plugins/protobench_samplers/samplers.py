"""Ancestral DDPM (Ho et al. 2020, Alg. 2), DDIM (Song et al. 2021, eq. 12) and DPM-Solver++(2M) (Lu et al. 2022) samplers."""

from __future__ import annotations

import math

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


class DPMSolverPlusPlusSampler(Sampler):
    """DPM-Solver++(2M) (Lu et al. 2022, Alg. 2): multistep second order in the data-prediction form.

    Discrete VP schedule: α_t = √ᾱ_t, σ_t = √(1−ᾱ_t), λ_t = log(α_t/σ_t). The solver sees only ε (guidance
    already applied) and turns it into x̂0. It evaluates ε at `steps` timesteps from T−1 to 0, uniform in
    λ (`spacing="logsnr"`, the paper's choice for pixel-space models; repeated timesteps are dropped) or in
    t (`"time"`, DDIM's grid), then ends at σ = 0 with a first-order step (lower_order_final): the last x̂0.
    """

    name = "dpm-solver++"

    def __init__(self, steps: int = 15, spacing: str = "logsnr", clip_x0: bool = True):
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        if spacing not in ("logsnr", "time"):
            raise ValueError(f"spacing must be logsnr or time, got {spacing!r}")
        self.steps, self.spacing, self.clip_x0 = steps, spacing, clip_x0

    def timesteps(self, lam: Tensor) -> list[int]:
        """Descending timesteps to evaluate ε at, the first T−1 and the last 0."""
        last = len(lam) - 1
        steps = min(self.steps, len(lam))
        if steps == 1:
            return [last]
        if self.spacing == "time":
            grid = torch.linspace(last, 0, steps).round().long().tolist()
        else:
            # the timestep nearest each λ of a uniform grid (Lu et al. 2022, sec. 3.3 / DPM-Solver App. C)
            targets = torch.linspace(lam[last].item(), lam[0].item(), steps, dtype=torch.float64)
            grid = (lam.view(1, -1) - targets.view(-1, 1)).abs().argmin(dim=1).tolist()
        return [t for k, t in enumerate(grid) if k == 0 or t != grid[k - 1]]

    @torch.no_grad()
    def sample(self, eps_fn: EpsFn, schedule, shape, generator: torch.Generator) -> Tensor:
        device = generator.device
        x = _noise(shape, generator, device)
        abar = schedule.alpha_bar.to(torch.float64)
        alpha, sigma = abar.sqrt(), (1 - abar).sqrt()
        lam = alpha.log() - sigma.log()
        ts = self.timesteps(lam)
        x0_prev, h_prev = None, None
        for k, i in enumerate(ts):
            t = torch.full((shape[0],), i, dtype=torch.long, device=device)
            eps = eps_fn(x, t).float()
            x0 = (x - sigma[i].item() * eps) / alpha[i].item()  # data prediction from ε
            if self.clip_x0:
                x0 = x0.clamp(-1, 1)
            if k == len(ts) - 1:
                x = x0  # lower_order_final: one first-order step to σ = 0 lands on x̂0
                break
            j = ts[k + 1]
            h = (lam[j] - lam[i]).item()
            if x0_prev is None:
                d = x0  # first step: DPM-Solver++(1), which is DDIM
            else:
                r = h_prev / h
                d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * x0_prev  # Alg. 2, Lu et al. 2022
            # x_{t_j} = (σ_j/σ_i) x − α_j (e^{−h} − 1) D   (eq. 9 of Lu et al. 2022 with the 2M estimate D)
            x = (sigma[j] / sigma[i]).item() * x - (alpha[j].item() * math.expm1(-h)) * d
            x0_prev, h_prev = x0, h
        return x.clamp(-1, 1)
