"""Commands that installed plugins add to `protobench` through the `register_commands` hook."""

from __future__ import annotations

import click


def plugin_commands(group: click.Group) -> dict[str, click.Command]:
    """The commands installed plugins add, by name; one that would shadow a command of protobench's own is
    refused, and its plugin listed as broken."""
    from protobench.plugins import get_registry

    registry = get_registry()
    added: dict[str, click.Command] = {}
    for plugin, command in registry.commands:
        if command.name in group.commands or command.name in added:
            registry.broken[plugin] = f"command {command.name!r} is already taken; not added"
            continue
        added[command.name] = command
    return added
