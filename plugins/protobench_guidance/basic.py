"""No guidance, and classifier-free guidance (Ho & Salimans 2021)."""

from __future__ import annotations

import torch
from torch import Tensor

from protobench import NULL_LABEL, ConditionedNet, Guidance


class NoGuidance(Guidance):
    """The conditional prediction as it is."""

    name = "none"
    prepares = False

    def eps(self, net: ConditionedNet, x_t: Tensor, t: Tensor, labels: Tensor) -> Tensor:
        return net(x_t, t, labels)


class ClassifierFreeGuidance(Guidance):
    """ε̃ = (1 + w) ε(x_t, y) − w ε(x_t, ∅)  (Ho & Salimans 2021, eq. 6), both in one batched forward."""

    name = "cfg"
    prepares = False

    def __init__(self, guidance_scale: float = 1.0):
        if guidance_scale < 0:
            raise ValueError(f"guidance_scale must be >= 0, got {guidance_scale}")
        self.guidance_scale = float(guidance_scale)

    def eps(self, net: ConditionedNet, x_t: Tensor, t: Tensor, labels: Tensor) -> Tensor:
        w = self.guidance_scale
        if w == 0.0:
            return net(x_t, t, labels)
        null = torch.full_like(labels, NULL_LABEL)
        out = net(torch.cat([x_t, x_t]), torch.cat([t, t]), torch.cat([labels, null]))
        cond, uncond = out.chunk(2)
        return (1 + w) * cond - w * uncond
