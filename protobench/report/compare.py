"""`protobench compare`: two runs or two sweeps side by side, B relative to A, with a mark for better, worse
or within noise."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from protobench.errors import UsageError
from protobench.report.rows import build_rows
from protobench.report.text import fmt_stat
from protobench.runfolder import RUNS, resolve_run
from protobench.vocabulary import AXES


def load_side(spec: str, out: Path) -> list[dict[str, Any]]:
    """Report rows for a results directory (a sweep), or for one run (folder or id)."""
    from protobench.records import load_record
    from protobench.store import records

    path = Path(spec)
    if (path / RUNS).is_dir():
        rows = build_rows(records(path, status="completed"))
    else:
        record = load_record(resolve_run(spec, out))
        if record["status"] != "completed":
            raise UsageError(f"run {record['run_id']} is {record['status']}, not completed")
        rows = build_rows([record])
    if not rows:
        raise UsageError(f"{spec}: no completed runs with a metric to rank by")
    return rows

def _label(row: dict[str, Any]) -> tuple:
    return tuple(row[a] for a in AXES) + (row["device_type"],)


def _mark(a: dict[str, Any], b: dict[str, Any], higher_is_better: bool = False) -> str:
    """Lower is better for hours and most metrics; overlapping 95% intervals (over seeds), or for single runs a
    difference within 1.96 combined bootstrap standard errors of the evaluations, are within noise."""
    if a["mean"] is None or b["mean"] is None:
        return "?"
    if a.get("ci95") is not None and b.get("ci95") is not None:
        if abs(a["mean"] - b["mean"]) <= a["ci95"] + b["ci95"]:
            return "within noise"
    elif a.get("se") is not None and b.get("se") is not None:  # single runs: each evaluation's own bootstrap error
        if abs(a["mean"] - b["mean"]) <= 1.96 * math.hypot(a["se"], b["se"]):
            return "within noise"
    if b["mean"] == a["mean"]:
        return "same"
    return "better" if (b["mean"] > a["mean"]) == higher_is_better else "worse"


def compare_sides(side_a: list[dict[str, Any]], side_b: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Pairs of rows (same combination, else same plugins, else the only row of each), B relative to A."""
    pairs = []
    used: set[int] = set()
    for a in side_a:
        match = next((i for i, b in enumerate(side_b) if i not in used and b["combination"] == a["combination"]), None)
        if match is None:
            match = next((i for i, b in enumerate(side_b) if i not in used and _label(b) == _label(a)), None)
        if match is None and len(side_a) == 1 and len(side_b) == 1:
            match = 0
        if match is None:
            continue
        used.add(match)
        b = side_b[match]
        if a["device_type"] != b["device_type"]:
            raise UsageError(f"cannot compare {a['unit']} with {b['unit']}: the runs used different device types")
        if a["metric"] != b["metric"]:
            raise UsageError(f"cannot compare {a['metric']} with {b['metric']}: pass --metric to rank both by one")
        if a.get("evaluator") != b.get("evaluator"):
            raise UsageError(f"cannot compare {a['metric']} scored by different evaluators "
                             f"({a.get('evaluator') or 'unrecorded'} vs {b.get('evaluator') or 'unrecorded'})")
        entry = {"a": {k: a[k] for k in AXES}, "b": {k: b[k] for k in AXES}, "unit": a["unit"], "metric": a["metric"],
                 "higher_is_better": a.get("higher_is_better", False), "metrics": {}}
        for key in ("best_fid", "device_hours_to_best"):
            sa, sb = a[key], b[key]
            ratio = sb["mean"] / sa["mean"] if sa["mean"] and sb["mean"] is not None else None
            up = key == "best_fid" and a.get("higher_is_better", False)
            entry["metrics"][key] = {"a": sa, "b": sb, "ratio": ratio, "mark": _mark(sa, sb, up)}
        pairs.append(entry)
    if not pairs:
        raise UsageError("nothing to compare: no combination appears on both sides")
    return pairs


def render_comparison(pairs: list[dict[str, Any]], name_a: str, name_b: str):
    """A rich table of the comparison; the CLI prints it."""
    from rich.markup import escape
    from rich.table import Table

    colour = {"better": "green", "worse": "red", "within noise": "yellow"}
    table = Table(title=f"B = {escape(name_b)} relative to A = {escape(name_a)} (ratio B/A; ↓ lower is better, ↑ higher)")
    for col in ("A combination", "B combination", "quantity", "A", "B", "B/A", "mark"):
        table.add_column(col, justify="right" if col in ("A", "B", "B/A") else "left")
    for p in pairs:
        for key, m in p["metrics"].items():
            arrow = "↑" if key == "best_fid" and p.get("higher_is_better") else "↓"
            name = f"best {p['metric']} {arrow}" if key == "best_fid" else f"{p['unit']} to best {arrow}"
            ratio = "—" if m["ratio"] is None else f"{m['ratio']:.3f}"
            mark = m["mark"]
            table.add_row(" / ".join(p["a"].values()), " / ".join(p["b"].values()), name,
                          fmt_stat(m["a"], 4), fmt_stat(m["b"], 4), ratio,
                          f"[{colour.get(mark, 'white')}]{mark}[/]")
    return table
