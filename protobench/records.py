"""Run records: what a run folder says about its run, rebuilt from config.json and events.jsonl.

Reading records never imports the training loop: `report`, `compare`, the index and the plots use this module.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from protobench.errors import UsageError
from protobench.events import END, EVAL, EVENTS_NAME, FAILED, PREPARE, RESUME, START, scan_events
from protobench.ledger import charged_seconds

#: the headline when a run names none: the first of these it computed (lower is better for each)
PRIMARY_DEFAULTS = ("intra-fid", "fid")


def primary_key(evals: list[dict[str, Any]], names: tuple[str | None, ...]) -> str | None:
    """The first metric key in `evals` that one of `names` (a metric name or a full key) names, in that order."""
    keys = [k for e in evals for k in e.get("metrics", {}) if "/" not in k]
    return next((k for name in filter(None, names) for k in keys if k == name or k.startswith(name + "[")), None)


def higher_is_better(key: str) -> bool:
    """From the metric's registration (class-accuracy, is, cas, ... go up), read without importing the metric
    or torch; lower is better when it cannot tell."""
    try:
        from protobench.plugins import get_registry

        return bool(get_registry().get("metric", key.split("[", 1)[0]).attribute("higher_is_better", False))
    except Exception:
        return False


def _good(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def ranked_evals(evals: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    """The one definition of "best" in protobench: the evaluations that scored `key`, best first in the metric's
    direction (lowest, or highest for class-accuracy, is, ...); the earliest of equals first."""
    scored = [e for e in evals if _good(e.get("metrics", {}).get(key))]
    if not scored:
        return []
    sign = -1.0 if higher_is_better(key) else 1.0
    return sorted(scored, key=lambda e: (sign * e["metrics"][key], e["images_seen"]))


def best_eval(evals: list[dict[str, Any]], key: str) -> dict[str, Any] | None:
    """The evaluation with the best value of `key` in the metric's direction (see `ranked_evals`)."""
    ranked = ranked_evals(evals, key)
    return ranked[0] if ranked else None


def best_of(evals: list[dict[str, Any]], primary: str | None = None) -> dict[str, Any] | None:
    """The best evaluation of the primary metric (`primary`, else intra-fid, else fid), in its direction."""
    key = primary_key(evals, (primary, *PRIMARY_DEFAULTS))
    best = best_eval(evals, key) if key else None
    if best is None:
        return None
    ds = best["device_seconds"]
    return {"metric": key, "value": best["metrics"][key], "images_seen": best["images_seen"],
            "device_hours": charged_seconds(ds) / 3600.0,
            "prepare_hours": ds["prepare"] / 3600.0, "compile_hours": ds.get("compile", 0.0) / 3600.0}


def best_se(record: dict[str, Any]) -> float | None:
    """The bootstrap standard error of the record's best value, from the evaluation it came from (None: none)."""
    best = record.get("best")
    if not best:
        return None
    return next((e.get("metrics_se", {}).get(best["metric"]) for e in record.get("evals", [])
                 if e["images_seen"] == best["images_seen"]), None)


def best_text(record: dict[str, Any]) -> str:
    """"best <metric> <value>±<se> (bootstrap se)" for a line about the run ("" when it has none): the standard
    error of the one evaluation the best value came from."""
    best = record.get("best")
    if not best:
        return ""
    se = best_se(record)
    return f"best {best['metric']} {best['value']:.3f}" + (f"±{se:.2g} (bootstrap se)" if se is not None else "")


class UnreadableRun(UsageError, ValueError):
    """A run folder whose record cannot be built: which file, and why (one line for the CLI, exit 2)."""

    def __init__(self, run_dir: Path, file: str, reason: str):
        super().__init__(f"{Path(run_dir) / file}: {reason}")
        self.run_dir, self.file, self.reason = Path(run_dir), file, reason


#: the file of a run folder that holds its resolved config
CONFIG_NAME = "config.json"
CONFIG_KEYS = ("run_id", "config", "config_hash", "combination", "plugins", "dataset_checksum", "device")


