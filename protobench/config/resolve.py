"""Resolution: a run's settings from defaults < the dataset's presets < the user's overrides, with each
plugin's options typed by its annotations (else its defaults) and checked against what it accepts."""

from __future__ import annotations

from typing import Any

from protobench.config.coerce import coerce, typed_like
from protobench.errors import UsageError
from protobench.plugins import CONTEXT_KEYS, Registry, option_annotations, plugin_options
from protobench.vocabulary import AXES, KINDS, unflatten_options


def for_chosen_plugins(user: dict[str, Any], chosen: dict[str, str]) -> dict[str, Any]:
    """Keys `<kind>:<plugin>.<option>` apply as `<kind>.<option>` when that plugin is the chosen one and are
    dropped otherwise (a sweep TOML can set Stage-I options for the proto arms beside `random`)."""
    out = {k: v for k, v in user.items() if ":" not in k.split(".", 1)[0]}
    for key, value in user.items():
        head, _, option = key.partition(".")
        if ":" in head and head.split(":", 1)[1] == chosen.get(head.split(":", 1)[0]):
            out.setdefault(f"{head.split(':', 1)[0]}.{option}", value)
    return out


def resolve(user: dict[str, Any], registry: Registry, defaults: dict[str, Any],
            annotations: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments of a RunConfig: top-level `defaults` (with their `annotations`) < the chosen
    dataset's presets < `user` (flat keys, already checked), and `options` per kind."""
    top = {key: str(user.get(key, defaults[key])) for key in AXES}
    user = for_chosen_plugins(user, top)
    presets = dict(getattr(registry.get("dataset", top["dataset"]).cls, "presets", {}))
    chosen = {kind: registry.get(kind, top[kind]).cls for kind in AXES}  # an unknown plugin is refused first
    for key, default in defaults.items():  # top-level keys: default < preset < user
        if key in top:
            continue
        like, nullable = typed_like(default, annotations.get(key))
        value = default
        if key in presets:
            value = coerce(presets[key], like, key, nullable)
        if key in user:
            value = coerce(user[key], like, key, nullable)
        top[key] = value
    _metrics_and_loggers(top, user, registry)
    top["options"] = {kind: _options(kind, top, user, presets, _plugin_classes(kind, top, chosen, registry))
                      for kind in KINDS}
    return top


def _metrics_and_loggers(top: dict[str, Any], user: dict[str, Any], registry: Registry) -> None:
    """The metrics (none only when asked for), the loggers, and the headline metric among the metrics."""
    if isinstance(top["metrics"], str):
        top["metrics"] = tuple(m.strip() for m in top["metrics"].split(",") if m.strip())
    if top["metrics"] == ("none",):
        top["metrics"] = ()  # asked for explicitly: train without evaluating
    elif not top["metrics"]:
        raise UsageError("metrics is empty: name at least one metric (e.g. fid), or metrics=none to train "
                         "without evaluating")
    for m in top["metrics"]:
        registry.get("metric", m)
    if isinstance(top["loggers"], str):
        top["loggers"] = tuple(n.strip() for n in top["loggers"].split(",") if n.strip())
    top["loggers"] = tuple(n for n in top["loggers"] if n != "none")
    for name in top["loggers"]:
        registry.get("logger", name)
    if top["metrics"] and top["primary_metric"] not in top["metrics"]:
        if "primary_metric" in user:
            raise UsageError(f"primary_metric {top['primary_metric']} is not among the metrics computed "
                             f"({', '.join(top['metrics'])}); add it with --metric {top['primary_metric']}")
        # the default headline was not asked for: rank by FID if computed, else by the first metric
        top["primary_metric"] = "fid" if "fid" in top["metrics"] else top["metrics"][0]


def _plugin_classes(kind: str, top: dict[str, Any], chosen: dict[str, type], registry: Registry) -> list[type]:
    """The classes whose options `<kind>.*` sets: every selected metric (or logger), else the chosen plugin."""
    if kind in chosen:
        return [chosen[kind]]
    names = top["metrics"] if kind == "metric" else top["loggers"]
    return [registry.get(kind, name).cls for name in names]


def _options(kind: str, top: dict[str, Any], user: dict[str, Any], presets: dict[str, Any],
             classes: list[type]) -> dict[str, Any]:
    """One kind's options, sorted: each class's defaults < presets < user; metric and logger options apply to
    every selected metric (logger) that accepts them."""
    defaults: dict[str, Any] = {}
    annotations: dict[str, Any] = {}
    for cls in classes:
        defaults.update(plugin_options(cls, CONTEXT_KEYS))
        annotations.update(option_annotations(cls, CONTEXT_KEYS))
    resolved = dict(defaults)
    for opt, value in unflatten_options(presets).get(kind, {}).items():
        if opt in defaults:
            resolved[opt] = _coerce_option(value, defaults, annotations, opt, f"{kind}.{opt}")
    for opt, value in unflatten_options(user).get(kind, {}).items():
        key = f"{kind}.{opt}"
        if opt not in defaults:
            name = ", ".join(top["metrics"]) if kind == "metric" else \
                ", ".join(top["loggers"]) or "(none: --logger NAME)" if kind == "logger" else top[kind]
            listed = ", ".join(sorted(defaults)) or "(none)"
            raise UsageError(f"unknown option {key} for {kind} {name}; known options: {listed}")
        resolved[opt] = _coerce_option(value, defaults, annotations, opt, key)
    return dict(sorted(resolved.items()))


def _coerce_option(value: Any, defaults: dict[str, Any], annotations: dict[str, Any], opt: str, key: str) -> Any:
    like, nullable = typed_like(defaults[opt], annotations.get(opt))
    return coerce(value, like, key, nullable)


def build_metrics(cfg: Any, registry: Registry, context: dict[str, Any]) -> list[Any]:
    """The config's metrics, each given the merged `metric.*` options it accepts."""
    metrics = []
    for name in cfg.metrics:
        accepted = plugin_options(registry.get("metric", name).cls, CONTEXT_KEYS)
        options = {k: v for k, v in cfg.options["metric"].items() if k in accepted}
        metrics.append(registry.build("metric", name, options, context))
    return metrics
