"""Denoiser: predicts the noise ε from (x_t, t, conditioning)."""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor, nn

from protobench.interfaces.conditioner import Conditioning


class Denoiser(nn.Module):
    """Base class. Built as `Denoiser(image_shape=(C, H, W), cond=ConditionSpec, **options)`."""

    name: ClassVar[str]

    def forward(self, x_t: Tensor, t: Tensor, cond: Conditioning) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def features(self, x_t: Tensor, t: Tensor, cond: Conditioning) -> Tensor:
        """Optional: intermediate features (B, C', H', W'), e.g. the U-Net bottleneck."""
        raise NotImplementedError(f"denoiser {self.name!r} does not expose features")
