"""The classifier-free-guidance baseline (a learned class embedding) and the unconditional conditioner."""

from __future__ import annotations

from torch import Tensor, nn

from protobench import Conditioner, Conditioning, ConditionSpec
from protobench_conditioners._labels import add_null_token, check_null, checked_labels, embed_with_null


class ClassEmbedding(Conditioner):
    """A table of class embeddings plus a separate null embedding (learned, or a zero vector).

    No `padding_idx` trick: every real class row trains, and the null token is its own parameter.
    """

    def __init__(self, num_classes: int, dim: int = 128, null: str = "learned"):
        super().__init__()
        if dim <= 0:
            raise ValueError(f"dim must be > 0, got {dim}")
        check_null(null)
        self.num_classes = num_classes
        self.spec = ConditionSpec(emb_dim=dim)
        self.class_embedding = nn.Embedding(num_classes, dim)
        add_null_token(self, "null_embedding", null, dim)

    def forward(self, labels: Tensor) -> Conditioning:
        labels = checked_labels(labels, self.num_classes)
        return Conditioning(emb=embed_with_null(self.class_embedding, self.null_embedding, labels))


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
