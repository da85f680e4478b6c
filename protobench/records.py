"""Run records: what a run folder says about its run, rebuilt from config.json and events.jsonl.

Reading records never imports the training loop: `report`, `compare`, the index and the plots use this module.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from protobench.io import read_events


def best_of(evals: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The evaluation with the lowest FID (first metric whose key starts with 'fid[')."""
    candidates = [(k, e) for e in evals for k in e.get("metrics", {}) if k.startswith("fid[")]
    if not candidates:
        return None
    key = candidates[0][0]
    scored = [e for e in evals if isinstance(e["metrics"].get(key), (int, float)) and math.isfinite(e["metrics"][key])]
    if not scored:
        return None
    best = min(scored, key=lambda e: e["metrics"][key])
    ds = best["device_seconds"]
    return {"metric": key, "value": best["metrics"][key], "images_seen": best["images_seen"],
            "device_hours": (ds["prepare"] + ds["train"]) / 3600.0,
            "prepare_hours": ds["prepare"] / 3600.0}


def load_record(run_dir: Path) -> dict[str, Any]:
    """The run record, rebuilt from config.json and events.jsonl (so it is right even after kill -9)."""
    run_dir = Path(run_dir)
    meta = json.loads((run_dir / "config.json").read_text())
    events = read_events(run_dir / "events.jsonl")
    status = "running"
    error = None
    evals: list[dict[str, Any]] = []
    seconds = {"prepare": 0.0, "train": 0.0, "eval": 0.0}
    prepare_results: dict[str, Any] = {}
    for ev in events:
        kind = ev.get("event")
        if kind == "start":
            status, error, evals = "running", None, []
        elif kind == "resume":
            status, error = "running", None
            evals = [e for e in evals if e["images_seen"] <= ev["images_seen"]]
        elif kind == "eval":
            evals.append({k: ev[k] for k in ("images_seen", "step", "device_seconds", "metrics")})
            seconds = dict(ev["device_seconds"])
        elif kind == "prepare":
            prepare_results.update(ev.get("results") or {})
            seconds["prepare"] = ev.get("device_seconds", seconds["prepare"])
        elif kind == "end":
            status = ev["status"]
            seconds = dict(ev["device_seconds"])
        elif kind == "failed":
            status, error = "failed", ev.get("error")
    return {
        "run_id": meta["run_id"], "status": status, "error": error, "config": meta["config"],
        "config_hash": meta["config_hash"], "combination": meta["combination"], "plugins": meta["plugins"],
        "dataset_checksum": meta["dataset_checksum"], "device": meta["device"], "device_seconds": seconds,
        "prepare": prepare_results, "evals": evals, "best": best_of(evals), "path": str(run_dir),
    }
