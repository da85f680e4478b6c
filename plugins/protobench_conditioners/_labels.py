"""Label checks and the classifier-free null token, shared by the built-in conditioners."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from protobench import NULL_LABEL


def check_null(null: str) -> None:
    """Raise on an unknown null-token kind (called before any weights are drawn)."""
    if null not in ("learned", "zero"):
        raise ValueError(f"null must be 'learned' or 'zero', got {null!r}")


def add_null_token(module: nn.Module, attr: str, null: str, size: int) -> None:
    """Give `module` its null token as `attr`: a learned N(0, 1) vector, or a zero buffer (Ho & Salimans 2021)."""
    check_null(null)
    if null == "learned":
        setattr(module, attr, nn.Parameter(torch.randn(size)))
    else:
        module.register_buffer(attr, torch.zeros(size))


def checked_labels(labels: Tensor, num_classes: int) -> Tensor:
    """`labels` as int64, after checking each is a class or NULL_LABEL."""
    labels = labels.long()
    if ((labels < NULL_LABEL) | (labels >= num_classes)).any():
        raise ValueError(f"labels must be in [0, {num_classes}) or NULL_LABEL ({NULL_LABEL})")
    return labels


def embed_with_null(table: nn.Embedding, null_token: Tensor, labels: Tensor) -> Tensor:
    """Rows of `table` for `labels`, and `null_token` where a label is NULL_LABEL."""
    rows = table(labels.clamp(min=0))
    return torch.where((labels == NULL_LABEL)[:, None], null_token.to(rows.dtype).expand_as(rows), rows)
