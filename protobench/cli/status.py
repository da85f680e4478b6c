"""`protobench status`: where each combination of a results folder stands (the reading is protobench.status)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from protobench.cli.options import out_option, resolve_out
from protobench.cli.output import console


@click.command()
@out_option
@click.option("--json", "as_json", is_flag=True, help="Print one object per combination on stdout.")
def status(out: Path | None, as_json: bool) -> None:
    """Where each combination stands: pending, running (where, since when), completed, failed (why),
    interrupted (at how many images). Reads run folders, and Slurm's queue for jobs a sweep submitted."""
    from rich.markup import escape
    from rich.table import Table

    from protobench.errors import UsageError
    from protobench.slurm import scheduler_states
    from protobench.status import COLOURS, statuses

    out = resolve_out(out)
    if not out.is_dir():
        raise UsageError(f"no results folder {out} (--out, or $PROTOBENCH_OUT)")
    rows = statuses(out, scheduler_states)
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    c = console()
    if not rows:
        c.print(f"no runs in {out}")
        return
    table = Table(title=f"protobench status — {out}")
    for col in ("combination", "run", "state", "detail"):
        table.add_column(col)
    for r in rows:
        colour = COLOURS.get(r["state"], "white")
        table.add_row(escape(r["combination"]), r["run_id"], f"[{colour}]{r['state']}[/{colour}]",
                      escape(r["detail"]))
    c.print(table)
    counts = {s: sum(r["state"] == s for r in rows) for s in COLOURS}
    c.print(", ".join(f"{n} {s}" for s, n in counts.items() if n))


COMMANDS = (status,)
