"""Metric: scores a set of generated samples against the real data."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import Tensor

if TYPE_CHECKING:
    from protobench.interfaces.dataset import Dataset


@dataclass
class Reference:
    """The real data a metric compares against, and where it may cache statistics."""

    dataset: Dataset
    cache_dir: Path
    device: torch.device
    seed: int = 0
    #: a torch-fidelity Inception-v3 weights file: metrics then use it instead of the domain evaluator
    inception_weights: Path | None = None
    show_progress: bool = False


class Metric:
    """Base class. `compute` gets uint8 samples N×C×H×W and their labels (N,), and returns
    named values whose keys carry the feature extractor, e.g. ``{"fid[digits-evaluator]": 12.3}``."""

    name: ClassVar[str]
    higher_is_better: ClassVar[bool] = False
    #: samples each class needs (per-class statistics); the run refuses fewer before it starts
    min_samples_per_class: ClassVar[int] = 0

    def per_class_dimension(self, reference: Reference) -> int:
        """Samples per class the final evaluation needs for a per-class covariance of full rank (the feature
        dimension of per-class Fréchet metrics); 0 when the metric has no such need."""
        return 0

    def prepare(self, reference: Reference) -> None:  # noqa: B027 - optional hook
        """Optional: build what the metric measures with (train/load the evaluator, real statistics).

        The same contract as `Conditioner.prepare` (build from the real data, cache, reuse), but called once
        before training and not charged to the run: it is the measuring instrument, not the method."""

    def instruments(self, reference: Reference) -> dict[str, str]:
        """{extractor label: digest of the weights it scores with}: stored in every record, so that numbers
        from different evaluators are never pooled or compared. Empty when the metric needs no network."""
        return {}

    def instrument_details(self, reference: Reference) -> dict[str, dict]:
        """{extractor label: what is known about it, e.g. {"test_accuracy": 0.99}}: shown beside its numbers."""
        return {}

    def compute(self, samples: Tensor, labels: Tensor, reference: Reference) -> dict[str, float]:  # pragma: no cover
        raise NotImplementedError

    def standard_errors(self, samples: Tensor, labels: Tensor, reference: Reference) -> dict[str, float]:
        """Optional: {key: standard error} of `compute`'s values on these samples, by bootstrap over the samples'
        features (resampling, no new sampling); stored as the eval event's `metrics_se`. Empty when unknown."""
        return {}
