"""The noise schedule shared by training and every sampler (Ho et al. 2020; Nichol & Dhariwal 2021)."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def make_betas(kind: str, timesteps: int) -> Tensor:
    if kind == "linear":
        # DDPM's schedule, scaled so other T keep the same endpoints per unit time (Nichol & Dhariwal 2021)
        scale = 1000.0 / timesteps
        return torch.linspace(scale * 1e-4, scale * 0.02, timesteps, dtype=torch.float64)
    if kind == "cosine":
        s = 0.008
        steps = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
        alpha_bar = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
        betas = 1 - alpha_bar[1:] / alpha_bar[:-1]
        return betas.clamp(max=0.999)
    raise ValueError(f"unknown schedule {kind!r}; known: cosine, linear")


class NoiseSchedule:
    """q(x_t | x_0) = N(sqrt(ᾱ_t) x_0, (1 - ᾱ_t) I)  (eq. 4 of Ho et al. 2020)."""

    def __init__(self, kind: str = "linear", timesteps: int = 1000):
        self.kind = kind
        self.timesteps = timesteps
        self.betas = make_betas(kind, timesteps)
        self.alphas = 1.0 - self.betas
        self.alpha_bar = torch.cumprod(self.alphas, dim=0)

    def _at(self, values: Tensor, t: Tensor, like: Tensor) -> Tensor:
        out = values.to(like.device)[t].to(like.dtype)
        return out.view(-1, *([1] * (like.ndim - 1)))

    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        return self._at(self.alpha_bar.sqrt(), t, x0) * x0 + self._at((1 - self.alpha_bar).sqrt(), t, x0) * noise

    def x0_from_eps(self, x_t: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        # x̂0 = (x_t − sqrt(1−ᾱ_t) ε) / sqrt(ᾱ_t)   (eq. 11, Graikos et al.)
        return (x_t - self._at((1 - self.alpha_bar).sqrt(), t, x_t) * eps) / self._at(self.alpha_bar.sqrt(), t, x_t)

    def sqrt_one_minus_alpha_bar(self, t: Tensor, like: Tensor) -> Tensor:
        return self._at((1 - self.alpha_bar).sqrt(), t, like)

    def alpha_bar_at(self, t: Tensor, like: Tensor) -> Tensor:
        return self._at(self.alpha_bar, t, like)
