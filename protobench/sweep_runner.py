"""Run a sweep's combinations: locally in the pool (one at a time is a pool of one), or as Slurm jobs.

A finished combination is skipped, an interrupted one resumes, one refused or failed is recorded and the
others go on; `<out>/sweeps/<sweep id>.json` lists where each stands."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from protobench.errors import ExitCode


def run_sweep(combos: list[dict[str, Any]], fixed: dict[str, Any], out: Path, params: dict[str, Any],
              console) -> list[dict[str, Any]]:
    """Every combination of `fixed` with one of `combos`, on `params["executor"]`: their records, in order."""
    from protobench.plugins import get_registry
    from protobench.sweep import sweep_id

    registry = get_registry()
    sid = sweep_id(combos, fixed)
    if params.get("executor") == "slurm":  # checked (sbatch, partition, [slurm]) before a line is printed
        from protobench.slurm_sweep import run_slurm_sweep

        return run_slurm_sweep(combos, fixed, registry, out, sid, params, console)
    return run_local_sweep(combos, fixed, registry, out, sid, params, console)


def run_local_sweep(combos, fixed, registry, out: Path, sid: str, params: dict[str, Any], console):
    """Each combination in its own process, `--jobs` at a time; finished ones are skipped."""
    from protobench.device import THREADS_ENV, apply_threads, cpu_threads, default_jobs
    from protobench.io import atomic_write_json
    from protobench.pool import run_pool
    from protobench.sweep import spread

    show = not params.get("quiet")
    console.print(f"sweep {sid}: {len(combos)} combinations → {out}")
    processes = min(params.get("jobs") or default_jobs(), len(combos))
    results, todo, index_of, instruments = _plan(combos, fixed, registry, out, console)
    if todo and processes > 1:  # one copy of each measuring instrument before the jobs start, not one each
        apply_threads(params.get("threads"))
        for cfgs in instruments.values():
            console.print(f"preparing the measuring instruments for {cfgs[0].dataset} ({', '.join(cfgs[0].metrics)}) ...")
            prepare_instruments(cfgs, registry, out, show)
        threads = cpu_threads(params.get("threads"))
        console.print(f"running {len(todo)} combinations, {processes} at a time, "
                      f"{threads or os.environ.get(THREADS_ENV)} thread(s) each"
                      + ("" if threads else f" (${THREADS_ENV})"))
    manifest_path = out / "sweeps" / f"{sid}.json"

    def on_done(job, rc: int) -> None:
        results[index_of[id(job)]] = job_record(job, rc, out)
        console.print(done_line(results[index_of[id(job)]], job.label))
        manifest = [{"combo": combos[i], "run_id": r["run_id"], "status": r["status"], "error": r.get("error")}
                    for i, r in sorted(results.items())]
        atomic_write_json(manifest_path, {"sweep_id": sid, "fixed": fixed, "runs": manifest})

    run_pool(spread(todo), out, processes, params.get("threads"), on_done, show=show, console=console,
             hostfile=params.get("hostfile"))
    ordered = [results[i] for i in sorted(results)]
    console.print(summary(sid, ordered, out))
    return ordered


def _plan(combos, fixed, registry, out: Path, console):
    """Each combination's config: refused ones and finished ones recorded (and said), the rest as jobs, with the
    configs that share measuring instruments grouped."""
    from protobench.config import build_config
    from protobench.errors import UsageError
    from protobench.pool import Job
    from protobench.runfolder import RunFolder
    from protobench.sweep import describe, failed_record, finished_record

    results: dict[int, dict[str, Any]] = {}
    todo: list[Job] = []
    index_of: dict[int, int] = {}
    instruments: dict[str, list[Any]] = {}
    for i, combo in enumerate(combos):
        label = describe(combo)
        try:
            cfg = build_config({**fixed, **combo}, registry)
        except UsageError as exc:
            results[i] = failed_record(str(exc), combo)
            console.print(done_line(results[i], label))
            continue
        prior = finished_record(out, cfg)
        if prior is not None:
            results[i] = prior
            console.print(done_line(results[i], label) + "  (already done)")
            continue
        job = Job(label=label, cfg=cfg, run_dir=RunFolder(out, cfg.run_id()).path)
        index_of[id(job)] = i
        todo.append(job)
        key = json.dumps([cfg.dataset, cfg.options.get("dataset"), cfg.metrics, cfg.options.get("metric"),
                          cfg.data_root], sort_keys=True, default=str)
        instruments.setdefault(key, []).append(cfg)
    return results, todo, index_of, instruments


def job_record(job, rc: int, out: Path) -> dict[str, Any]:
    """The record a sweep lists for a job that has exited with `rc`: its run's, or why it has none."""
    from protobench.pool import exit_text
    from protobench.sweep import failed_record, indexed_record

    record = indexed_record(out, job.cfg)
    log = job.run_dir / "job.log"
    if record is None:  # refused before its record existed (a plugin option, --data-root): say why
        record = failed_record(job.refusal() or f"the job {exit_text(rc)} before it started; see {log}",
                               job.cfg.to_dict(), job.cfg.run_id())
    elif rc == ExitCode.HELD:  # another process (a second sweep) is running it: skipped, not failed
        record = {**record, "status": "skipped", "error": job.refusal()}
    elif record["status"] == "running" and rc != ExitCode.OK:
        record = {**record, "status": "failed", "error": f"the job {exit_text(rc)}; see {log}"}
    return record


def prepare_instruments(cfgs: list[Any], registry, out: Path, show: bool) -> None:
    """Build the measuring instruments (evaluator, real statistics) once, in this process, before the jobs that
    share them start: with the first of `cfgs` that builds (one that refuses its options says so in its job)."""
    from protobench.errors import UsageError
    from protobench.training.evaluation import build_evaluator

    for cfg in cfgs:
        try:
            evaluator = build_evaluator(cfg, registry, out, show_progress=show)
        except UsageError:
            continue
        evaluator.prepare_instruments()
        return


def summary(sid: str, results: list[dict[str, Any]], out: Path) -> str:
    """The sweep's last line: how many runs completed, failed, were skipped."""
    counts = {k: sum(r["status"] == k for r in results) for k in ("completed", "failed", "skipped")}
    held = f", {counts['skipped']} skipped (held by another process)" if counts["skipped"] else ""
    return f"sweep {sid}: {counts['completed']} completed, {counts['failed']} failed{held}; " \
           f"`protobench report --out {out}`"


def done_line(record: dict[str, Any], label: str) -> str:
    """One combination's line as it ends: done / failed / skipped, its best value or its error (rich markup)."""
    from rich.markup import escape

    from protobench.records import best_text

    best = record.get("best")
    mark = {"completed": "[green]done[/green]", "failed": "[red]failed[/red]",
            "skipped": "[yellow]skipped[/yellow]"}.get(record["status"], record["status"])
    line = f"{mark} {escape(label)}"
    if best:
        line += f"  {escape(best_text(record))}"
    if record["status"] != "completed" and record.get("error"):
        line += f"  [red]{escape(str(record['error']))}[/red]"
    return line
