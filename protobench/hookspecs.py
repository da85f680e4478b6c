"""The whole plugin contract: one hook per kind. Each gets `register(cls)` and calls it per plugin class."""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("protobench")
hookimpl = pluggy.HookimplMarker("protobench")


@hookspec
def register_datasets(register):
    """Register Dataset subclasses: ``register(DigitsDataset)``."""


@hookspec
def register_conditioners(register):
    """Register Conditioner subclasses."""


@hookspec
def register_denoisers(register):
    """Register Denoiser subclasses."""


@hookspec
def register_guidances(register):
    """Register Guidance subclasses."""


@hookspec
def register_samplers(register):
    """Register Sampler subclasses."""


@hookspec
def register_metrics(register):
    """Register Metric subclasses."""


@hookspec
def register_loggers(register):
    """Register Logger subclasses (live metrics: TensorBoard, W&B, MLflow, ...)."""
