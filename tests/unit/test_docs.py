"""docs/writing-plugins.md keeps up with the plugin contract (as datasette's docs meta-tests do)."""

from __future__ import annotations

import importlib.metadata as md
import re
from pathlib import Path

import pytest

from protobench import hookspecs
from protobench.interfaces import BASES, KINDS
from protobench.plugins import ENTRY_POINT_GROUP, load_registry

DOC = Path(__file__).resolve().parents[2] / "docs" / "writing-plugins.md"
TEXT = DOC.read_text(encoding="utf-8")
HOOKS = sorted(name for name, fn in vars(hookspecs).items() if hasattr(fn, "protobench_spec"))
KIND_HOOKS = [h for h in HOOKS if h not in hookspecs.NOT_KINDS]


def section(title: str) -> str:
    """The text under the heading `title`, up to the next heading of the same or a higher level."""
    match = re.search(rf"^(#+) {re.escape(title)}\s*$", TEXT, flags=re.M)
    assert match, f"docs/writing-plugins.md has no section '{title}'"
    level = len(match.group(1))
    rest = TEXT[match.end():]
    end = re.search(rf"^#{{1,{level}}} ", rest, flags=re.M)
    return rest[: end.start()] if end else rest


def test_hooks_are_the_seven_kinds_and_commands():
    assert KIND_HOOKS == sorted(f"register_{kind}s" for kind in KINDS) and len(KINDS) == 7
    assert HOOKS == sorted([*KIND_HOOKS, "register_commands"])


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_has_a_section_with_an_example(hook):
    body = section(f"{hook}(register)")
    assert "register(" in body


@pytest.mark.parametrize("hook", KIND_HOOKS)
def test_every_hook_is_exercised_by_a_builtin(hook, monkeypatch):
    """A hook no built-in uses is a hook nobody has proved works (register_commands is proved by
    test_registry's plugin that adds a command)."""
    for var in ("PROTOBENCH_LOAD_PLUGINS", "PROTOBENCH_DISABLE_PLUGINS"):
        monkeypatch.delenv(var, raising=False)
    builtin = {ep.name for ep in md.distribution("protobench").entry_points if ep.group == ENTRY_POINT_GROUP}
    kind = hook.removeprefix("register_").removesuffix("s")
    registry = load_registry()
    assert any(entry.plugin in builtin for entry in registry.entries[kind].values()), f"no built-in uses {hook}"


@pytest.mark.parametrize("kind", KINDS)
def test_every_interface_method_is_documented_with_an_example(kind):
    base = BASES[kind]
    body = section(base.__name__)
    methods = [name for name, value in vars(base).items() if callable(value) and not name.startswith("_")]
    assert methods
    for method in methods:
        assert f"`{method}(" in body, f"{base.__name__}.{method} is not described"
        assert f"def {method}(" in body, f"{base.__name__}.{method} has no example"


@pytest.mark.parametrize("var", ["PROTOBENCH_LOAD_PLUGINS", "PROTOBENCH_DISABLE_PLUGINS", "PROTOBENCH_TRACE_PLUGINS"])
def test_plugin_environment_variables_are_documented(var):
    assert var in Path(__file__).resolve().parents[2].joinpath("protobench", "plugins.py").read_text()
    assert f"| `{var}` |" in section("Environment variables")


def test_python_examples_are_valid_python():
    blocks = re.findall(r"```python\n(.*?)```", TEXT, flags=re.S)
    assert len(blocks) > 10
    for block in blocks:
        compile(block, str(DOC), "exec")
