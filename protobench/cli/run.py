"""`protobench run`: train and evaluate one combination."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import click

from protobench.cli.options import collect_user, resolve_out, run_options
from protobench.cli.output import print_record
from protobench.errors import ExitCode, UsageError


@click.command()
@run_options
@click.option("--resume", "resume_id", default=None, help="Resume run RUN_ID from its last checkpoint.")
@click.option("--stop-after", default=None, metavar="IMAGES",
              help="Stop once this many images are seen, as Ctrl-C does (checkpoint, exit 130); run again to go on.")
def run(resume_id: str | None, stop_after: str | None, **params: Any) -> None:
    """Train and evaluate one combination."""
    from protobench import launch
    from protobench.config import RunConfig, build_config, check_out, parse_size
    from protobench.plugins import get_registry

    if stop_after is not None:  # the environment carries it to every DeepSpeed rank
        os.environ["PROTOBENCH_STOP_AFTER"] = str(parse_size(stop_after) or 1)

    registry = get_registry()
    out = resolve_out(params["out"])
    if resume_id:
        from protobench.runfolder import RunFolder

        cfg_path = RunFolder(out, resume_id).config_path  # a run id is a name, never a path
        if not cfg_path.exists():
            raise UsageError(f"no run {resume_id!r} under {out / 'runs'} (missing {cfg_path})")
        cfg = RunConfig.from_saved(cfg_path, resume_id, registry)
    else:
        cfg = build_config(collect_user(params), registry)
    check_out(out)
    record = launch.execute(cfg, registry, out, show_progress=not params["quiet"], hostfile=params.get("hostfile"),
                            threads=params.get("threads"))
    if params["as_json"]:
        click.echo(json.dumps(record, indent=2, default=str))
    print_record(record)
    if record["status"] != "completed":
        sys.exit(ExitCode.FAILED)


COMMANDS = (run,)
