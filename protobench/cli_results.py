"""`sweep`, `report`, `compare`, `plot`: the commands over many runs."""

from __future__ import annotations

import click


def add_commands(main: click.Group) -> None:
    """Attach this module's commands to the top-level group."""
