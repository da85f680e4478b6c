"""The report: per combination, best FID and device-hours to it over seeds, time to a target, speedup.

Statistics over seeds: the mean and the half-width of its 95% confidence interval from Student's t
(t_{0.975, m-1} · s / √m). With 5 or more seeds the olympic mean is used, as in the MLPerf training rules:
the best and the worst value are dropped and the mean and interval are taken over the rest.
Device-hours are (prepare + train) device-seconds / 3600 at the evaluation in question; they are labelled
GPU-hours or CPU-hours by the device the runs used, and runs on different device types are never pooled.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from protobench.errors import UsageError
from protobench.units import hours_label

OLYMPIC_MIN_SEEDS = 5
BASELINE = "random"
AXES = ("dataset", "conditioner", "denoiser", "guidance", "sampler")


def t_quantile(df: int, q: float = 0.975) -> float:
    from scipy.stats import t

    return float(t.ppf(q, df))


def summarize(values: list[float]) -> dict[str, Any]:
    """{mean, ci95, n, olympic}: n counts every seed; mean and ci95 are over the values kept."""
    vals = sorted(float(v) for v in values)
    n = len(vals)
    olympic = n >= OLYMPIC_MIN_SEEDS
    kept = vals[1:-1] if olympic else vals
    if not kept:
        return {"mean": None, "ci95": None, "n": 0, "olympic": False}
    m = len(kept)
    mean = sum(kept) / m
    ci = None
    if m >= 2:
        sd = math.sqrt(sum((v - mean) ** 2 for v in kept) / (m - 1))
        ci = t_quantile(m - 1) * sd / math.sqrt(m)
    return {"mean": mean, "ci95": ci, "n": n, "olympic": olympic}


def fid_key(record: dict[str, Any]) -> str | None:
    best = record.get("best")
    return best["metric"] if best else None


def hours_to_target(record: dict[str, Any], target: float) -> float | None:
    """(prepare + train) device-hours at the first evaluation whose FID is at or below `target`."""
    key = fid_key(record)
    if key is None:
        return None
    for ev in sorted(record["evals"], key=lambda e: e["images_seen"]):
        value = ev["metrics"].get(key)
        if isinstance(value, (int, float)) and math.isfinite(value) and value <= target:
            ds = ev["device_seconds"]
            return (ds["prepare"] + ds["train"]) / 3600.0
    return None


def _baseline_key(record: dict[str, Any]) -> str:
    """Everything that must match between a row and its baseline: all but seed and the conditioner."""
    import json

    cfg = dict(record["config"])
    for k in ("seed", "data_root", "conditioner"):
        cfg.pop(k, None)
    cfg["options"] = {k: v for k, v in cfg.get("options", {}).items() if k != "conditioner"}
    return json.dumps([cfg, record["device"]["type"]], sort_keys=True, default=str)


def build_rows(records: list[dict[str, Any]], target: float | None = None) -> list[dict[str, Any]]:
    """One row per (combination, device type) over the completed runs that have an FID."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in records:
        if r.get("status") == "completed" and r.get("best"):
            groups.setdefault((r["combination"], r["device"]["type"]), []).append(r)
    rows: list[dict[str, Any]] = []
    for (combination, device_type), runs in groups.items():
        runs.sort(key=lambda r: r["config"]["seed"])
        first = runs[0]["config"]
        rows.append({
            "combination": combination, **{a: first[a] for a in AXES},
            "seeds": [r["config"]["seed"] for r in runs], "metric": runs[0]["best"]["metric"],
            "best_fid": summarize([r["best"]["value"] for r in runs]),
            "device_hours_to_best": summarize([r["best"]["device_hours"] for r in runs]),
            "prepare_hours": summarize([r["best"].get("prepare_hours", 0.0) for r in runs]),
            "device_type": device_type, "unit": hours_label(device_type),
            "_runs": runs, "_baseline_key": _baseline_key(runs[0]),
        })
    baselines = {row["_baseline_key"]: row for row in rows if row["conditioner"] == BASELINE}
    for row in rows:
        base = baselines.get(row["_baseline_key"])
        row["baseline"] = base["combination"] if base else None
        row_target = target if target is not None else (base["best_fid"]["mean"] if base else None)
        row["target"] = row_target
        row["device_hours_to_target"] = _to_target(row["_runs"], row_target)
        mine = row["device_hours_to_target"]
        theirs = _to_target(base["_runs"], row_target) if base else None
        # a speed-up only where every seed of this row reached the target (a mean over the seeds that
        # happened to get there would flatter it); the baseline's seeds that never did are left out,
        # which can only understate the speed-up
        complete = theirs is not None and (row is base or mine["reached"] == mine["of"])
        row["speedup_vs_baseline"] = theirs["mean"] / mine["mean"] if (complete and mine["mean"] and theirs["mean"]) else None
    _label_variants(rows)
    for row in rows:
        del row["_runs"], row["_baseline_key"]
    rows.sort(key=lambda r: (r["device_type"], r["dataset"], r["denoiser"], r["guidance"], r["sampler"],
                             r["conditioner"] != BASELINE, r["conditioner"], r["combination"]))
    return rows


