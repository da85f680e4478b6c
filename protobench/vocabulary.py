"""The one vocabulary: the plugin kinds, the axes a run is chosen along, and plugin options as flat keys.

Importable without torch, so that reading results never loads the training stack."""

from __future__ import annotations

from typing import Any

from protobench import hookspecs

#: one hook per kind (hookspecs.py), in the order the hooks are declared: "dataset", "conditioner", ...
#: (`register_commands` adds CLI commands, not a kind of plugin)
KINDS = tuple(n[len("register_"):-1] for n in vars(hookspecs)
              if n.startswith("register_") and n not in hookspecs.NOT_KINDS)
#: the names protobench.interfaces defines and the `protobench` package re-exports (the plugin author's surface)
INTERFACES = (
    "NULL_LABEL",
    "ConditionedNet",
    "Conditioner",
    "Conditioning",
    "ConditionSpec",
    "Dataset",
    "DataSplit",
    "Denoiser",
    "EpsFn",
    "Guidance",
    "Logger",
    "LossContext",
    "Metric",
    "PrepareContext",
    "Reference",
    "Sampler",
)
#: the kinds a run picks exactly one plugin of (it computes several metrics and has any number of loggers, which
#: only watch it): a run's, a report row's axes
AXES = tuple(k for k in KINDS if k not in ("metric", "logger"))


def flatten_options(options: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """{"denoiser": {"base_channels": 32}} -> {"denoiser.base_channels": 32}: how `-o` and TOML spell them."""
    return {f"{kind}.{key}": value for kind, opts in options.items() for key, value in opts.items()}


def unflatten_options(flat: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{"denoiser.base_channels": 32, "seed": 1} -> {"denoiser": {"base_channels": 32}}: keys of a kind only."""
    options: dict[str, dict[str, Any]] = {}
    for key, value in flat.items():
        kind, dot, option = key.partition(".")
        if dot and kind in KINDS:
            options.setdefault(kind, {})[option] = value
    return options
