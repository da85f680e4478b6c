"""Output helpers: the rich console on stderr (stdout stays for --json) and the run record table."""

from __future__ import annotations

from typing import Any


def console():
    from rich.console import Console

    return Console(stderr=True)


def print_record(record: dict[str, Any]) -> None:
    from rich.markup import escape
    from rich.table import Table

    from protobench.ledger import charged_seconds
    from protobench.units import hours_label

    table = Table(title=f"run {record['run_id']} — {record['status']}")
    table.add_column("images seen", justify="right")
    metric_keys = sorted({k for e in record["evals"] for k in e["metrics"]})
    for key in metric_keys:
        table.add_column(escape(key), justify="right")
    unit = hours_label(record["device"]["type"])
    compiled = any(e["device_seconds"].get("compile") for e in record["evals"])
    table.add_column(f"{unit} (prepare+{'compile+' if compiled else ''}train)", justify="right")
    for ev in record["evals"]:
        ds = ev["device_seconds"]
        table.add_row(str(ev["images_seen"]), *[_fmt(ev["metrics"].get(k)) for k in metric_keys],
                      f"{charged_seconds(ds) / 3600:.4f}")
    c = console()
    c.print(table)
    if record.get("best"):
        b = record["best"]
        c.print(f"best {escape(b['metric'])} = {b['value']:.3f} at {b['images_seen']} images, "
                f"{b['device_hours']:.4f} {unit} (prepare {b['prepare_hours']:.4f}"
                + (f", compile {b['compile_hours']:.4f})" if b.get("compile_hours") else ")"))
    if record.get("error"):
        c.print(f"[red]error:[/red] {record['error']}")
    c.print(f"run folder: {record['path']}")


def _fmt(v) -> str:
    return f"{v:.3f}" if isinstance(v, float) else ("" if v is None else str(v))
