"""The report: per combination, the best primary metric and the work to it over seeds, time to a target, speedup.

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
from protobench.records import PRIMARY_DEFAULTS, primary_key
from protobench.units import hours_label
from protobench.vocabulary import AXES, flatten_options

OLYMPIC_MIN_SEEDS = 5
BASELINE = "random"


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


#: how progress is counted: measured device-hours, or machine-independent work (prepare charged in each)
CLOCKS = ("device-hours", "images", "flops")


def metric_key(record: dict[str, Any], metric: str | None = None) -> str | None:
    """The key of the metric the report ranks by: `metric` (a name or a full key), else the run's
    `primary_metric`, else the first of PRIMARY_DEFAULTS it computed."""
    names = (metric,) if metric else (record.get("config", {}).get("primary_metric"), *PRIMARY_DEFAULTS)
    return primary_key(record.get("evals", []), names)


def higher_is_better(key: str) -> bool:
    """From the metric plugin (class-accuracy, is, cas, ... go up); lower is better when it cannot tell."""
    name = key.split("[", 1)[0]
    try:
        from protobench.plugins import get_registry

        return bool(get_registry().get("metric", name).attribute("higher_is_better", False))
    except Exception:
        return False


def clock_at(ev: dict[str, Any], clock: str = "device-hours", part: str = "total") -> float | None:
    """Work done up to evaluation `ev` on `clock`: prepare + train (or one `part`); None if not recorded."""
    if clock == "device-hours":
        amounts = {k: v / 3600.0 for k, v in ev["device_seconds"].items()}
    else:
        amounts = (ev.get("work") or {}).get(clock)
        if amounts is None:
            return None
        if clock == "flops":
            amounts = {k: v / 1e12 for k, v in amounts.items()}  # TFLOP
    if part == "total":
        return amounts.get("prepare", 0.0) + amounts.get("compile", 0.0) + amounts["train"]  # compile: 0 if eager
    return amounts.get(part, 0.0)


def _good(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def best_point(record: dict[str, Any], key: str, clock: str = "device-hours") -> dict[str, Any] | None:
    """The run's best evaluation on `key`: its value and the work (clock) spent to reach it."""
    scored = [e for e in record["evals"] if _good(e["metrics"].get(key))]
    if not scored:
        return None
    sign = -1.0 if higher_is_better(key) else 1.0
    best = min(scored, key=lambda e: (sign * e["metrics"][key], e["images_seen"]))
    return {"value": best["metrics"][key], "images_seen": best["images_seen"],
            "clock": clock_at(best, clock), "prepare": clock_at(best, clock, "prepare"),
            "device_hours": clock_at(best), "prepare_hours": clock_at(best, "device-hours", "prepare")}


def hours_to_target(record: dict[str, Any], target: float, key: str | None = None,
                    clock: str = "device-hours") -> float | None:
    """Work (prepare + train; device-hours by default) at the first evaluation that reaches `target`."""
    key = key or metric_key(record)
    if key is None:
        return None
    up = higher_is_better(key)
    for ev in sorted(record["evals"], key=lambda e: e["images_seen"]):
        value = ev["metrics"].get(key)
        if _good(value) and (value >= target if up else value <= target):
            return clock_at(ev, clock)
    return None


def _baseline_key(record: dict[str, Any]) -> str:
    """Everything that must match between a row and its baseline: all but seed and the conditioner."""
    import json

    cfg = dict(record["config"])
    for k in ("seed", "data_root", "conditioner"):
        cfg.pop(k, None)
    cfg["options"] = {k: v for k, v in cfg.get("options", {}).items() if k != "conditioner"}
    return json.dumps([cfg, record["device"]["type"]], sort_keys=True, default=str)


