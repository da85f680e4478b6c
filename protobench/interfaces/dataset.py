"""Dataset: labelled images in a fixed train/test split, with a content checksum."""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor


@dataclass(frozen=True)
class DataSplit:
    """uint8 images N×C×H×W and int64 labels N, held in memory."""

    images: Tensor
    labels: Tensor

    def __post_init__(self):
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise TypeError(f"DataSplit.images must be uint8 N×C×H×W, got {self.images.dtype} {tuple(self.images.shape)}")
        if self.labels.shape != (self.images.shape[0],):
            raise TypeError("DataSplit.labels must have one label per image")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def as_float(self) -> Tensor:
        """Images in [-1, 1], the system's internal range."""
        return self.images.float().div(127.5).sub(1.0)


class Dataset(ABC):
    """A dataset plugin. Constructed with the user's options (and `data_root` if it accepts one).

    Subclasses set `name`, and after `load()` expose `num_classes`, `class_names`, `image_shape`.
    `presets` are config defaults suited to this dataset (``"batch_size"``,
    ``"denoiser.base_channels"``, ``"conditioner.stage1_epochs"``...), applied before the user's
    overrides and only where the selected plugin accepts the option.
    """

    name: ClassVar[str]
    presets: ClassVar[dict[str, Any]] = {}
    #: the target for the primary metric, measured before the scored runs: {"metric", "value", "samples", "how"};
    #: written into each run's config.json, it is the report's default target (`report --target` overrides)
    target: ClassVar[dict[str, Any] | None] = None
    #: options for the domain evaluator the metrics train on this dataset (see protobench_metrics)
    evaluator_options: ClassVar[dict[str, Any]] = {}

    num_classes: int
    class_names: tuple[str, ...]
    image_shape: tuple[int, int, int]

    @abstractmethod
    def load(self) -> tuple[DataSplit, DataSplit]:
        """Return (train, test). Must never download anything."""

    def checksum(self) -> str:
        """Content checksum of both splits; every cache keys on it."""
        if not hasattr(self, "_checksum"):
            train, test = self.load()
            self._checksum = content_checksum(train, test)
        return self._checksum

    def resize(self, images: Tensor) -> Tensor:
        """Bring uint8 N×C×H×W images of any size to this dataset's size, as the dataset itself is resized."""
        from torch.nn.functional import interpolate

        c, h, w = self.image_shape
        if images.shape[1] != c:
            if images.shape[1] == 1:
                images = images.expand(-1, c, -1, -1)
            elif c == 1 and images.shape[1] == 3:
                weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
                images = (images.float() * weights).sum(1, keepdim=True).round().clamp(0, 255).to(torch.uint8)
            else:
                raise ValueError(f"cannot convert {images.shape[1]} channels to {c}")
        if images.shape[-2:] == (h, w):
            return images.contiguous()
        out = interpolate(images.float(), size=(h, w), mode="bilinear", antialias=True, align_corners=False)
        return out.round().clamp(0, 255).to(torch.uint8)


def content_checksum(*splits: DataSplit) -> str:
    digest = hashlib.sha256()
    for split in splits:
        # hash the arrays' buffers directly (same bytes as .tobytes(), without copying 1 GB for 100k images)
        digest.update(split.images.contiguous().numpy())
        digest.update(split.labels.to(torch.int64).contiguous().numpy())
    return digest.hexdigest()[:16]
