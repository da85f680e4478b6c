"""The whole plugin contract: one hook per kind, each given `register(cls)` to call per plugin class; and
`register_commands`, given `register(click_command)`, for commands a plugin adds to `protobench`."""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("protobench")
hookimpl = pluggy.HookimplMarker("protobench")

#: hooks that register something other than a kind of plugin
NOT_KINDS = ("register_commands",)


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


@hookspec
def register_commands(register):
    """Add click commands to `protobench`: ``register(my_command)``. They are loaded only when a command name
    is not one of protobench's own (and for `protobench --help`), so they cost a plain run nothing; a name
    protobench already has stays protobench's, and the plugin is listed as broken by `protobench plugins`."""
