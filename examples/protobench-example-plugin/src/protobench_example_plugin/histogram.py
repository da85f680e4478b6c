"""A cheap metric with no network: how far the samples' pixel-intensity histogram is from the data's."""

from __future__ import annotations

import torch
from torch import Tensor

from protobench import Metric, Reference


def intensity_histogram(images: Tensor, bins: int) -> Tensor:
    """Normalised histogram of uint8 pixel values over `bins` equal-width bins of [0, 256)."""
    counts = torch.bincount(images.flatten().long() * bins // 256, minlength=bins).double()
    return counts / counts.sum()


class PixelHistogramDistance(Metric):
    """Total-variation distance ½ Σ_b |p_b − q_b| between the histograms of samples and real training images."""

    name = "pixel-histogram-distance"
    higher_is_better = False

    def __init__(self, bins: int = 32):
        if not 2 <= bins <= 256:
            raise ValueError(f"bins must be in [2, 256], got {bins}")
        self.bins = bins
        self._real: dict[str, Tensor] = {}

    def _reference_histogram(self, reference: Reference) -> Tensor:
        key = reference.dataset.checksum()
        if key not in self._real:
            train, _test = reference.dataset.load()
            self._real[key] = intensity_histogram(train.images, self.bins)
        return self._real[key]

    def prepare(self, reference: Reference) -> None:
        self._reference_histogram(reference)

    def compute(self, samples: Tensor, labels: Tensor, reference: Reference) -> dict[str, float]:
        p = intensity_histogram(samples, self.bins)
        q = self._reference_histogram(reference)
        return {f"{self.name}[pixels]": float(0.5 * (p - q).abs().sum())}