def _flat_config(config: dict[str, Any]) -> dict[str, Any]:
    flat = {k: v for k, v in config.items() if k not in ("options", "seed", "data_root")}
    for kind, opts in config.get("options", {}).items():
        flat.update({f"{kind}.{k}": v for k, v in opts.items()})
    return flat


def _label_variants(rows: list[dict[str, Any]]) -> None:
    """`variant`: the config keys that tell apart rows sharing the same axes (e.g. guidance.reject_threshold=0.5)."""
    by_axes: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        by_axes.setdefault((row["device_type"], *(row[a] for a in AXES)), []).append(row)
    for group in by_axes.values():
        flats = [_flat_config(row["_runs"][0]["config"]) for row in group]
        keys = sorted({k for f in flats for k in f if len({json.dumps(g.get(k), default=str) for g in flats}) > 1})
        for row, flat in zip(group, flats, strict=True):
            row["variant"] = " ".join(f"{k}={flat.get(k)}" for k in keys)


def _to_target(runs: list[dict[str, Any]], target: float | None) -> dict[str, Any]:
    if target is None:
        return {"mean": None, "ci95": None, "n": 0, "olympic": False, "reached": 0, "of": len(runs)}
    hours = [h for h in (hours_to_target(r, target) for r in runs) if h is not None]
    return {**summarize(hours), "reached": len(hours), "of": len(runs)}


# ---------------------------------------------------------------------------------------------
# printing


def fmt_stat(stat: dict[str, Any], digits: int = 3) -> str:
    if stat.get("mean") is None:
        return "—"
    text = f"{stat['mean']:.{digits}f}"
    if stat.get("ci95") is not None:
        text += f" ± {stat['ci95']:.{digits}f}"
    return text + (" (olympic)" if stat.get("olympic") else "")


def print_rows(rows: list[dict[str, Any]], title: str = "protobench report") -> None:
    from rich.markup import escape
    from rich.table import Table

    from protobench.cli import console

    c = console()
    if not rows:
        c.print("no completed runs with an FID in this results directory")
        return
    for device_type in sorted({r["device_type"] for r in rows}):
        unit = hours_label(device_type)
        table = Table(title=f"{title} — {unit} (mean ± 95% CI over seeds)")
        for col in ("dataset", "conditioner", "denoiser / guidance / sampler", "seeds"):
            table.add_column(col)
        table.add_column(escape(rows[0]["metric"]) + " best", justify="right")
        table.add_column(f"{unit} to best", justify="right")
        table.add_column(f"{unit} to target", justify="right")
        table.add_column("speedup vs random", justify="right")
        table.add_column(f"prepare {unit}", justify="right")
        for r in (r for r in rows if r["device_type"] == device_type):
            tt = r["device_hours_to_target"]
            to_target = "—" if r["target"] is None else f"{fmt_stat(tt, 4)} [{tt['reached']}/{tt['of']}] @ {r['target']:.2f}"
            speed = "—" if r["speedup_vs_baseline"] is None else f"{r['speedup_vs_baseline']:.2f}×"
            conditioner = r["conditioner"] + (f"\n{escape(r['variant'])}" if r.get("variant") else "")
            table.add_row(r["dataset"], conditioner, f"{r['denoiser']} / {r['guidance']} / {r['sampler']}",
                          str(len(r["seeds"])), fmt_stat(r["best_fid"], 2), fmt_stat(r["device_hours_to_best"], 4),
                          to_target, speed, fmt_stat(r["prepare_hours"], 4))
        c.print(table)
    c.print(escape("to target: [seeds that reached it/seeds] @ target FID (default: the random baseline's mean best); "
                   "speedup: baseline hours to target / this row's, shown only when all of this row's seeds reached it"))


