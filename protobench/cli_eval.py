"""`eval` (score any generator's samples) and `sample` (draw from a trained run)."""

from __future__ import annotations

import click


def add_commands(main: click.Group) -> None:
    """Attach this module's commands to the top-level group."""
