"""A fixed one-hot class embedding: nothing to learn, the class signal in its plainest form."""

from __future__ import annotations

import torch
from torch import Tensor

from protobench import NULL_LABEL, Conditioner, Conditioning, ConditionSpec


class OneHot(Conditioner):
    """e_y = scale · onehot(y) (a `num_classes`-dim embedding joined to the time embedding); e_∅ = 0."""

    name = "onehot"

    def __init__(self, num_classes: int, scale: float = 1.0):
        super().__init__()
        if scale <= 0:
            raise ValueError(f"scale must be > 0, got {scale}")
        self.num_classes = num_classes
        self.spec = ConditionSpec(emb_dim=num_classes)
        # a buffer, not a parameter: it moves with .to(device) and is checkpointed, but never trained.
        # Row `num_classes` is the null token.
        table = torch.cat([scale * torch.eye(num_classes), torch.zeros(1, num_classes)])
        self.register_buffer("table", table)

    def forward(self, labels: Tensor) -> Conditioning:
        labels = labels.long()
        if ((labels < NULL_LABEL) | (labels >= self.num_classes)).any():
            raise ValueError(f"labels must be in [0, {self.num_classes}) or NULL_LABEL ({NULL_LABEL})")
        index = torch.where(labels == NULL_LABEL, torch.full_like(labels, self.num_classes), labels)
        return Conditioning(emb=self.table[index])