def read_config(run_dir: Path) -> dict[str, Any]:
    """config.json of a run, or UnreadableRun saying what is wrong with it."""
    path = Path(run_dir) / CONFIG_NAME
    try:
        meta = json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise UnreadableRun(run_dir, CONFIG_NAME, "missing") from None
    except UnicodeDecodeError as exc:
        raise UnreadableRun(run_dir, CONFIG_NAME, f"not UTF-8 (byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise UnreadableRun(run_dir, CONFIG_NAME, f"not JSON ({exc.msg} at line {exc.lineno}; truncated?)") from None
    except OSError as exc:
        raise UnreadableRun(run_dir, CONFIG_NAME, exc.strerror or type(exc).__name__) from None
    if not isinstance(meta, dict) or not isinstance(meta.get("config"), dict):
        raise UnreadableRun(run_dir, CONFIG_NAME, "not a run's config (no 'config' object)")
    missing = [k for k in CONFIG_KEYS if k not in meta]
    if missing:
        raise UnreadableRun(run_dir, CONFIG_NAME, f"lacks {', '.join(missing)}")
    return meta


def _replay(events: list[dict[str, Any]]) -> tuple[dict[str, Any], list[str]]:
    state: dict[str, Any] = {"status": "running", "error": None, "evals": [], "instruments": {},
                             "seconds": {"prepare": 0.0, "train": 0.0, "eval": 0.0, "compile": 0.0}, "prepare": {}}
    problems: list[str] = []
    for number, ev in enumerate(events, 1):
        try:
            _apply(state, ev)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            problems.append(f"event {number} ({ev.get('event') if isinstance(ev, dict) else ev!r}) is malformed "
                            f"({type(exc).__name__}: {exc})")
    return state, problems


def _apply(state: dict[str, Any], ev: dict[str, Any]) -> None:
    kind = ev.get("event")
    if kind == START:
        state.update(status="running", error=None, evals=[])
    elif kind == RESUME:
        state.update(status="running", error=None)
        state["evals"] = [e for e in state["evals"] if e["images_seen"] <= ev["images_seen"]]
    elif kind == EVAL:
        entry = {k: ev[k] for k in ("images_seen", "step", "device_seconds", "metrics")}
        for optional in ("metrics_se", "samples", "final"):  # each metric's bootstrap error; the samples it was scored on
            if ev.get(optional) is not None:
                entry[optional] = ev[optional]
        if ev.get("instruments"):
            entry["instruments"] = dict(ev["instruments"])
        if ev.get("work"):  # machine-independent work: images and FLOPs, prepare apart (report --clock)
            entry["work"] = ev["work"]
        for key in ("acceptance_rate", "samples_dropped", "metrics_unscored", "conditioner"):  # rejection; the conditioner's diagnostics
            if key in ev:
                entry[key] = ev[key]
        state["evals"].append(entry)
        state["seconds"] = dict(ev["device_seconds"])
    elif kind == PREPARE:
        state["prepare"].update(ev.get("results") or {})
        state["seconds"]["prepare"] = ev.get("device_seconds", state["seconds"]["prepare"])
        if ev.get("instruments"):
            state["instruments"].update(ev["instruments"])
    elif kind == END:
        state["status"] = ev["status"]
        state["seconds"] = dict(ev["device_seconds"])
    elif kind == FAILED:
        state.update(status="failed", error=ev.get("error"))


def load_record(run_dir: Path) -> dict[str, Any]:
    """The run record, rebuilt from config.json and events.jsonl (so it is right even after kill -9).

    Raises UnreadableRun when config.json cannot be read; damaged lines of events.jsonl are skipped and
    listed under "problems"."""
    run_dir = Path(run_dir)
    meta = read_config(run_dir)
    try:
        events, problems = scan_events(run_dir / EVENTS_NAME)
    except OSError as exc:
        raise UnreadableRun(run_dir, EVENTS_NAME, exc.strerror or type(exc).__name__) from None
    state, malformed = _replay(events)
    instruments = dict(meta.get("instruments") or {})
    instruments.update(state["instruments"])
    for ev in state["evals"]:
        instruments.update(ev.get("instruments", {}))
    record = {
        "run_id": meta["run_id"], "status": state["status"], "error": state["error"], "config": meta["config"],
        "config_hash": meta["config_hash"], "combination": meta["combination"], "plugins": meta["plugins"],
        "dataset_checksum": meta["dataset_checksum"], "device": meta["device"], "device_seconds": state["seconds"],
        "prepare": state["prepare"], "evals": state["evals"], "best": best_of(state["evals"], meta["config"].get("primary_metric")), "path": str(run_dir),
    }
    if meta.get("target"):  # the target the dataset's preset declares for its primary metric
        record["target"] = meta["target"]
    if instruments:
        record["instruments"] = instruments
    if problems or malformed:
        record["problems"] = [{"file": EVENTS_NAME, "reason": r} for r in problems + malformed]
    return record
