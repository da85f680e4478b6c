"""A run's parts built from its config: dataset, conditioner, denoiser, guidance, sampler, metrics, schedule.

One builder for training (`training.run.Run`) and for loading a trained run (`generation.load_trained`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from protobench.config import RunConfig, build_metrics
from protobench.diffusion import NoiseSchedule
from protobench.interfaces import DataSplit, PrepareContext
from protobench.paths import cache_dir
from protobench.plugins import Registry


@dataclass(frozen=True)
class Data:
    """The dataset plugin with its loaded splits and content checksum."""

    dataset: Any
    train_split: DataSplit
    test_split: DataSplit
    checksum: str


@dataclass(frozen=True)
class Parts:
    """Every plugin a run's config names, built, with the data they were built for."""

    cfg: RunConfig
    out: Path
    device: torch.device
    data: Data
    conditioner: Any
    denoiser: Any
    guidance: Any
    sampler: Any
    metrics: list[Any]
    schedule: NoiseSchedule

    @property
    def dataset(self) -> Any:
        return self.data.dataset

    @property
    def checksum(self) -> str:
        return self.data.checksum


def load_data(cfg: RunConfig, registry: Registry) -> Data:
    """The config's dataset, built and loaded."""
    dataset = registry.build("dataset", cfg.dataset, cfg.options["dataset"], {"data_root": cfg.data_root})
    train_split, test_split = dataset.load()
    return Data(dataset, train_split, test_split, dataset.checksum())


def build_parts(cfg: RunConfig, registry: Registry, data: Data, out: Path, device: torch.device) -> Parts:
    """Build every other plugin the config names, in order, for `data`."""
    opts = cfg.options
    dataset = data.dataset
    ctx = {"num_classes": dataset.num_classes, "image_shape": tuple(dataset.image_shape),
           "class_names": tuple(dataset.class_names)}
    conditioner = registry.build("conditioner", cfg.conditioner, opts["conditioner"], ctx)
    denoiser = registry.build("denoiser", cfg.denoiser, opts["denoiser"], {**ctx, "cond": conditioner.spec})
    guidance = registry.build("guidance", cfg.guidance, opts["guidance"], ctx)
    sampler = registry.build("sampler", cfg.sampler, opts["sampler"], ctx)
    metrics = build_metrics(cfg, registry, ctx)
    return Parts(cfg, Path(out), device, data, conditioner, denoiser, guidance, sampler, metrics,
                 NoiseSchedule(cfg.schedule, cfg.timesteps))


def prepare_context(parts: Parts, show_progress: bool, **extra: Any) -> PrepareContext:
    """What a conditioner's or guidance's prepare step gets from built `parts`."""
    return PrepareContext(
        train=parts.data.train_split, test=parts.data.test_split, num_classes=parts.dataset.num_classes,
        image_shape=tuple(parts.dataset.image_shape), dataset_checksum=parts.checksum, seed=parts.cfg.seed,
        device=parts.device, cache_dir=cache_dir(parts.out), show_progress=show_progress, **extra,
    )


def inception_weights(cfg: RunConfig) -> Path | None:
    """The Inception weights file from the metric option or $PROTOBENCH_INCEPTION_WEIGHTS (None: domain evaluator)."""
    path = cfg.options.get("metric", {}).get("inception_weights") or os.environ.get("PROTOBENCH_INCEPTION_WEIGHTS")
    return Path(path) if path else None
