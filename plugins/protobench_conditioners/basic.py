"""The classifier-free-guidance baseline (a learned class embedding) and the unconditional conditioner."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from protobench import NULL_LABEL, Conditioner, Conditioning, ConditionSpec


class ClassEmbedding(Conditioner):
    """A table of class embeddings plus a separate null embedding (learned, or a zero vector).

    No `padding_idx` trick: every real class row trains, and the null token is its own parameter.
    """

    def __init__(self, num_classes: int, dim: int = 128, null: str = "learned"):
        super().__init__()
        if dim <= 0:
            raise ValueError(f"dim must be > 0, got {dim}")
        if null not in ("learned", "zero"):
            raise ValueError(f"null must be 'learned' or 'zero', got {null!r}")
        self.num_classes = num_classes
        self.spec = ConditionSpec(emb_dim=dim)
        self.class_embedding = nn.Embedding(num_classes, dim)
        if null == "learned":
            self.null_embedding = nn.Parameter(torch.randn(dim))
        else:
            self.register_buffer("null_embedding", torch.zeros(dim))

    def forward(self, labels: Tensor) -> Conditioning:
        labels = labels.long()
        if ((labels < NULL_LABEL) | (labels >= self.num_classes)).any():
            raise ValueError(f"labels must be in [0, {self.num_classes}) or NULL_LABEL ({NULL_LABEL})")
        is_null = (labels == NULL_LABEL)[:, None]
        emb = self.class_embedding(labels.clamp(min=0))
        return Conditioning(emb=torch.where(is_null, self.null_embedding.to(emb.dtype).expand_as(emb), emb))


class RandomEmbedding(ClassEmbedding):
    """CFG baseline (Ho & Salimans 2021): class embeddings randomly initialised, N(0, 1), and trained."""

    name = "random"


class NoConditioner(Conditioner):
    """Unconditional: no conditioning at all (every label is ignored)."""

    name = "none"

    def __init__(self, num_classes: int = 0):
        super().__init__()
        self.spec = ConditionSpec()

    def forward(self, labels: Tensor) -> Conditioning:
        return Conditioning()
