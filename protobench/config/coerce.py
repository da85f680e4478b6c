"""Coercion: a value from `-o key=value` (a string) or from TOML (typed) converted to, or checked against,
the type of its key, which an annotation states where there is one and the default shows otherwise."""

from __future__ import annotations

import math
import types
import typing
from typing import Any

from protobench.errors import UsageError

#: sizes in images: also written 30k, 1.5M or (in TOML) 3e4
SIZE_KEYS = ("budget", "eval_every")
#: an example value of each type an annotation can name, standing in for a default that does not show it
_EXAMPLES: dict[type, Any] = {bool: False, int: 0, float: 0.0, str: ""}


def parse_size(text: str) -> int:
    """'30000', '30k', '1.5M' -> images."""
    s = str(text).strip().lower().replace("_", "")
    mult = 1
    if s.endswith("k"):
        mult, s = 1_000, s[:-1]
    elif s.endswith("m"):
        mult, s = 1_000_000, s[:-1]
    try:
        value = float(s) * mult
    except ValueError:
        raise UsageError(f"not a number of images: {text!r}") from None
    if not math.isfinite(value) or value != int(value) or value < 0:
        raise UsageError(f"not a whole number of images: {text!r}")
    return int(value)


def _example(annotation: Any) -> tuple[Any, bool] | None:
    """(a value of the annotated type, whether None is allowed too), or None when the annotation names no
    type coercion knows (int, float, bool, str, tuple[T, ...], and each of them `| None`)."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        found = _example(rest[0]) if len(rest) == 1 and len(args) == 2 else None
        return (found[0], True) if found else None
    if annotation in _EXAMPLES:
        return _EXAMPLES[annotation], False
    if typing.get_origin(annotation) is tuple and len(args) == 2 and args[1] is Ellipsis and args[0] in _EXAMPLES:
        return (_EXAMPLES[args[0]],), False
    return None


def typed_like(default: Any, annotation: Any = None) -> tuple[Any, bool]:
    """(the value whose type `coerce` converts to, whether None is accepted): the annotation's type where it
    names one the default does not already show (`x: float = 1`, `dir: str | None = None`), else the default."""
    found = _example(annotation) if annotation is not None else None
    if found is None:
        return default, False
    like, nullable = found
    if type(default) is type(like) and not (isinstance(like, tuple) and not default):
        return default, nullable
    return like, nullable


def coerce(value: Any, like: Any, key: str, nullable: bool = False) -> Any:
    """Convert a string (from `-o`) or a TOML value to the type of `like` (see `typed_like`); with `nullable`,
    None (or "none", "null") passes as None.

    A TOML value of the wrong type (`seed = 1.5`, `lr = [1, 2]`, `budget = true`) is refused, not passed on."""
    if nullable and (value is None or isinstance(value, str) and value.lower() in ("none", "null")):
        return None
    if not isinstance(value, str):
        return _coerce_typed(value, like, key)
    try:
        return _from_text(value, like, key)
    except (ValueError, UsageError):
        raise UsageError(f"bad value for {key}: {value!r} (expected {_type_name(like)})") from None


def _from_text(value: str, like: Any, key: str) -> Any:
    if isinstance(like, bool):
        low = value.lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ValueError(value)
    if isinstance(like, int):
        return parse_size(value) if key in SIZE_KEYS else int(value)
    if isinstance(like, float):
        return float(value)
    if isinstance(like, tuple):
        items = [v.strip() for v in value.split(",") if v.strip()]
        inner = like[0] if like else ""
        return tuple(coerce(v, inner, key) for v in items)
    if like is None:
        for cast in (int, float):
            try:
                return cast(value)
            except ValueError:
                pass
        return None if value.lower() in ("none", "null") else value
    return value


def _type_name(like: Any) -> str:
    if isinstance(like, tuple):
        return f"a list of {_type_name(like[0]) if like else 'values'}"
    return {bool: "true or false", int: "a whole number", float: "a number", str: "a string"}.get(
        type(like), type(like).__name__)


def _coerce_typed(value: Any, like: Any, key: str) -> Any:
    """A value that is already typed (TOML, Python callers): check it against the type of `like`."""
    def bad() -> UsageError:
        return UsageError(f"bad value for {key}: {value!r} (expected {_type_name(like)})")

    if like is None:  # no typed default (e.g. data_root, an option without default): any scalar
        if isinstance(value, dict):
            raise bad()
        return tuple(value) if isinstance(value, list) else value
    if isinstance(like, bool):
        if not isinstance(value, bool):
            raise bad()
        return value
    if isinstance(like, int):
        if isinstance(value, bool):
            raise bad()
        if isinstance(value, float) and key in SIZE_KEYS and math.isfinite(value) and value == int(value):
            return int(value)
        if not isinstance(value, int):
            raise bad()
        return value
    if isinstance(like, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad()
        return float(value)
    if isinstance(like, tuple):
        if isinstance(value, (list, tuple)):
            inner = like[0] if like else None
            return tuple(v if inner is None else coerce(v, inner, key) for v in value)
        if isinstance(value, (dict, bool)):
            raise bad()
        return coerce(str(value), like, key)
    if isinstance(like, str):
        if not isinstance(value, str):
            raise bad()
        return value
    return value
