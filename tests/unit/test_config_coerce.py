"""Plugin options are typed by their annotations where they have them, by their defaults otherwise."""

from __future__ import annotations

import pytest

from protobench.config import coerce, typed_like
from protobench.errors import UsageError
from protobench.plugins import CONTEXT_KEYS, option_annotations, plugin_options


class Options:
    """A plugin class as authors write them (annotations are strings under `from __future__ import annotations`)."""

    def __init__(self, num_classes: int, scale: float = 1, folder: str | None = None, steps=10,
                 sizes: tuple[int, ...] = (), name: Missing = "x"):  # noqa: F821 (an annotation that does not resolve)
        pass


def _coerce(option: str, value):
    like, nullable = typed_like(plugin_options(Options, CONTEXT_KEYS)[option],
                                option_annotations(Options, CONTEXT_KEYS)[option])
    return coerce(value, like, f"conditioner.{option}", nullable)


def test_annotations_are_read_and_context_is_left_out():
    found = option_annotations(Options, CONTEXT_KEYS)
    assert set(found) == {"scale", "folder", "steps", "sizes", "name"}
    assert found["scale"] is float and found["steps"] is None and found["name"] is None


def test_an_annotated_float_with_a_whole_default_takes_a_fraction():
    assert _coerce("scale", "0.5") == 0.5 and isinstance(_coerce("scale", "2"), float)


def test_an_optional_string_stays_a_string_and_none_is_none():
    assert _coerce("folder", "3") == "3"
    assert _coerce("folder", "none") is None


def test_without_an_annotation_the_default_types_the_value():
    assert _coerce("steps", "12") == 12
    with pytest.raises(UsageError, match="expected a whole number"):
        _coerce("steps", "1.5")
    assert _coerce("name", "y") == "y"


def test_an_empty_tuple_default_is_typed_by_its_annotation():
    assert _coerce("sizes", "8,16") == (8, 16)
    with pytest.raises(UsageError, match="bad value for conditioner.sizes"):
        _coerce("sizes", ["a"])
