"""`protobench sweep`: every combination of the axes, one run each, in this process or `--jobs` at a time."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from protobench.cli.options import collect_user, resolve_out, run_options
from protobench.cli.output import console


@click.command()
@run_options
@click.option("--jobs", type=click.IntRange(1, 256), default=None,
              help="Combinations run at once, each in its own process (default: physical cores on a CPU, "
                   "one per GPU).")
@click.option("--executor", type=click.Choice(["local", "slurm"]), default="local", show_default=True,
              help="local: processes on this machine; slurm: one Slurm job per combination (a job array, "
                   "through submitit), --out on storage the nodes share (docs/clusters.md).")
@click.option("--partition", default=None, help="Slurm partition (default: the cluster's; or [slurm] partition).")
@click.option("--time", "time_limit", default=None,
              help="Slurm time limit per job: minutes or [D-]H:MM:SS (default 60; or [slurm] time).")
@click.option("--cpus-per-job", type=click.IntRange(1, 4096), default=None,
              help="CPUs per Slurm job (default 1; or [slurm] cpus).")
@click.option("--sbatch", multiple=True, metavar="KEY=VALUE",
              help="Any other sbatch parameter (account=proj123); or a [slurm.sbatch] table.")
@click.option("--wait", is_flag=True, help="With --executor slurm: follow the jobs until they leave the queue.")
def sweep(**params: Any) -> None:
    """Run every combination of the axes (comma lists; `-o key=a|b` sweeps an option).

    \b
    --conditioner random,proto-frozen --seed 0,1,2
    -o lr=1e-4|2e-4 -o denoiser.channel_mult=1,2|1,2,2   (`|` separates values; commas stay in tuples)
    --config sweep.toml   run keys plus a [sweep] table of lists: conditioner = ["random", "cbn"]

    With no axes and no --config: digits × {none, random, proto-frozen, proto-unfrozen} × seeds 0,1,2.
    A finished combination is skipped, an interrupted one resumes, a failed one is recorded and the
    sweep goes on; the exit code is 1 if any combination failed.
    """
    records = run_sweep(params)
    if params["as_json"]:
        click.echo(json.dumps(records, indent=2, default=str))
    from protobench.cli.results import write_report_html
    from protobench.report import build_rows, render_rows

    done = [r for r in records if r.get("status") == "completed"]
    if done:  # the sweep's own runs, ranked the way `protobench report` ranks them
        for part in render_rows(build_rows(done), title="protobench sweep"):
            console().print(part)
        # the last line: where the page is (never wrapped, so it can be copied or read by a script)
        console().print(f"report: {write_report_html(resolve_out(params['out']))}", soft_wrap=True, markup=False,
                        highlight=False)
    if any(r["status"] == "failed" for r in records):
        sys.exit(1)


def run_sweep(params: dict[str, Any]) -> list[dict[str, Any]]:
    """Expand the axes, run each combination in turn (skip / resume / record failure), index every run."""
    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from protobench import store
    from protobench.config import build_config
    from protobench.errors import UsageError
    from protobench.io import atomic_write_json
    from protobench.launch import execute
    from protobench.locks import RunLocked
    from protobench.plugins import get_registry
    from protobench.sweep import (
        AXES,
        DEFAULT_SWEEP,
        describe,
        expand,
        failed_record,
        load_sweep_toml,
        split_list,
        split_overrides,
        sweep_id,
    )

    registry = get_registry()
    out = resolve_out(params["out"])
    fixed_pairs, swept = split_overrides(params.get("overrides") or ())
    lists: dict[str, list[Any]] = {}
    if params.get("config_file"):
        _, lists = load_sweep_toml(params["config_file"])
    elif not any(params.get(axis) for axis in AXES):
        lists = dict(DEFAULT_SWEEP)
    for axis in AXES:
        if params.get(axis):
            lists[axis] = split_list(params[axis])
    lists.update(swept)
    base_params = {**params, "overrides": tuple(fixed_pairs), **{axis: None for axis in AXES}}
    fixed = collect_user(base_params)  # the TOML's run keys, fixed -o, --budget, ...
    combos = expand(lists) if lists else [{}]
    show = not params.get("quiet")
    c = console()
    results: list[dict[str, Any]] = []
    manifest: list[dict[str, Any]] = []
    sid = sweep_id(combos, fixed)
    if params.get("executor") == "slurm":  # checked (sbatch, partition, [slurm]) before a line is printed
        from protobench.slurm import run_slurm_sweep

        return run_slurm_sweep(combos, fixed, registry, out, sid, params, c)
    slurm_only = [f for f, k in (("--partition", "partition"), ("--time", "time_limit"), ("--cpus-per-job", "cpus_per_job"),
                                 ("--sbatch", "sbatch"), ("--wait", "wait")) if params.get(k)]
    if slurm_only:
        raise UsageError(f"{', '.join(slurm_only)}: only with --executor slurm")
    c.print(f"sweep {sid}: {len(combos)} combinations → {out}")
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        console=c, transient=True, disable=not show)
    from protobench.jobs import default_jobs

    processes = min(params.get("jobs") or default_jobs(), len(combos))
    if processes > 1:
        return _run_parallel(combos, fixed, registry, out, sid, processes, params, c)
    with progress:
        overall = progress.add_task("sweep", total=len(combos))
        current = progress.add_task("", total=1, visible=False)
        for i, combo in enumerate(combos):
            label = describe(combo)
            progress.update(overall, description=f"sweep [{i + 1}/{len(combos)}]")
            progress.update(current, description=escape(label), completed=0, total=1, visible=True)

            def on_step(seen: int, budget: int, mse: float, _label=label) -> None:
                progress.update(current, completed=seen, total=budget, description=f"{escape(_label)} loss {mse:.4f}")

            record: dict[str, Any] | None = None
            error = None
            try:
                cfg = build_config({**fixed, **combo}, registry)
            except UsageError as exc:
                cfg, error = None, str(exc)
            if cfg is not None:
                run_dir = out / "runs" / cfg.run_id()
                try:
                    record = execute(cfg, registry, out, show_progress=False, hostfile=params.get("hostfile"),
                                     progress=on_step, threads=params.get("threads"))
                except KeyboardInterrupt:
                    store.index_run(out, run_dir)
                    raise
                except RunLocked as exc:  # another process (a second sweep) is running it: skipped, not failed
                    record = {**(store.index_run(out, run_dir) or {}), "status": "skipped", "error": str(exc)}
                except Exception as exc:  # one combination failing must not stop the others
                    error = str(exc) if isinstance(exc, UsageError) else f"{type(exc).__name__}: {exc}"
                if record is None or record.get("status") != "skipped":
                    record = store.index_run(out, run_dir) or record
            if record is None:
                record = failed_record(error, combo)
            results.append(record)
            manifest.append({"combo": combo, "run_id": record["run_id"], "status": record["status"],
                             "error": record.get("error")})
            progress.console.print(_done_line(record, label))
            progress.advance(overall)
            atomic_write_json(out / "sweeps" / f"{sid}.json", {"sweep_id": sid, "fixed": fixed, "runs": manifest})
    c.print(_summary(sid, results, out))
    return results


def _summary(sid: str, results: list[dict[str, Any]], out: Path) -> str:
    counts = {k: sum(r["status"] == k for r in results) for k in ("completed", "failed", "skipped")}
    held = f", {counts['skipped']} skipped (held by another process)" if counts["skipped"] else ""
    return f"sweep {sid}: {counts['completed']} completed, {counts['failed']} failed{held}; " \
           f"`protobench report --out {out}`"


def _done_line(record: dict[str, Any], label: str) -> str:
    from rich.markup import escape

    best = record.get("best")
    mark = {"completed": "[green]done[/green]", "failed": "[red]failed[/red]", "skipped": "[yellow]skipped[/yellow]"}.get(record["status"], record["status"])
    line = f"{mark} {escape(label)}"
    if best:
        line += f"  best {escape(best['metric'])} {best['value']:.3f}"
    if record["status"] != "completed" and record.get("error"):
        line += f"  [red]{escape(str(record['error']))}[/red]"
    return line


def _run_parallel(combos, fixed, registry, out: Path, sid: str, processes: int, params: dict[str, Any], c):
    """Each combination in its own process, `processes` at a time; finished ones are skipped."""
    from protobench import store
    from protobench.config import build_config
    from protobench.errors import UsageError
    from protobench.io import atomic_write_json
    from protobench.jobs import HELD, Job, apply_threads, last_error, prepare_instruments, run_parallel
    from protobench.runfolder import completed_record, run_path
    from protobench.sweep import describe, failed_record, spread

    show = not params.get("quiet")
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
            c.print(_done_line(results[i], label))
            continue
        run_dir = run_path(out, cfg.run_id())
        prior = completed_record(run_dir)
        if prior is not None:
            results[i] = store.index_run(out, run_dir) or prior
            c.print(_done_line(results[i], label) + "  (already done)")
            continue
        job = Job(label=label, cfg=cfg, run_dir=run_dir)
        index_of[id(job)] = i
        todo.append(job)
        # one copy of each measuring instrument (evaluator, real statistics) before the jobs start, not one each
        key = json.dumps([cfg.dataset, cfg.options.get("dataset"), cfg.metrics, cfg.options.get("metric"),
                          cfg.data_root], sort_keys=True, default=str)
        instruments.setdefault(key, []).append(cfg)
    if todo:
        apply_threads(params.get("threads"))
        for cfgs in instruments.values():
            c.print(f"preparing the measuring instruments for {cfgs[0].dataset} ({', '.join(cfgs[0].metrics)}) ...")
            prepare_instruments(cfgs, registry, out, show)
        c.print(f"running {len(todo)} combinations, {processes} at a time, "
                f"{params.get('threads') or 'one'} thread(s) each")
    manifest_path = out / "sweeps" / f"{sid}.json"

    def on_done(job: Job, rc: int) -> None:
        record = None
        try:
            record = store.index_run(out, job.run_dir)
        except Exception as exc:  # an unreadable run folder is reported, the sweep goes on
            record = failed_record(f"unreadable run: {exc}", job.cfg.to_dict(), job.cfg.run_id())
        log = job.run_dir / "job.log"
        if record is None:  # refused before its record existed (a plugin option, --data-root): say why
            record = failed_record(last_error(log) or f"the job exited with code {rc} before it started; see {log}",
                                   job.cfg.to_dict(), job.cfg.run_id())
        elif rc == HELD:  # another process (a second sweep) is running it: skipped, not failed
            record = {**record, "status": "skipped", "error": last_error(log)}
        elif record["status"] == "running" and rc != 0:
            record = {**record, "status": "failed", "error": f"the job exited with code {rc}; see {log}"}
        results[index_of[id(job)]] = record
        c.print(_done_line(record, job.label))
        manifest = [{"combo": combos[i], "run_id": r["run_id"], "status": r["status"], "error": r.get("error")}
                    for i, r in sorted(results.items())]
        atomic_write_json(manifest_path, {"sweep_id": sid, "fixed": fixed, "runs": manifest})

    run_parallel(spread(todo), out, processes, params.get("threads"), on_done, show=show, console=c)
    ordered = [results[i] for i in sorted(results)]
    c.print(_summary(sid, ordered, out))
    return ordered


COMMANDS = (sweep,)
