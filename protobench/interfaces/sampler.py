"""Sampler: integrates the reverse process, seeing only an ε function."""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import torch
from torch import Tensor

#: eps_fn(x_t, t) -> ε, with t a LongTensor (B,) of timesteps in [0, T)
EpsFn = Callable[[Tensor, Tensor], Tensor]


class Sampler:
    name: ClassVar[str]

    def sample(self, eps_fn: EpsFn, schedule, shape: tuple[int, ...], generator: torch.Generator) -> Tensor:
        """Return x0 in [-1, 1] of `shape`, starting from noise drawn from `generator`."""
        raise NotImplementedError  # pragma: no cover
