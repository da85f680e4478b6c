"""Work on a clock: what an evaluation cost (device-hours, images or FLOPs, prepare charged in each), the best
point of a run, and the work at which it first reached a target."""

from __future__ import annotations

import math
from typing import Any

from protobench.records import PRIMARY_DEFAULTS, best_eval, higher_is_better, primary_key
from protobench.stats import summarize
from protobench.units import hours_label

#: how progress is counted: measured device-hours, or machine-independent work (prepare charged in each)
CLOCKS = ("device-hours", "images", "flops")
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


def clock_unit(clock: str, device_type: str) -> str:
    return {"device-hours": hours_label(device_type), "images": "images", "flops": "TFLOP"}[clock]


def finite(value: Any) -> bool:
    """A number that is not inf or nan (and not a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


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
    evals = [e for e in sorted(record["evals"], key=lambda e: e["images_seen"]) if finite(e["metrics"].get(key))]
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


def to_target(crossings: list[dict[str, Any]], target: float | None) -> dict[str, Any]:
    """The work to target over seeds (of those that reached it), with how many did."""
    if target is None:
        return {"mean": None, "ci95": None, "n": 0, "reached": 0, "of": len(crossings)}
    work = [c["work"] for c in crossings if c["work"] is not None]
    return {**summarize(work), "reached": len(work), "of": len(crossings)}
