"""The one augmentation the small helper classifiers use (evaluator, auxiliary classifier)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def random_shift(x: Tensor, gen: torch.Generator) -> Tensor:
    """Translate a batch by up to 1/8 of its size (edge pixels replicated), one draw per batch."""
    pad = max(1, x.shape[-1] // 8)
    padded = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    dx, dy = torch.randint(0, 2 * pad + 1, (2,), generator=gen).tolist()
    return padded[..., dy:dy + x.shape[-2], dx:dx + x.shape[-1]]
