"""`protobench sweep`: every combination of the axes, one run each, `--jobs` at a time."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from protobench.cli.options import collect_user, resolve_out, run_options
from protobench.cli.output import console
from protobench.errors import ExitCode, UsageError


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
    from protobench.sweep_runner import run_sweep

    combos, fixed = plan(params)
    records = run_sweep(combos, fixed, resolve_out(params["out"]), params, console())
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
        sys.exit(ExitCode.FAILED)


def plan(params: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The flags and the sweep TOML as (combinations, the keys every combination shares)."""
    from protobench.sweep import AXES, DEFAULT_SWEEP, expand, load_sweep_toml, split_list, split_overrides

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
    if params.get("executor") != "slurm":
        slurm_only = [f for f, k in (("--partition", "partition"), ("--time", "time_limit"),
                                     ("--cpus-per-job", "cpus_per_job"), ("--sbatch", "sbatch"), ("--wait", "wait"))
                      if params.get(k)]
        if slurm_only:
            raise UsageError(f"{', '.join(slurm_only)}: only with --executor slurm")
    return combos, fixed


COMMANDS = (sweep,)
