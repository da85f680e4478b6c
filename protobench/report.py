"""The report: per combination, the best primary metric and the work to it over seeds, the work to a target
fixed before the runs, and each arm against the baseline seed by seed.

Single arm: mean ± the half-width of its 95% Student-t interval over seeds (stats.summarize). Arm vs baseline:
paired by seed (stats.paired): the speed-up (baseline work to target / the arm's) and the difference in best
metric, each with a 95% interval, and the minimum detectable difference. Work to target is interpolated
linearly in log work between the two evaluations that bracket the crossing (the last one that missed the
target and the first that reached it); a crossing at the first evaluation takes its work (an upper bound).
Device-hours are (prepare + train) device-seconds / 3600; they are labelled GPU-hours or CPU-hours by the
device the runs used, and runs on different device types are never pooled.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from protobench.errors import UsageError
from protobench.records import PRIMARY_DEFAULTS, best_eval, higher_is_better, primary_key
from protobench.stats import METHOD_NAME, paired, summarize, t_quantile  # noqa: F401 (t_quantile: public)
from protobench.units import hours_label
from protobench.vocabulary import AXES, flatten_options

BASELINE = "random"
#: how progress is counted: measured device-hours, or machine-independent work (prepare charged in each)
CLOCKS = ("device-hours", "images", "flops")
#: metrics whose expectation does not depend on the number of samples: a target carries over between counts
UNBIASED = ("intra-kid", "kid")
INTERPOLATION = "linear in log work between the two evaluations that bracket the crossing"


def metric_key(record: dict[str, Any], metric: str | None = None) -> str | None:
    """The key of the metric the report ranks by: `metric` (a name or a full key), else the run's
    `primary_metric`, else the first of PRIMARY_DEFAULTS it computed."""
    names = (metric,) if metric else (record.get("config", {}).get("primary_metric"), *PRIMARY_DEFAULTS)
    return primary_key(record.get("evals", []), names)


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
    """The run's best evaluation on `key` (records.best_eval): its value and the work (clock) spent to reach it."""
    best = best_eval(record["evals"], key)
    if best is None:
        return None
    return {"value": best["metrics"][key], "images_seen": best["images_seen"],
            "clock": clock_at(best, clock), "prepare": clock_at(best, clock, "prepare"),
            "device_hours": clock_at(best), "prepare_hours": clock_at(best, "device-hours", "prepare")}


def crossing(record: dict[str, Any], target: float, key: str, clock: str = "device-hours") -> dict[str, Any]:
    """{"work", "kind"}: the work (prepare + train) at which the run first reached `target`, interpolated
    linearly in log work between the bracketing evaluations; kind is "between" (before the last evaluation),
    "at_first" (already at the first: its work, an upper bound), "at_last" (only at the last) or "never"."""
    up = higher_is_better(key)
    evals = [e for e in sorted(record["evals"], key=lambda e: e["images_seen"]) if _good(e["metrics"].get(key))]
    for i, ev in enumerate(evals):
        value = ev["metrics"][key]
        if not (value >= target if up else value <= target):
            continue
        work = clock_at(ev, clock)
        kind = "at_last" if i == len(evals) - 1 else "at_first" if i == 0 else "between"
        if i > 0 and work is not None:
            prev = evals[i - 1]
            w0, v0 = clock_at(prev, clock), prev["metrics"][key]
            if w0 and w0 > 0 and work > 0 and v0 != value:
                f = (v0 - target) / (v0 - value)  # in (0, 1]: the previous evaluation missed the target
                work = math.exp(math.log(w0) + f * (math.log(work) - math.log(w0)))
        return {"work": work, "kind": kind}
    return {"work": None, "kind": "never"}


def hours_to_target(record: dict[str, Any], target: float, key: str | None = None,
                    clock: str = "device-hours") -> float | None:
    """Work (prepare + train; device-hours by default) to `target`, interpolated (see `crossing`)."""
    key = key or metric_key(record)
    if key is None:
        return None
    return crossing(record, target, key, clock)["work"]


def _options_agree(row_run: dict[str, Any], base_run: dict[str, Any]) -> bool:
    """The conditioner options both conditioners have take the same values (e.g. conditioner.dim)."""
    mine = row_run["config"].get("options", {}).get("conditioner", {})
    theirs = base_run["config"].get("options", {}).get("conditioner", {})
    return all(json.dumps(mine[k], default=str) == json.dumps(theirs[k], default=str) for k in set(mine) & set(theirs))


