"""The command line. Human output goes to stderr through rich; `--json` prints records on stdout."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from protobench.errors import Interrupted, NoSpace, TrainingDiverged, UsageError
from protobench.vocabulary import AXES, flatten_options

os.environ.setdefault("HF_HUB_OFFLINE", "1")



def console():
    from rich.console import Console

    return Console(stderr=True)


class ProtobenchGroup(click.Group):
    """Turns errors a user causes into one line and exit code 2; tracebacks only with --debug."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as exc:
            click_usage_error(exc, ctx)

    def invoke(self, ctx: click.Context):
        debug = ctx.params.get("debug") or os.environ.get("PROTOBENCH_DEBUG")
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:  # click's own (no such option, bad flag value): one line as well
            click_usage_error(exc, ctx)
        except UsageError as exc:
            if debug:
                raise
            click.echo(f"error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except TrainingDiverged as exc:
            if debug:
                raise
            click.echo(f"error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt as exc:  # Ctrl-C: one line saying what was kept, not click's bare "Aborted!"
            if debug:
                raise
            click.echo(interrupted_line(exc, ctx), err=True)
            ctx.exit(130)


def click_usage_error(exc: click.UsageError, ctx: click.Context) -> None:
    """click's usage errors in the house style: `error: ...` on one line, exit 2 (bare `protobench` shows help)."""
    if isinstance(exc, click.exceptions.NoArgsIsHelpError):
        raise exc
    where = (exc.ctx or ctx).command_path
    message = " ".join(exc.format_message().split())
    click.echo(f"error: {message} (see '{where} --help')", err=True)
    ctx.exit(exc.exit_code)


def interrupted_line(exc: BaseException, ctx: click.Context) -> str:
    """What a Ctrl-C kept, and the command that goes on from there."""
    sub = ctx.invoked_subcommand or ""
    command = " ".join(["protobench", *_without_stop_after(sys.argv[1:])])
    if isinstance(exc, Interrupted):
        kept = (f"saved checkpoint {exc.checkpoint} at {exc.images_seen:,} images" if exc.checkpoint
                else f"kept the last checkpoint (stopped at {exc.images_seen:,} images)")
        how = command if sub == "sweep" else f"{command}   (or: protobench run --resume {exc.run_id})"
        if isinstance(exc, NoSpace):
            kept = f"checkpoint {exc.checkpoint} at {exc.images_seen:,} images" if exc.checkpoint else "no checkpoint yet"
            return f"interrupted {exc.run_id}: {exc.reason}; kept {kept} as the latest; make room, then resume with: {how}"
        return f"interrupted {exc.run_id}: {kept}; resume with: {how}"
    return f"interrupted; run the same command again to resume: {command}"


def _without_stop_after(args: list[str]) -> list[str]:
    """The arguments less --stop-after: the command that goes on must not stop at the same point again."""
    kept: list[str] = []
    skip = False
    for arg in args:
        if skip or arg.startswith("--stop-after="):
            skip = False
            continue
        skip = arg == "--stop-after"
        if not skip:
            kept.append(arg)
    return kept


@click.group(cls=ProtobenchGroup)
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@click.version_option(package_name="protobench")
def main(debug: bool) -> None:
    """Benchmark ways of conditioning class-conditional diffusion models: device-hours to best FID."""
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():  # only the main thread may set handlers
        signal.signal(signal.SIGTERM, signal.default_int_handler)  # kill / a scheduler's preemption: as Ctrl-C


def out_option(f):
    return click.option("--out", "out", type=click.Path(path_type=Path), default=None,
                        help="Results directory (default ./protobench-runs or $PROTOBENCH_OUT).")(f)


def resolve_out(out: Path | None) -> Path:
    from protobench.paths import default_out

    return Path(out) if out is not None else default_out()


def run_options(f):
    """The flags shared by `run` and `sweep` (in a sweep, each axis is a comma list)."""
    options = [
        click.option("--dataset", default=None, help="Dataset plugin (default: digits)."),
        click.option("--conditioner", default=None, help="Conditioner plugin (default: random)."),
        click.option("--denoiser", default=None, help="Denoiser plugin (default: unet)."),
        click.option("--guidance", default=None, help="Guidance plugin (default: cfg)."),
        click.option("--sampler", default=None, help="Sampler plugin (default: dpm-solver++)."),
        click.option("--metric", "metrics", multiple=True,
                     help="Metric plugin(s) (default: the dataset's; digits: intra-kid, intra-fid, fid, class-accuracy; "
                          "others: intra-fid, fid, class-accuracy)."),
        click.option("--seed", default=None, help="Seed (default 0)."),
        click.option("--logger", "loggers", multiple=True,
                     help="Live logger(s), e.g. tensorboard (<run>/tensorboard/; -o logger.dir=DIR). Default: none."),
        # the shown defaults are the default dataset's (digits); another dataset's presets replace them
        click.option("--budget", default="19.2k", show_default=True,
                     help="Training budget in images seen (e.g. 30000 or 30k); other datasets preset their own."),
        click.option("--eval-every", default="2.4k", show_default=True,
                     help="Images seen between evaluations; other datasets preset their own."),
        click.option("--eval-samples", default="100", show_default=True,
                     help="Samples drawn per evaluation (the last also draws final_eval_samples for per-class "
                          "metrics); other datasets preset their own."),
        click.option("--data-root", default=None, help="Folder holding the dataset (or $PROTOBENCH_DATA_ROOT)."),
        click.option("-o", "overrides", multiple=True, metavar="KEY=VALUE",
                     help="Override a config key (lr=1e-4) or plugin option (conditioner.dim=64)."),
        click.option("--config", "config_file", type=click.Path(path_type=Path), default=None,
                     help="TOML file of config keys and [options.<kind>] tables."),
        click.option("--gpus", default=None, help="Data-parallel processes (DeepSpeed; CPU processes with gloo if no GPU)."),
        click.option("--threads", type=click.IntRange(1, 1024), default=None,
                     help="CPU threads per process (default: $OMP_NUM_THREADS if set, else 1: on shared cores "
                          "competing threads stall; run processes side by side instead)."),
        click.option("--hostfile", type=click.Path(path_type=Path), default=None, help="DeepSpeed hostfile for several machines."),
        click.option("--inception-weights", type=click.Path(path_type=Path), default=None,
                     help="torch-fidelity Inception-v3 weights file (or $PROTOBENCH_INCEPTION_WEIGHTS)."),
        out_option,
        click.option("--json", "as_json", is_flag=True, help="Print the record(s) as JSON on stdout."),
        click.option("--quiet", is_flag=True, help="No progress bar."),
    ]
    for option in reversed(options):
        f = option(f)
    return _defaults_not_given(f)


#: flags whose --help shows the default dataset's value (tests/test_help.py keeps them equal)
SHOWN_DEFAULTS = ("budget", "eval_every", "eval_samples")


def _defaults_not_given(f):
    """A flag left at its shown default counts as not given, so a TOML file or -o can still set that key."""
    import functools

    from click.core import ParameterSource

    @functools.wraps(f)
    def wrapper(**params: Any):
        ctx = click.get_current_context()
        for name in SHOWN_DEFAULTS:
            if ctx.get_parameter_source(name) is ParameterSource.DEFAULT:
                params[name] = None
        return f(**params)

    return wrapper


def collect_user(params: dict[str, Any]) -> dict[str, Any]:
    """Flags, TOML and -o merged into flat overrides: TOML < -o < explicit flags."""
    from protobench.config import load_toml, parse_overrides

    user: dict[str, Any] = {}
    if params.get("config_file"):
        user.update(load_toml(params["config_file"]))
    user.update(parse_overrides(params.get("overrides") or ()))
    for axis in AXES:
        if params.get(axis) is not None:
            user[axis] = params[axis]
    if params.get("metrics"):
        user["metrics"] = ",".join(params["metrics"])
    if params.get("loggers"):
        user["loggers"] = ",".join(params["loggers"])
    for flag, key in (("seed", "seed"), ("budget", "budget"), ("eval_every", "eval_every"),
                      ("eval_samples", "eval_samples"), ("gpus", "gpus")):
        if params.get(flag) is not None:
            user[key] = params[flag]
    data_root = params.get("data_root") or os.environ.get("PROTOBENCH_DATA_ROOT")
    if data_root and "data_root" not in user:
        user["data_root"] = str(data_root)
    if params.get("inception_weights"):
        user["metric.inception_weights"] = str(params["inception_weights"])
    if params.get("hostfile") and not Path(params["hostfile"]).is_file():
        raise UsageError(f"--hostfile {params['hostfile']}: no such file")
    return user


@main.command()
@run_options
@click.option("--resume", "resume_id", default=None, help="Resume run RUN_ID from its last checkpoint.")
@click.option("--stop-after", default=None, metavar="IMAGES",
              help="Stop once this many images are seen, as Ctrl-C does (checkpoint, exit 130); run again to go on.")
def run(resume_id: str | None, stop_after: str | None, **params: Any) -> None:
    """Train and evaluate one combination."""
    from protobench.config import build_config, check_out, parse_size
    from protobench.plugins import get_registry

    if stop_after is not None:  # the environment carries it to every DeepSpeed rank
        os.environ["PROTOBENCH_STOP_AFTER"] = str(parse_size(stop_after) or 1)

    registry = get_registry()
    out = resolve_out(params["out"])
    if resume_id:
        from protobench.io import run_path

        cfg_path = run_path(out, resume_id) / "config.json"  # a run id is a name, never a path
        if not cfg_path.exists():
            raise UsageError(f"no run {resume_id!r} under {out / 'runs'} (missing {cfg_path})")
        try:
            saved = json.loads(cfg_path.read_text())["config"]
            # the saved config is checked like a new one: a tampered file is refused before anything is written
            cfg = build_config({k: v for k, v in saved.items() if k != "options" and v is not None} | {
                **flatten_options(saved.get("options") or {})},
                registry)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise UsageError(f"{cfg_path}: not a readable run config ({type(exc).__name__}: {exc})") from None
        if cfg.run_id() != resume_id:
            raise UsageError(f"{cfg_path}: its config no longer matches run {resume_id} (edited?); not resumed")
    else:
        cfg = build_config(collect_user(params), registry)
    check_out(out)
    record = execute(cfg, registry, out, show_progress=not params["quiet"], hostfile=params.get("hostfile"),
                     threads=params.get("threads"))
    if params["as_json"]:
        click.echo(json.dumps(record, indent=2, default=str))
    print_record(record)
    if record["status"] != "completed":
        sys.exit(1)


def execute(cfg, registry, out: Path, show_progress: bool = True, hostfile: Path | None = None,
            progress=None, threads: int | None = None) -> dict[str, Any]:
    """Run one config in this process, or under the DeepSpeed launcher when it asks for several processes.

    `progress(images_seen, budget, mse)`, if given, is called as training advances (a sweep's display)."""
    if cfg.gpus > 1 and int(os.environ.get("WORLD_SIZE", "1")) == 1:
        from protobench.distributed import launch

        return launch(cfg, out, show_progress=show_progress, hostfile=hostfile, progress=progress)
    from protobench.engine import Run
    from protobench.jobs import apply_threads

    apply_threads(threads)
    return Run(cfg, registry, out, show_progress=show_progress, progress=progress).execute()


def print_record(record: dict[str, Any]) -> None:
    from rich.markup import escape
    from rich.table import Table

    from protobench.ledger import charged_seconds
    from protobench.units import hours_label

    table = Table(title=f"run {record['run_id']} — {record['status']}")
    table.add_column("images seen", justify="right")
    metric_keys = sorted({k for e in record["evals"] for k in e["metrics"]})
    for key in metric_keys:
        table.add_column(escape(key), justify="right")
    unit = hours_label(record["device"]["type"])
    compiled = any(e["device_seconds"].get("compile") for e in record["evals"])
    table.add_column(f"{unit} (prepare+{'compile+' if compiled else ''}train)", justify="right")
    for ev in record["evals"]:
        ds = ev["device_seconds"]
        table.add_row(str(ev["images_seen"]), *[_fmt(ev["metrics"].get(k)) for k in metric_keys],
                      f"{charged_seconds(ds) / 3600:.4f}")
    c = console()
    c.print(table)
    if record.get("best"):
        b = record["best"]
        c.print(f"best {escape(b['metric'])} = {b['value']:.3f} at {b['images_seen']} images, "
                f"{b['device_hours']:.4f} {unit} (prepare {b['prepare_hours']:.4f}"
                + (f", compile {b['compile_hours']:.4f})" if b.get("compile_hours") else ")"))
    if record.get("error"):
        c.print(f"[red]error:[/red] {record['error']}")
    c.print(f"run folder: {record['path']}")


def _fmt(v) -> str:
    return f"{v:.3f}" if isinstance(v, float) else ("" if v is None else str(v))


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print {kind: [{name, plugin, version}]} on stdout.")
def plugins(as_json: bool) -> None:
    """List installed plugins by kind, and any that failed to load."""
    from rich.table import Table

    from protobench.plugins import get_registry
    from protobench.vocabulary import KINDS

    registry = get_registry()
    data = {kind: [{"name": e.name, "plugin": e.plugin, "version": e.version}
                   for e in sorted(registry.entries[kind].values(), key=lambda e: e.name)] for kind in KINDS}
    if registry.broken:
        data["broken"] = [{"plugin": k, "error": v} for k, v in sorted(registry.broken.items())]
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    table = Table(title="protobench plugins")
    for col in ("kind", "name", "plugin", "version"):
        table.add_column(col)
    for kind in KINDS:
        for e in data[kind]:
            table.add_row(kind, e["name"], e["plugin"], e["version"])
    c = console()
    c.print(table)
    for b in data.get("broken", []):
        c.print(f"[red]broken plugin[/red] {b['plugin']}: {b['error']}")


# commands that live in their own modules
from protobench.cli_eval import add_commands as _add_eval  # noqa: E402
from protobench.cli_results import add_commands as _add_results  # noqa: E402

_add_results(main)  # sweep, report, compare, plot
_add_eval(main)  # eval, sample
from protobench.status import add_commands as _add_status  # noqa: E402

_add_status(main)  # status


if __name__ == "__main__":
    main()
