"""Run configuration: the schema (`RunConfig`), coercion of values to their keys' types, resolution of
defaults < presets < user, and the sources a config is read from (TOML, `-o key=value`)."""

from protobench.config.coerce import SIZE_KEYS, coerce, parse_size, typed_like
from protobench.config.resolve import build_metrics, for_chosen_plugins
from protobench.config.schema import (
    LATER_KEYS,
    MAX_IMAGES,
    MAX_SEED,
    TOP_LEVEL,
    RunConfig,
    build_config,
    check_key,
    lr_at,
    validate,
)
from protobench.config.sources import check_out, flatten_toml, load_toml, parse_overrides, read_toml

__all__ = ["LATER_KEYS", "MAX_IMAGES", "MAX_SEED", "SIZE_KEYS", "TOP_LEVEL", "RunConfig", "build_config",
           "build_metrics", "check_key", "check_out", "coerce", "flatten_toml", "for_chosen_plugins", "lr_at",
           "load_toml", "parse_overrides", "parse_size", "read_toml", "typed_like", "validate"]