def _baseline_key(record: dict[str, Any]) -> str:
    """What must match between a row and its baseline besides the shared conditioner options: all but the
    seed, the conditioner and its options (those are matched by `_options_agree`)."""
    cfg = dict(record["config"])
    for k in ("seed", "data_root", "conditioner"):
        cfg.pop(k, None)
    cfg["options"] = {k: v for k, v in cfg.get("options", {}).items() if k != "conditioner"}
    return json.dumps([cfg, record["device"]["type"]], sort_keys=True, default=str)


def _baseline_for(row: dict[str, Any], candidates: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The one baseline row whose settings and shared conditioner options match; two are refused in one line."""
    found = [b for b in candidates if b["_baseline_key"] == row["_baseline_key"]
             and _options_agree(row["_runs"][0], b["_runs"][0])]
    if row in found:
        return row
    if len(found) > 1:
        names = "; ".join(sorted(b.get("variant") or b["combination"] for b in found))
        raise UsageError(f"ambiguous baseline for {row['conditioner']} ({row.get('variant') or row['combination']}): "
                         f"{len(found)} {BASELINE} rows match ({names}); sweep the option on both arms or report "
                         "each setting from its own --out")
    return found[0] if found else None


def declared_target(runs: list[dict[str, Any]], key: str) -> dict[str, Any] | None:
    """The target the runs' dataset preset declares for this metric (written into each run's config.json)."""
    name = key.split("[", 1)[0]
    for r in runs:
        t = r.get("target")
        if isinstance(t, dict) and t.get("metric") == name and _good(t.get("value")):
            return t
    return None


def build_rows(records: list[dict[str, Any]], target: float | None = None, metric: str | None = None,
               clock: str = "device-hours") -> list[dict[str, Any]]:
    """One row per (combination, device type, metric key, evaluator) over the completed runs that have the
    metric. `clock` is what `to_best`, `to_target` and the speed-up count; every recorded clock is also given
    under `clocks`. The target is `target` (--target), else the one the dataset's preset declares, else none:
    it is never taken from the runs it scores."""
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
        best_stat["se"] = _mean_se(runs, best, key)
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
            "final": _final(runs), "evaluations": summarize([len(r["evals"]) for r in runs]),
            "device_type": device_type, "unit": hours_label(device_type),
            **run_notes(runs),
            "_runs": runs, "_best": best, "_baseline_key": _baseline_key(runs[0]) + json.dumps([key, evaluator]),
        })
    _label_variants(rows)
    candidates = [row for row in rows if row["conditioner"] == BASELINE]
    for row in rows:
        base = _baseline_for(row, candidates)
        row["baseline"] = base["combination"] if base else None
        declared = declared_target(row["_runs"], row["metric"]) if target is None else None
        row["target"] = target if target is not None else (declared["value"] if declared else None)
        row["target_source"] = "flag" if target is not None else "preset" if declared else None
        if declared:
            row["target_note"] = declared.get("how")
            row["target_samples"] = declared.get("samples")
            counts = {e.get("samples") for r in row["_runs"] for e in r["evals"]} - {None}
            if declared.get("samples") and counts - {declared["samples"]} and row["metric"].split("[")[0] not in UNBIASED:
                # a biased metric compared with a target set at another sample count: said, not hidden
                row["target_note"] = (f"{declared.get('how')}; declared at {declared['samples']} samples, these runs "
                                      f"evaluate at {', '.join(map(str, sorted(counts)))}: its bias differs")
        crossings = {c: [crossing(r, row["target"], row["metric"], c) if row["target"] is not None
                         else {"work": None, "kind": "never"} for r in row["_runs"]] for c in CLOCKS}
        row["_crossings"] = crossings
        kinds = [c["kind"] for c in crossings[clock]] if row["target"] is not None else []
        row["crossings"] = {k: kinds.count(k) for k in ("between", "at_first", "at_last", "never")}
        row["device_hours_to_target"] = _to_target(crossings["device-hours"], row["target"])
        row["to_target"] = _to_target(crossings[clock], row["target"])
        row["clocks"] = {c: {"unit": clock_unit(c, device_type), "to_target": _to_target(crossings[c], row["target"]),
                             "to_best": summarize([v for v in (clock_at(best_eval(r["evals"], row["metric"]), c)
                                                               for r in row["_runs"]) if v is not None])}
                         for c in CLOCKS}
        row["_base"] = base
    for row in rows:
        base = row.pop("_base")
        row["speedup_vs_baseline"] = None
        if base is None:
            continue
        if row is base:
            row["speedup_vs_baseline"] = 1.0 if row["target"] is not None and row["crossings"]["never"] == 0 else None
            continue
        row["paired"] = _paired(row, base, clock)  # without a target: the difference in best only
        for c in CLOCKS:
            row["clocks"][c]["work_ratio"] = _paired(row, base, c)["work_ratio"]
        p = row["paired"]
        # a speed-up only where every shared seed of both reached the target: censored seeds are left out of
        # the ratio, so a speed-up resting on fewer seeds is not shown as one (the counts say why)
        if p["seeds_reached"] == p["seeds"] and p["seeds"]:
            row["speedup_vs_baseline"] = p["work_ratio"]["value"]
    for row in rows:
        del row["_runs"], row["_baseline_key"], row["_best"], row["_crossings"]
    rows.sort(key=lambda r: (r["device_type"], r["dataset"], r["denoiser"], r["guidance"], r["sampler"],
                             r["conditioner"] != BASELINE, r["conditioner"] != "none", r["conditioner"],
                             r["combination"]))
    return rows


def _paired(row: dict[str, Any], base: dict[str, Any], clock: str) -> dict[str, Any]:
    """The row against its baseline over the seeds both have (same seed: same data order and noise draws)."""
    mine = {r["config"]["seed"]: (c["work"], p["value"]) for r, c, p in
            zip(row["_runs"], row["_crossings"][clock], row["_best"], strict=True)}
    theirs = {r["config"]["seed"]: (c["work"], p["value"]) for r, c, p in
              zip(base["_runs"], base["_crossings"][clock], base["_best"], strict=True)}
    seeds = sorted(set(mine) & set(theirs))
    return paired([theirs[s][0] for s in seeds], [mine[s][0] for s in seeds],
                  [theirs[s][1] for s in seeds], [mine[s][1] for s in seeds])


def _mean_se(runs: list[dict[str, Any]], best: list[dict[str, Any]], key: str) -> float | None:
    """The mean over seeds of the best evaluation's own standard error (bootstrap over its samples)."""
    ses = []
    for r, p in zip(runs, best, strict=True):
        ev = next((e for e in r["evals"] if e["images_seen"] == p["images_seen"]), None)
        se = (ev or {}).get("metrics_se", {}).get(key)
        if _good(se):
            ses.append(se)
    return sum(ses) / len(ses) if ses and len(ses) == len(runs) else None


