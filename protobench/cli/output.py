"""Output helpers: the rich console on stderr (stdout stays for --json) and the run record table."""

from __future__ import annotations

from typing import Any


def console():
    from rich.console import Console

    return Console(stderr=True)


def print_record(record: dict[str, Any]) -> None:
    """The run's evaluations as a table that fits the terminal: the headline metric first, each value with its
    bootstrap standard error; per-class values and the columns that do not fit are named, not squeezed."""
    from rich.markup import escape

    from protobench.records import best_se
    from protobench.units import hours_label

    c = console()
    unit = hours_label(record["device"]["type"])
    keys = _metric_columns(record)
    evaluators = {k.partition("[")[2].rstrip("]") for k in keys if "[" in k}
    short = len(evaluators) == 1
    table, shown = _eval_table(record, keys, unit, short, c.width)
    c.print(table)
    notes = []
    if short:
        notes.append(f"metrics by {evaluators.pop()}; ± is the bootstrap standard error of one evaluation")
    hidden = [k for k in keys if k not in shown]
    per_class = any("/" in k for e in record["evals"] for k in e["metrics"])
    if hidden:
        notes.append(f"not shown at this width: {', '.join(_label(k, short) for k in hidden)} (--json has them)")
    if per_class:
        notes.append("per-class values: --json")
    for note in notes:
        c.print(escape(note), style="dim")
    if record.get("best"):
        b = record["best"]
        c.print(f"best {escape(b['metric'])} = {_fmt(b['value'], best_se(record))} at {b['images_seen']:,} images, "
                f"{b['device_hours']:.4f} {unit} (prepare {b['prepare_hours']:.4f}"
                + (f", compile {b['compile_hours']:.4f})" if b.get("compile_hours") else ")"))
    if record.get("error"):
        c.print(f"[red]error:[/red] {escape(record['error'])}")
    c.print(f"run folder: {record['path']}")


def _metric_columns(record: dict[str, Any]) -> list[str]:
    """Whole-dataset metrics (no per-class `key/k`), the headline metric first."""
    keys = sorted({k for e in record["evals"] for k in e["metrics"] if "/" not in k})
    primary = (record.get("best") or {}).get("metric")
    return sorted(keys, key=lambda k: k != primary)


def _label(key: str, short: bool) -> str:
    return key.partition("[")[0] if short else key


def _eval_table(record: dict[str, Any], keys: list[str], unit: str, short: bool, width: int):
    """The widest table of the first metric columns that fits `width` (the headline metric always)."""
    from rich.markup import escape
    from rich.table import Table

    from protobench.ledger import charged_seconds

    compiled = any(e["device_seconds"].get("compile") for e in record["evals"])
    for n in range(len(keys), -1, -1):
        table = Table(title=f"run {record['run_id']} — {record['status']}")
        table.add_column("images", justify="right", no_wrap=True)
        for key in keys[:n]:
            table.add_column(escape(_label(key, short)), justify="right", no_wrap=True)
        table.add_column(f"{unit}{' (incl. compile)' if compiled else ''}", justify="right", no_wrap=True)
        for ev in record["evals"]:
            se = ev.get("metrics_se") or {}
            table.add_row(f"{ev['images_seen']:,}", *[_fmt(ev["metrics"].get(k), se.get(k)) for k in keys[:n]],
                          f"{charged_seconds(ev['device_seconds']) / 3600:.4f}")
        if n <= 1 or _measure(table) <= width:
            return table, keys[:n]
    raise AssertionError("unreachable")  # n == 0 always returns


def _measure(table) -> int:
    from rich.console import Console

    probe = Console(width=10_000, file=None, force_terminal=False)
    return probe.measure(table).maximum


def _fmt(value: Any, se: Any = None) -> str:
    from protobench.report.text import num

    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return "" if value is None else str(value)
    return num(value, 3) + (f"±{num(se, 2)}" if isinstance(se, (int, float)) else "")
