"""What plugins use from the core, beyond the interfaces: the one public module for plugin authors.

Built-in plugins import only `protobench` (the interfaces, `hookimpl`, `UsageError`) and this module, so an
outside plugin can do everything a built-in does. Names resolve on first use, so importing it loads no torch.

- `cache`: the one integrity-checked on-disk cache (`cache.load_tensors`, `cache.save_tensors`,
  `cache.entry_path`, `cache.lookup`, `cache.store`): entries are complete or absent, and a
  damaged one is named and rebuilt.
- `stage(description, total, unit)`: a progress bar on stderr for a long step (Stage I, an evaluator).
- `count_flops(fn)`: the FLOPs of one call, the way the run's FLOP clock counts them.
- `json_digest(obj)`, `sha256_file(path)`: stable identities for cache keys and files.
- `random_shift(x, generator)`: the augmentation the small helper classifiers use.
- `atomic_write_bytes`, `atomic_write_json`: files written whole or not at all; `warn(message)`: one stderr line.
- `plugin_options(kind, name)`, `build_plugin(kind, name, options, context)`: another registered plugin's options
  and an instance of it, for a plugin that wraps one (rejection sampling around any guidance).
"""

from __future__ import annotations

import importlib
from typing import Any

#: public name -> (core module, attribute; None for the module itself)
_EXPORTS: dict[str, tuple[str, str | None]] = {
    "cache": ("protobench.cache", None),
    "stage": ("protobench.progress", "stage"),
    "count_flops": ("protobench.flops", "count_flops"),
    "json_digest": ("protobench.io", "json_digest"),
    "sha256_file": ("protobench.cache", "sha256_file"),
    "random_shift": ("protobench.augment", "random_shift"),
    "atomic_write_bytes": ("protobench.io", "atomic_write_bytes"),
    "atomic_write_json": ("protobench.io", "atomic_write_json"),
    "warn": ("protobench.io", "warn"),
}

__all__ = sorted([*_EXPORTS, "build_plugin", "plugin_options"])


def plugin_options(kind: str, name: str) -> dict[str, Any]:
    """The options of the registered plugin `name` (its keyword parameters with defaults, context excluded)."""
    from protobench.plugins import CONTEXT_KEYS, get_registry
    from protobench.plugins import plugin_options as options_of

    return options_of(get_registry().get(kind, name).cls, CONTEXT_KEYS)


def build_plugin(kind: str, name: str, options: dict[str, Any], context: dict[str, Any] | None = None) -> Any:
    """An instance of the registered plugin `name`. String option values are typed by the plugin's annotations
    (else its defaults), as `-o` values are; an unknown option or a bad value is a UsageError naming it."""
    from protobench.config import coerce, typed_like
    from protobench.plugins import CONTEXT_KEYS, get_registry, option_annotations

    known = plugin_options(kind, name)
    annotations = option_annotations(get_registry().get(kind, name).cls, CONTEXT_KEYS)
    typed = {}
    for key, value in options.items():
        if isinstance(value, str) and key in known:
            like, nullable = typed_like(known[key], annotations.get(key))
            value = coerce(value, like, f"{kind}.{key}", nullable)
        typed[key] = value
    return get_registry().build(kind, name, typed, context or {})


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'protobench.kit' has no attribute {name!r}")
    module, attr = _EXPORTS[name]
    value: Any = importlib.import_module(module)
    if attr is not None:
        value = getattr(value, attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