def _final(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Each metric at the last evaluation (the careful one, when it drew final_eval_samples), over seeds:
    {key: {mean, ci95, n, se, samples}}."""
    values: dict[str, list[float]] = {}
    ses: dict[str, list[float]] = {}
    samples: set[Any] = set()
    for r in runs:
        if not r["evals"]:
            continue
        last = max(r["evals"], key=lambda e: e["images_seen"])
        block = last.get("final") or last
        samples.add(block.get("samples"))
        for k, v in block.get("metrics", {}).items():
            if "/" not in k and _good(v):
                values.setdefault(k, []).append(v)
                se = (block.get("metrics_se") or {}).get(k)
                if _good(se):
                    ses.setdefault(k, []).append(se)
    out = {}
    for k, vals in sorted(values.items()):
        if len(vals) == len(runs):
            out[k] = {**summarize(vals), "samples": next(iter(samples)) if len(samples) == 1 else None}
            if len(ses.get(k, [])) == len(runs):
                out[k]["se"] = sum(ses[k]) / len(ses[k])
    return out


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


def _to_target(crossings: list[dict[str, Any]], target: float | None) -> dict[str, Any]:
    if target is None:
        return {"mean": None, "ci95": None, "n": 0, "reached": 0, "of": len(crossings)}
    work = [c["work"] for c in crossings if c["work"] is not None]
    return {**summarize(work), "reached": len(work), "of": len(crossings)}


# ---------------------------------------------------------------------------------------------
# printing


def _num(x: float | None, digits: int = 3) -> str:
    if x is None:
        return "—"
    if abs(x) < 1e-10:  # rounding noise of a spread that is zero
        x = 0.0
    if x != 0 and (abs(x) >= 1e5 or abs(x) < 1e-3):
        return f"{x:.{digits - 1}e}"
    return f"{x:#.{digits}g}".rstrip(".")  # significant zeros kept: 8.00, not 8


def fmt_stat(stat: dict[str, Any], digits: int = 3) -> str:
    """mean ± 95% half-width, in `digits` significant figures (the half-width in two)."""
    if stat.get("mean") is None:
        return "—"
    text = _num(stat["mean"], digits)
    if stat.get("ci95") is not None:
        text += f"±{_num(stat['ci95'], 2)}"
    return text


def fmt_work(stat: dict[str, Any], clock: str) -> str:
    if clock == "images" and stat.get("mean") is not None:
        text = f"{stat['mean'] / 1000:.3g}k"
        if stat.get("ci95") is not None:
            text += f"±{stat['ci95'] / 1000:.2g}k"
        return text
    return fmt_stat(stat, 3)


def fmt_interval(iv: dict[str, Any] | None, ratio: bool = False, digits: int = 3) -> str:
    """value [low, high]; a ratio gets ×."""
    if not iv or iv.get("value") is None:
        return "—"
    mark = "×" if ratio else ""
    sign = "" if ratio else "+" if iv["value"] > 0 else ""
    text = f"{sign}{_num(iv['value'], digits)}{mark}"
    if iv.get("low") is not None:
        text += f" [{_num(iv['low'], digits)}, {_num(iv['high'], digits)}]"
    return text


def _crossed(row: dict[str, Any]) -> str:
    c = row["crossings"]
    if row["target"] is None:
        return "—"
    return f"{c['between'] + c['at_first']}/{c['at_last']}/{c['never']}"


def _speedup(row: dict[str, Any], work_ratio: dict[str, Any] | None) -> str:
    if row["conditioner"] == BASELINE and row.get("baseline") == row["combination"]:
        return "baseline"
    if not row.get("paired") or not work_ratio or work_ratio.get("value") is None:
        return "—"
    p = row["paired"]
    text = fmt_interval(work_ratio, ratio=True)
    if p["seeds_reached"] < p["seeds"]:
        text += f" ({p['seeds_reached']}/{p['seeds']})"  # censored seeds left out
    elif row["crossings"]["at_last"]:
        text += "*"  # rests on crossings at the last evaluation
    return text


def render_rows(rows: list[dict[str, Any]], title: str = "protobench report", clock: str | None = None,
                wide: bool = False) -> list[Any]:
    """Rich tables (per device type and metric) and a footnote; the CLI prints them. The default layout fits
    80 columns (two tables: per arm, and paired against the baseline); `wide` puts everything in one table,
    with the final evaluation's metrics and, for clock "all", every clock."""
    from rich import box
    from rich.markup import escape
    from rich.table import Table
    from rich.text import Text

    if not rows:
        return [Text("no completed runs with a quality metric in this results directory")]
    out: list[Any] = []
    clocks = list(CLOCKS) if clock == "all" else [clock or rows[0]["clock"]]
    for device_type, key in sorted({(r["device_type"], r["metric"]) for r in rows}):
        group = [r for r in rows if r["device_type"] == device_type and r["metric"] == key]
        arrow = "↑" if group[0]["higher_is_better"] else "↓"
        shared = [a for a in AXES if a != "conditioner" and len({r[a] for r in group}) == 1]
        varying = [a for a in AXES if a != "conditioner" and a not in shared]
        setting = ", ".join(f"{a} {group[0][a]}" for a in shared)
        finals = sorted({k for r in group for k in r["final"] if k != key}) if wide else []

        def table(name: str, varying: list[str] = varying) -> Table:
            t = Table(title=name, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1))
            for col in (*varying, "arm"):
                t.add_column(col, no_wrap=True, overflow="fold")
            return t

        def names(r: dict[str, Any], varying: list[str] = varying) -> list[str]:
            arm = r["conditioner"] + (" †" if r.get("pretrained") else "") + \
                (f"\n{escape(r['variant'])}" if r.get("variant") else "")
            return [*(str(r[a]) for a in varying), arm]

        accepting = any(r.get("acceptance_rate") for r in group)
        diagnosed = any(r.get("diagnostics") for r in group)

        def notes(r: dict[str, Any], accepting: bool = accepting) -> list[str]:
            return [fmt_stat(r["acceptance_rate"]) if r.get("acceptance_rate") else "—"] if accepting else []

        def diagnostics(r: dict[str, Any]) -> str:
            return "\n".join(f"{k} {fmt_stat(v)}" for k, v in (r.get("diagnostics") or {}).items()) or "—"

        head = f"{escape(key)} {arrow} — {escape(setting)}"
        if wide:
            t = table(f"{title}: {head}")
            cols = ["n", "best", "best se", f"prepare ({clock_unit(group[0]['clock'], device_type)})"]
            for c in clocks:
                cols += [f"to target ({clock_unit(c, device_type)})", f"speed-up ({clock_unit(c, device_type)})"]
            cols += ["crossed", "Δbest [95%]", "mde", *(f"final {escape(k.split('[', 1)[0])}" for k in finals)]
            cols += ["accepted"] if accepting else []
            for col in cols:
                t.add_column(col, justify="right", no_wrap=True)
            if diagnosed:
                t.add_column("conditioner (last eval)", no_wrap=True)
            for r in group:
                cells = [str(len(r["seeds"])), fmt_stat(r["best"]), _num(r["best"].get("se"), 2),
                         fmt_work(r["prepare"], r["clock"])]
                for c in clocks:
                    cells += [fmt_work(r["clocks"][c]["to_target"], c),
                              _speedup(r, r["clocks"][c].get("work_ratio") or (r.get("paired") or {}).get("work_ratio")
                                       if c == r["clock"] else r["clocks"][c].get("work_ratio"))]
                p = r.get("paired") or {}
                cells += [_crossed(r), fmt_interval(p.get("best_difference")), _num(p.get("mde"), 2)]
                for k in finals:
                    f = r["final"].get(k)
                    cells.append(fmt_stat(f) + (f" (se {_num(f['se'], 2)})" if f and f.get("se") is not None else "")
                                 if f else "—")
                t.add_row(*names(r), *cells, *notes(r), *([diagnostics(r)] if diagnosed else []))
            out.append(t)
        else:
            t = table(f"{title}: {head}, mean±95% CI")
            unit = clock_unit(clocks[0], device_type)
            for col in ("n", "best", "se", f"to target, {unit}", "crossed", *(["accepted"] if accepting else [])):
                t.add_column(col, justify="right", no_wrap=True)
            for r in group:
                t.add_row(*names(r), str(len(r["seeds"])), fmt_stat(r["best"]), _num(r["best"].get("se"), 2),
                          fmt_work(r["clocks"][clocks[0]]["to_target"], clocks[0]), _crossed(r), *notes(r))
            out.append(t)
            if diagnosed:  # multi-line text: a table of its own, so the numbers above stay within 80 columns
                t = table("the conditioner at the last evaluation")
                t.add_column("diagnostics", no_wrap=True)
                for r in group:
                    t.add_row(*names(r), diagnostics(r))
                out.append(t)
            for c in clocks:
                t = table(f"paired with {BASELINE}, seed by seed ({clock_unit(c, device_type)})")
                for col in ("speed-up [95%]", "Δbest [95%]", "mde"):
                    t.add_column(col, justify="right", no_wrap=True)
                for r in group:
                    p = r.get("paired") or {}
                    t.add_row(*names(r), _speedup(r, r["clocks"][c].get("work_ratio")),
                              fmt_interval(p.get("best_difference")), _num(p.get("mde"), 2))
                out.append(t)
        targets = sorted({(r["target"], r["target_source"], r.get("target_note")) for r in group
                          if r["target"] is not None}, key=str)
        if targets:
            at = "; ".join(f"{_num(v, 4)} ({src}{': ' + note if note else ''})" for v, src, note in targets)
        else:
            at = "none (pass --target, or declare one in the dataset's preset): no work to target, no speed-up"
        out.append(Text(
            f"best: each seed's best {key} (its bootstrap se beside it). target {at}. "
            f"to target: work (prepare + train) until the target, interpolated {INTERPOLATION}. "
            "crossed: seeds that reached it before the last evaluation / only at the last / never. "
            "speed-up: the baseline's work to target / the arm's, geometric mean over the seeds both reached "
            "(> 1: faster; * rests on last-evaluation crossings; (k/n): only k of n seeds reached it). "
            f"Δbest: arm − baseline best. Intervals: {METHOD_NAME}, 95%. mde: the Δbest a 5% paired t-test "
            "detects with 80% power at this many seeds. Stage I (prepare) is charged in every clock."
            + (" accepted: the share of draws rejection sampling kept (the rest redrawn, and dropped after 10 "
               "rounds)." if accepting else "")
            + (" conditioner: prototype_shift = ‖table − start‖/‖start‖ in diffusion training, stage1_shift the "
               "same in Stage I, prototype_geometry = correlation of the table's pairwise distances with the "
               "Stage-I class means'." if diagnosed else "")
            + (" †: a pretrained backbone whose pretraining compute is not charged."
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
