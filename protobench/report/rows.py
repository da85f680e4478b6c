"""The report's rows: per combination, the best primary metric and the work to it over seeds, the work to a
target fixed before the runs, and each arm against the baseline seed by seed.

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
from typing import Any

from protobench.errors import UsageError
from protobench.records import best_eval, higher_is_better
from protobench.report.work import (
    CLOCKS,
    best_point,
    clock_at,
    clock_unit,
    crossing,
    finite,
    metric_key,
    to_target,
)
from protobench.stats import paired, summarize
from protobench.units import hours_label
from protobench.vocabulary import AXES, flatten_options

BASELINE = "random"
#: metrics whose expectation does not depend on the number of samples: a target carries over between counts
UNBIASED = ("intra-kid", "kid")


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
        if isinstance(t, dict) and t.get("metric") == name and finite(t.get("value")):
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
    groups, points = _groups(records, metric, clock)
    rows = [_arm_row(group, runs, points, clock) for group, runs in groups.items()]
    _label_variants(rows)
    candidates = [row for row in rows if row["conditioner"] == BASELINE]
    bases = {}
    for row in rows:
        base = _baseline_for(row, candidates)
        row["baseline"] = base["combination"] if base else None
        _set_target(row, target)
        _set_work_to_target(row, clock)
        bases[id(row)] = base
    for row in rows:
        _set_speedup(row, bases[id(row)], clock)
    for row in rows:
        del row["_runs"], row["_baseline_key"], row["_best"], row["_crossings"]
    rows.sort(key=lambda r: (r["device_type"], r["dataset"], r["denoiser"], r["guidance"], r["sampler"],
                             r["conditioner"] != BASELINE, r["conditioner"] != "none", r["conditioner"],
                             r["combination"]))
    return rows


def _groups(records: list[dict[str, Any]], metric: str | None, clock: str) -> tuple[dict, dict]:
    """The completed runs with the metric by (combination, device type, metric key, evaluator), and each run's
    best point (by id of its record)."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    points: dict[int, dict[str, Any]] = {}
    for r in records:
        key = metric_key(r, metric) if r.get("status") == "completed" else None
        point = best_point(r, key, clock) if key else None
        if point is None:
            continue
        points[id(r)] = point
        groups.setdefault((r["combination"], r["device"]["type"], key, evaluator(r)), []).append(r)
    return groups, points


def _arm_row(group: tuple, runs: list[dict[str, Any]], points: dict[int, dict[str, Any]], clock: str) -> dict:
    """One arm over its seeds: best value, work to best, the final evaluation and the notes."""
    combination, device_type, key, evaluated_by = group
    runs.sort(key=lambda r: r["config"]["seed"])
    first = runs[0]["config"]
    best = [points[id(r)] for r in runs]
    missing = [r["run_id"] for r, p in zip(runs, best, strict=True) if p["clock"] is None]
    if missing:
        raise UsageError(f"--clock {clock}: runs {', '.join(missing)} did not record it; "
                         "use --clock device-hours")
    best_stat = summarize([p["value"] for p in best])
    best_stat["se"] = _mean_se(runs, best, key)
    return {
        "combination": combination, **{a: first[a] for a in AXES},
        "seeds": [r["config"]["seed"] for r in runs], "metric": key, "evaluator": evaluated_by,
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
        "_runs": runs, "_best": best, "_baseline_key": _baseline_key(runs[0]) + json.dumps([key, evaluated_by]),
    }


def _set_target(row: dict[str, Any], target: float | None) -> None:
    """The row's target: the flag's, else the preset's (with how it was set), else none."""
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


def _set_work_to_target(row: dict[str, Any], clock: str) -> None:
    """Each seed's crossing on every clock, how many crossed where, and the work to target and to best."""
    crossings = {c: [crossing(r, row["target"], row["metric"], c) if row["target"] is not None
                     else {"work": None, "kind": "never"} for r in row["_runs"]] for c in CLOCKS}
    row["_crossings"] = crossings
    kinds = [c["kind"] for c in crossings[clock]] if row["target"] is not None else []
    row["crossings"] = {k: kinds.count(k) for k in ("between", "at_first", "at_last", "never")}
    row["device_hours_to_target"] = to_target(crossings["device-hours"], row["target"])
    row["to_target"] = to_target(crossings[clock], row["target"])
    row["clocks"] = {c: {"unit": clock_unit(c, row["device_type"]), "to_target": to_target(crossings[c], row["target"]),
                         "to_best": summarize([v for v in (clock_at(best_eval(r["evals"], row["metric"]), c)
                                                           for r in row["_runs"]) if v is not None])}
                     for c in CLOCKS}


def _set_speedup(row: dict[str, Any], base: dict[str, Any] | None, clock: str) -> None:
    """The row paired with its baseline seed by seed, and the speed-up where every shared seed reached the target."""
    row["speedup_vs_baseline"] = None
    if base is None:
        return
    if row is base:
        row["speedup_vs_baseline"] = 1.0 if row["target"] is not None and row["crossings"]["never"] == 0 else None
        return
    row["paired"] = _paired(row, base, clock)  # without a target: the difference in best only
    for c in CLOCKS:
        row["clocks"][c]["work_ratio"] = _paired(row, base, c)["work_ratio"]
    p = row["paired"]
    # a speed-up only where every shared seed of both reached the target: censored seeds are left out of
    # the ratio, so a speed-up resting on fewer seeds is not shown as one (the counts say why)
    if p["seeds_reached"] == p["seeds"] and p["seeds"]:
        row["speedup_vs_baseline"] = p["work_ratio"]["value"]


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
        if finite(se):
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
            if "/" not in k and finite(v):
                values.setdefault(k, []).append(v)
                se = (block.get("metrics_se") or {}).get(k)
                if finite(se):
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


def evaluator(record: dict[str, Any]) -> str | None:
    """The digest of the evaluator(s) its metrics came from; numbers from different ones are never pooled."""
    instruments = record.get("instruments") or {}
    return ",".join(f"{k}={str(v)[:12]}" for k, v in sorted(instruments.items())) or None


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