def build_rows(records: list[dict[str, Any]], target: float | None = None, metric: str | None = None,
               clock: str = "device-hours") -> list[dict[str, Any]]:
    """One row per (combination, device type, metric key, evaluator) over the completed runs that have the
    metric. `clock` is what `to_best`, `to_target` and the speed-up count; device-hours are always given."""
    if clock not in CLOCKS:
        raise UsageError(f"unknown clock {clock!r}; known clocks: {', '.join(CLOCKS)}")
    groups: dict[tuple, list[dict[str, Any]]] = {}
    points: dict[int, dict[str, Any]] = {}
    for r in records:
        key = metric_key(r, metric) if r.get("status") == "completed" else None
        point = best_point(r, key, clock) if key else None
        if point is None:
            continue
        points[id(r)] = point
        groups.setdefault((r["combination"], r["device"]["type"], key, _evaluator(r)), []).append(r)
    rows: list[dict[str, Any]] = []
    for (combination, device_type, key, evaluator), runs in groups.items():
        runs.sort(key=lambda r: r["config"]["seed"])
        first = runs[0]["config"]
        best = [points[id(r)] for r in runs]
        missing = [r["run_id"] for r, p in zip(runs, best, strict=True) if p["clock"] is None]
        if missing:
            raise UsageError(f"--clock {clock}: runs {', '.join(missing)} did not record it; "
                             "use --clock device-hours")
        best_stat = summarize([p["value"] for p in best])
        rows.append({
            "combination": combination, **{a: first[a] for a in AXES},
            "seeds": [r["config"]["seed"] for r in runs], "metric": key, "evaluator": evaluator,
            "higher_is_better": higher_is_better(key),
            "best": best_stat, "best_fid": best_stat,
            "device_hours_to_best": summarize([p["device_hours"] for p in best]),
            "prepare_hours": summarize([p["prepare_hours"] for p in best]),
            "clock": clock, "clock_unit": clock_unit(clock, device_type),
            "to_best": summarize([p["clock"] for p in best]), "prepare": summarize([p["prepare"] for p in best]),
            "images_to_best": summarize([p["images_seen"] for p in best]),
            "device_type": device_type, "unit": hours_label(device_type),
            **run_notes(runs),
            "_runs": runs, "_baseline_key": (_baseline_key(runs[0]), key, evaluator),
        })
    baselines = {row["_baseline_key"]: row for row in rows if row["conditioner"] == BASELINE}
    for row in rows:
        base = baselines.get(row["_baseline_key"])
        row["baseline"] = base["combination"] if base else None
        row_target = target if target is not None else (_reliable_target(base) if base else None)
        row["target"] = row_target
        row["device_hours_to_target"] = _to_target(row["_runs"], row_target, row["metric"])
        row["to_target"] = _to_target(row["_runs"], row_target, row["metric"], clock)
        mine = row["to_target"]
        theirs = _to_target(base["_runs"], row_target, row["metric"], clock) if base else None
        # a speed-up only where every seed of this row reached the target (a mean over the seeds that
        # happened to get there would flatter it); the baseline's seeds that never did are left out,
        # which can only understate the speed-up
        complete = theirs is not None and (row is base or mine["reached"] == mine["of"])
        row["speedup_vs_baseline"] = theirs["mean"] / mine["mean"] if (complete and mine["mean"] and theirs["mean"]) else None
    _label_variants(rows)
    for row in rows:
        del row["_runs"], row["_baseline_key"]
    rows.sort(key=lambda r: (r["device_type"], r["dataset"], r["denoiser"], r["guidance"], r["sampler"],
                             r["conditioner"] != BASELINE, r["conditioner"] != "none", r["conditioner"],
                             r["combination"]))
    return rows