# ---------------------------------------------------------------------------------------------
# compare


def resolve_run(spec: str, out: Path) -> Path:
    """A run folder from a path or a run id under `out`."""
    path = Path(spec)
    if (path / "config.json").exists():
        return path
    if (Path(out) / "runs" / spec / "config.json").exists():
        return Path(out) / "runs" / spec
    raise UsageError(f"no run {spec!r}: not a run folder and not a run id under {Path(out) / 'runs'}")


def load_side(spec: str, out: Path) -> list[dict[str, Any]]:
    """Report rows for a results directory (a sweep), or for one run (folder or id)."""
    from protobench.records import load_record
    from protobench.store import records

    path = Path(spec)
    if (path / "runs").is_dir():
        rows = build_rows(records(path, status="completed"))
    else:
        record = load_record(resolve_run(spec, out))
        if record["status"] != "completed":
            raise UsageError(f"run {record['run_id']} is {record['status']}, not completed")
        rows = build_rows([record])
    if not rows:
        raise UsageError(f"{spec}: no completed runs with an FID")
    return rows


def _label(row: dict[str, Any]) -> tuple:
    return tuple(row[a] for a in AXES) + (row["device_type"],)


def _mark(a: dict[str, Any], b: dict[str, Any]) -> str:
    """Lower is better for both FID and hours; overlapping 95% intervals are within noise."""
    if a["mean"] is None or b["mean"] is None:
        return "?"
    if a.get("ci95") is not None and b.get("ci95") is not None:
        if abs(a["mean"] - b["mean"]) <= a["ci95"] + b["ci95"]:
            return "within noise"
    return "better" if b["mean"] < a["mean"] else ("worse" if b["mean"] > a["mean"] else "same")


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
        entry = {"a": {k: a[k] for k in AXES}, "b": {k: b[k] for k in AXES}, "unit": a["unit"], "metrics": {}}
        for key in ("best_fid", "device_hours_to_best"):
            sa, sb = a[key], b[key]
            ratio = sb["mean"] / sa["mean"] if sa["mean"] and sb["mean"] is not None else None
            entry["metrics"][key] = {"a": sa, "b": sb, "ratio": ratio, "mark": _mark(sa, sb)}
        pairs.append(entry)
    if not pairs:
        raise UsageError("nothing to compare: no combination appears on both sides")
    return pairs


def print_comparison(pairs: list[dict[str, Any]], name_a: str, name_b: str) -> None:
    from rich.markup import escape
    from rich.table import Table

    from protobench.cli import console

    colour = {"better": "green", "worse": "red", "within noise": "yellow"}
    table = Table(title=f"B = {escape(name_b)} relative to A = {escape(name_a)} (ratio B/A; lower is better)")
    for col in ("A combination", "B combination", "quantity", "A", "B", "B/A", "mark"):
        table.add_column(col, justify="right" if col in ("A", "B", "B/A") else "left")
    for p in pairs:
        for key, m in p["metrics"].items():
            name = "best FID" if key == "best_fid" else f"{p['unit']} to best"
            ratio = "—" if m["ratio"] is None else f"{m['ratio']:.3f}"
            mark = m["mark"]
            table.add_row(" / ".join(p["a"].values()), " / ".join(p["b"].values()), name,
                          fmt_stat(m["a"], 4), fmt_stat(m["b"], 4), ratio,
                          f"[{colour.get(mark, 'white')}]{mark}[/]")
    console().print(table)
