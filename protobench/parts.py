"""A run's parts built from its config: dataset, conditioner, denoiser, guidance, sampler, metrics, schedule.

One builder for the training loop (`engine.Run`) and for loading a trained run (`generation.load_trained`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from protobench.config import RunConfig, build_metrics
from protobench.diffusion import NoiseSchedule
from protobench.interfaces import PrepareContext
from protobench.paths import cache_dir
from protobench.plugins import Registry


class Parts:
    """A run's built parts (attributes set by `build_parts`)."""

    def __init__(self, cfg: RunConfig, out: Path, device: torch.device):
        self.cfg = cfg
        self.out = Path(out)
        self.device = device


def build_parts(cfg: RunConfig, registry: Registry, into: Any) -> None:
    """Build every plugin the config names onto `into`, in order; a failure leaves what was already built
    (so a failed run still records its dataset's checksum)."""
    opts = cfg.options
    into.dataset = registry.build("dataset", cfg.dataset, opts["dataset"], {"data_root": cfg.data_root})
    into.train_split, into.test_split = into.dataset.load()
    into.checksum = into.dataset.checksum()
    ctx = {"num_classes": into.dataset.num_classes, "image_shape": tuple(into.dataset.image_shape),
           "class_names": tuple(into.dataset.class_names)}
    into.conditioner = registry.build("conditioner", cfg.conditioner, opts["conditioner"], ctx)
    into.denoiser = registry.build("denoiser", cfg.denoiser, opts["denoiser"], {**ctx, "cond": into.conditioner.spec})
    into.guidance = registry.build("guidance", cfg.guidance, opts["guidance"], ctx)
    into.sampler = registry.build("sampler", cfg.sampler, opts["sampler"], ctx)
    into.metrics = build_metrics(cfg, registry, ctx)
    into.schedule = NoiseSchedule(cfg.schedule, cfg.timesteps)


def prepare_context(parts: Any, show_progress: bool, **extra: Any) -> PrepareContext:
    """What a conditioner's or guidance's prepare step gets from built `parts` (a Run or Parts)."""
    return PrepareContext(
        train=parts.train_split, test=parts.test_split, num_classes=parts.dataset.num_classes,
        image_shape=tuple(parts.dataset.image_shape), dataset_checksum=parts.checksum, seed=parts.cfg.seed,
        device=parts.device, cache_dir=cache_dir(parts.out), show_progress=show_progress, **extra,
    )


def inception_weights(cfg: RunConfig) -> Path | None:
    """The Inception weights file from the metric option or $PROTOBENCH_INCEPTION_WEIGHTS (None: domain evaluator)."""
    path = cfg.options.get("metric", {}).get("inception_weights") or os.environ.get("PROTOBENCH_INCEPTION_WEIGHTS")
    return Path(path) if path else None