def run_notes(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """What a row says besides quality and work: the acceptance rate of rejection sampling (each seed's mean
    over its evaluations), the conditioner's diagnostics at the last evaluation (e.g. prototype shift and
    geometry), and whether a pretrained network's compute is left uncharged."""
    rates = [[e["acceptance_rate"] for e in r["evals"] if e.get("acceptance_rate") is not None] for r in runs]
    last = [(r["evals"][-1].get("conditioner") or {}) if r["evals"] else {} for r in runs]
    keys = sorted({k for d in last for k, v in d.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})
    return {
        "acceptance_rate": summarize([sum(x) / len(x) for x in rates if x]) if any(rates) else None,
        "diagnostics": {k: summarize([d[k] for d in last if k in d]) for k in keys},
        "pretrained": any(d.get("pretrained_backbone") for d in last)
        or any((v or {}).get("pretrained_backbone") for r in runs for v in r.get("prepare", {}).values()
               if isinstance(v, dict)),
    }


def _reliable_target(base: dict[str, Any]) -> float:
    """The default target: the quality every seed of the baseline reached (its worst best), as MLPerf sets a
    target the reference reaches reliably. The baseline is then 3/3 by construction; another row reaches it
    only if each of its seeds is at least as good as the baseline's worst."""
    bests = [best_point(r, base["metric"])["value"] for r in base["_runs"]]
    return min(bests) if base["higher_is_better"] else max(bests)


def _evaluator(record: dict[str, Any]) -> str | None:
    """The digest of the evaluator(s) its metrics came from; numbers from different ones are never pooled."""
    instruments = record.get("instruments") or {}
    return ",".join(f"{k}={str(v)[:12]}" for k, v in sorted(instruments.items())) or None


def clock_unit(clock: str, device_type: str) -> str:
    return {"device-hours": hours_label(device_type), "images": "images", "flops": "TFLOP"}[clock]


def _flat_config(config: dict[str, Any]) -> dict[str, Any]:
    flat = {k: v for k, v in config.items() if k not in ("options", "seed", "data_root")}
    flat.update(flatten_options(config.get("options", {})))
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


def _to_target(runs: list[dict[str, Any]], target: float | None, key: str,
               clock: str = "device-hours") -> dict[str, Any]:
    if target is None:
        return {"mean": None, "ci95": None, "n": 0, "olympic": False, "reached": 0, "of": len(runs)}
    hours = [h for h in (hours_to_target(r, target, key, clock) for r in runs) if h is not None]
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


def fmt_work(stat: dict[str, Any], clock: str) -> str:
    if clock == "images" and stat.get("mean") is not None:
        text = f"{stat['mean'] / 1000:,.1f}k"
        if stat.get("ci95") is not None:
            text += f" ± {stat['ci95'] / 1000:,.1f}k"
        return text
    if clock == "flops" and stat.get("mean") is not None:
        text = f"{stat['mean']:.4g}"
        return text + (f" ± {stat['ci95']:.2g}" if stat.get("ci95") is not None else "")
    return fmt_stat(stat, 4)


def render_rows(rows: list[dict[str, Any]], title: str = "protobench report") -> list[Any]:
    """Rich tables (one per device type and metric) and a legend; the CLI prints them."""
    from rich.markup import escape
    from rich.table import Table
    from rich.text import Text

    if not rows:
        return [Text("no completed runs with a quality metric in this results directory")]
    out: list[Any] = []
    for device_type, key in sorted({(r["device_type"], r["metric"]) for r in rows}):
        group = [r for r in rows if r["device_type"] == device_type and r["metric"] == key]
        clock, unit = group[0]["clock"], group[0]["clock_unit"]
        arrow = "↑" if group[0]["higher_is_better"] else "↓"
        shared = [a for a in AXES if a != "conditioner" and len({r[a] for r in group}) == 1]
        setting = ", ".join(f"{a} {group[0][a]}" for a in shared)
        table = Table(title=f"{title}: {escape(key)} {arrow}, {unit} (mean ± 95% CI over seeds)",
                      caption=escape(setting), title_justify="left", caption_justify="left")
        varying = [a for a in AXES if a != "conditioner" and a not in shared]
        for col in (*varying, "conditioner", "seeds"):
            table.add_column(col, no_wrap=True)  # names stay whole; the numbers wrap on a narrow terminal
        for col in ("best", "to best", "to target", "speed-up", "prepare"):
            table.add_column(col, justify="right")
        accepting = any(r.get("acceptance_rate") for r in group)
        diagnosed = any(r.get("diagnostics") for r in group)
        if accepting:
            table.add_column("accepted", justify="right")
        if diagnosed:
            table.add_column("conditioner (last eval)")
        for r in group:
            tt = r["to_target"]
            to_target = "—" if r["target"] is None else f"{fmt_work(tt, clock)} [{tt['reached']}/{tt['of']}]"
            speed = "—" if r["speedup_vs_baseline"] is None else f"{r['speedup_vs_baseline']:.2f}×"
            conditioner = r["conditioner"] + (" †" if r.get("pretrained") else "") + \
                (f"\n{escape(r['variant'])}" if r.get("variant") else "")
            notes = ([fmt_stat(r["acceptance_rate"]) if r.get("acceptance_rate") else "—"] if accepting else []) + \
                (["\n".join(f"{k} {fmt_stat(v)}" for k, v in (r.get("diagnostics") or {}).items()) or "—"]
                 if diagnosed else [])
            table.add_row(*(str(r[a]) for a in varying), conditioner, str(len(r["seeds"])), fmt_stat(r["best"], 2),
                          fmt_work(r["to_best"], clock), to_target, speed, fmt_work(r["prepare"], clock), *notes)
        out.append(table)
        targets = sorted({r["target"] for r in group if r["target"] is not None})
        at = f" @ {', '.join(f'{t:.2f}' for t in targets)}" if targets else ""
        out.append(Text(f"best: the best {key} of each seed; to best / to target: {unit} (prepare + train) until then; "
                        f"target{at} (--target, else the worst best of the random baseline's seeds), [seeds that reached it/seeds]; "
                        f"speed-up: the baseline's {unit} to target / the row's, only when all its seeds reached it; "
                        "prepare (e.g. Stage I) is included in every column and also shown apart."
                        + ("; accepted: the share of draws rejection sampling kept (the rest redrawn, and dropped "
                           "after 10 rounds)" if accepting else "")
                        + ("; conditioner: prototype_shift = ‖table − start‖/‖start‖ in diffusion training, "
                           "stage1_shift the same in Stage I, prototype_geometry = correlation of the table's "
                           "pairwise distances with the Stage-I class means'" if diagnosed else "")
                        + ("; †: a pretrained backbone whose pretraining compute is not charged"
                           if any(r.get("pretrained") for r in group) else "")))
    return out


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
        raise UsageError(f"{spec}: no completed runs with a metric to rank by")
    return rows


def _label(row: dict[str, Any]) -> tuple:
    return tuple(row[a] for a in AXES) + (row["device_type"],)


def _mark(a: dict[str, Any], b: dict[str, Any], higher_is_better: bool = False) -> str:
    """Lower is better for hours and most metrics; overlapping 95% intervals are within noise."""
    if a["mean"] is None or b["mean"] is None:
        return "?"
    if a.get("ci95") is not None and b.get("ci95") is not None:
        if abs(a["mean"] - b["mean"]) <= a["ci95"] + b["ci95"]:
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
