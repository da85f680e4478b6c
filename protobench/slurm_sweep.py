"""`protobench sweep --executor slurm`: submit the combinations not yet completed, and with --wait follow them
in the usual progress display and return their records (docs/clusters.md)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from protobench.runfolder import RunFolder
from protobench.slurm import (
    ACTIVE,
    check_cluster,
    parse_sbatch_flags,
    scheduler_states,
    slurm_options,
    submit,
)


def follow(entries: list[dict[str, Any]], out: Path, show: bool, console: Any) -> None:
    """`--wait`: the usual progress display until every job has left the queue."""
    from rich.markup import escape

    from protobench.events import follow as follow_events
    from protobench.pool import stage_of
    from protobench.progress import make_progress

    progress = make_progress("images", show=show, console=console)
    offsets = {e["run_id"]: 0 for e in entries}
    seen = {e["run_id"]: 0 for e in entries}
    stages = {e["run_id"]: "pending" for e in entries}
    with progress:
        overall = progress.add_task("sweep", total=sum(e["budget"] for e in entries))
        rows = {e["run_id"]: progress.add_task(escape(e["label"]), total=e["budget"]) for e in entries}
        while True:
            states = scheduler_states([e["job_id"] for e in entries])
            active = 0
            for e in entries:
                rid = e["run_id"]
                offsets[rid], new = follow_events(RunFolder(out, rid).events_path, offsets[rid])
                for ev in new:
                    if "images_seen" in ev:
                        seen[rid] = int(ev["images_seen"])
                    stages[rid] = stage_of(ev) or ev.get("event") or stages[rid]
                state = states.get(e["job_id"], {}).get("state", "")
                if state in ACTIVE:
                    active += 1
                shown = "pending" if state in ("PENDING", "REQUEUED") else stages[rid]
                progress.update(rows[rid], completed=seen[rid],
                                description=f"{escape(e['label'])} · job {e['job_id']} · {escape(shown)}")
            progress.update(overall, completed=sum(seen.values()),
                            description=f"sweep: {active} of {len(entries)} jobs queued or running")
            if not active:
                return
            time.sleep(1.0)


def run_slurm_sweep(combos: list[dict[str, Any]], fixed: dict[str, Any], registry: Any, out: Path, sid: str,
                    params: dict[str, Any], console: Any) -> list[dict[str, Any]]:
    """Submit the combinations not yet completed; with --wait, follow them and return their records."""
    from rich.markup import escape

    from protobench.config import read_toml

    table, where = None, "--executor slurm"
    if params.get("config_file"):
        where = str(params["config_file"])
        table = read_toml(params["config_file"]).get("slurm")
    flags = {"partition": params.get("partition"), "time": params.get("time_limit"),
             "cpus": params.get("cpus_per_job"), "sbatch": parse_sbatch_flags(params.get("sbatch") or ())}
    opts = slurm_options(table, flags, where)
    check_cluster(opts)
    todo, manifest, done = _plan(combos, fixed, registry, out)
    console.print(f"sweep {sid}: {len(combos)} combinations → {out}")
    ids = submit(todo, out, sid, opts, params.get("threads")) if todo else {}
    _write_manifest(out / "sweeps" / f"{sid}.json", sid, fixed, manifest, ids)
    arrays = sorted({j.split("_")[0] for j in ids.values()}, key=lambda j: (len(j), j))
    console.print(f"submitted {len(ids)} job(s) to Slurm: array{'s' if len(arrays) > 1 else ''} "
                  f"{', '.join(arrays) or '-'}; {len(done)} already completed. "
                  f"`protobench status --out {out}` shows where they are")
    for label, cfg in todo:
        console.print(f"  job {ids[cfg.run_id()]}  run {cfg.run_id()}  {escape(label)}")
    if not params.get("wait"):
        return done + [{"run_id": cfg.run_id(), "status": "submitted", "job_id": ids[cfg.run_id()],
                        "config": cfg.to_dict(), "error": None} for _, cfg in todo]
    entries = [{"run_id": cfg.run_id(), "label": label, "job_id": ids[cfg.run_id()], "budget": cfg.budget}
               for label, cfg in todo]
    follow(entries, out, show=not params.get("quiet"), console=console)
    return done + [_job_record(cfg, ids[cfg.run_id()], out, sid) for _, cfg in todo]


def _plan(combos, fixed, registry, out: Path):
    """(label, config) of each combination to submit, the manifest's entries, the records already completed."""
    from protobench.config import build_config
    from protobench.sweep import describe, finished_record

    todo: list[tuple[str, Any]] = []
    manifest: list[dict[str, Any]] = []
    done: list[dict[str, Any]] = []
    for combo in combos:
        cfg = build_config({**fixed, **combo}, registry)  # a bad combination: one line, nothing submitted
        prior = finished_record(out, cfg)
        if prior is not None:
            done.append(prior)
            manifest.append({"combo": combo, "run_id": cfg.run_id(), "status": "completed", "error": None})
            continue
        todo.append((describe(combo), cfg))
        manifest.append({"combo": combo, "run_id": cfg.run_id(), "status": "submitted", "error": None})
    return todo, manifest, done


def _write_manifest(path: Path, sid: str, fixed: dict[str, Any], manifest: list[dict[str, Any]],
                    ids: dict[str, str]) -> None:
    """The sweep's manifest with each run's Slurm job ids (an earlier submission's stay listed)."""
    from protobench.io import atomic_write_json

    earlier: dict[str, list[str]] = {}
    try:
        for r in json.loads(path.read_text()).get("runs", []):
            earlier[r.get("run_id")] = list(r.get("job_ids") or [])
    except (OSError, ValueError, AttributeError):
        pass
    for r in manifest:
        jobs = earlier.get(r["run_id"], [])
        if r["run_id"] in ids:
            jobs = [*jobs, ids[r["run_id"]]]
            r["job_id"] = ids[r["run_id"]]
        if jobs:
            r["job_ids"] = jobs
    atomic_write_json(path, {"sweep_id": sid, "fixed": fixed, "executor": "slurm", "runs": manifest})


def _job_record(cfg, job_id: str, out: Path, sid: str) -> dict[str, Any]:
    """The record of a run whose job has left the queue, or why it has none."""
    from protobench.sweep import failed_record, indexed_record

    record = indexed_record(out, cfg)
    if record is None:
        return failed_record(f"job {job_id} left the queue before its run started; see {out / 'slurm' / sid}",
                             cfg.to_dict(), cfg.run_id())
    if record["status"] == "running":
        return {**record, "status": "failed",
                "error": f"job {job_id} left the queue with the run unfinished; see {out / 'slurm' / sid}"}
    return record
