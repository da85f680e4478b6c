"""`protobench plugins`: the installed plugins by kind."""

from __future__ import annotations

import json

import click

from protobench.cli.extensions import plugin_commands
from protobench.cli.output import console


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print {kind: [{name, plugin, version}]} on stdout.")
def plugins(as_json: bool) -> None:
    """List installed plugins by kind, and any that failed to load."""
    from rich.table import Table

    from protobench.plugins import get_registry
    from protobench.vocabulary import KINDS

    registry = get_registry()
    added = plugin_commands(click.get_current_context().find_root().command)  # a clash is listed as broken
    data = {kind: [{"name": e.name, "plugin": e.plugin, "version": e.version}
                   for e in sorted(registry.entries[kind].values(), key=lambda e: e.name)] for kind in KINDS}
    if added:
        data["commands"] = [{"name": name, "plugin": plugin} for plugin, command in registry.commands
                            if (name := command.name) in added and added[name] is command]
    if registry.broken:
        data["broken"] = [{"plugin": k, "error": v} for k, v in sorted(registry.broken.items())]
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    table = Table(title="protobench plugins")
    for col in ("kind", "name", "plugin", "version"):
        table.add_column(col)
    for kind in KINDS:
        for e in data[kind]:
            table.add_row(kind, e["name"], e["plugin"], e["version"])
    c = console()
    c.print(table)
    for a in data.get("commands", []):
        c.print(f"command [bold]protobench {a['name']}[/bold] (from plugin {a['plugin']})")
    for b in data.get("broken", []):
        c.print(f"[red]broken plugin[/red] {b['plugin']}: {b['error']}")



COMMANDS = (plugins,)
