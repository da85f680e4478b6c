"""The command line: the group and its error mapping; one module per command family beside it.

Human output goes to stderr through rich; `--json` prints records on stdout."""

from __future__ import annotations

import os
import sys

import click

from protobench.cli.extensions import plugin_commands
from protobench.errors import ExitCode, Interrupted, NoSpace, TrainingDiverged, UsageError

os.environ.setdefault("HF_HUB_OFFLINE", "1")


class ProtobenchGroup(click.Group):
    """Turns errors a user causes into one line and exit code 2; tracebacks only with --debug. Commands that
    plugins add (`register_commands`) are loaded only when a name is not protobench's own, or for --help."""

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return super().get_command(ctx, cmd_name) or plugin_commands(self).get(cmd_name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *plugin_commands(self)})

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
            ctx.exit(ExitCode.INTERRUPTED)
        except Exception as exc:  # a full disk met outside a run (a run stops itself as NoSpace): one line too
            from protobench.diskspace import no_space_in, no_space_reason

            full = no_space_in(exc)
            if debug or full is None:
                raise
            where = getattr(full, "filename", None)
            reason = no_space_reason(full, where)[1] if where else f"no space left on a disk it writes to ({full})"
            if ctx.invoked_subcommand in RESUMABLE:  # what finished is kept; the same command goes on from there
                click.echo(f"interrupted: {reason}; make room, then resume with: {_command_line()}", err=True)
                ctx.exit(ExitCode.INTERRUPTED)
            click.echo(f"error: {reason}; make room, then run it again", err=True)
            ctx.exit(ExitCode.NO_SPACE)


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
    command = _command_line()
    if isinstance(exc, Interrupted):
        kept = (f"saved checkpoint {exc.checkpoint} at {exc.images_seen:,} images" if exc.checkpoint
                else f"kept the last checkpoint (stopped at {exc.images_seen:,} images)")
        how = command if sub == "sweep" else f"{command}   (or: protobench run --resume {exc.run_id})"
        if isinstance(exc, NoSpace):
            kept = f"checkpoint {exc.checkpoint} at {exc.images_seen:,} images" if exc.checkpoint else "no checkpoint yet"
            return f"interrupted {exc.run_id}: {exc.reason}; kept {kept} as the latest; make room, then resume with: {how}"
        return f"interrupted {exc.run_id}: {kept}; resume with: {how}"
    return f"interrupted; run the same command again to resume: {command}"


#: the commands that resume where they stopped when run again
RESUMABLE = ("run", "sweep")


def _command_line() -> str:
    """This command line, as the one to run again (less --stop-after)."""
    return " ".join(["protobench", *_without_stop_after(sys.argv[1:])])


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


# the commands, one module per family; the names below are this package's public surface (tests, scripts)
from protobench.cli import eval as _eval  # noqa: E402
from protobench.cli import plugins as _plugins  # noqa: E402
from protobench.cli import results as _results  # noqa: E402
from protobench.cli import run as _run  # noqa: E402
from protobench.cli import status as _status  # noqa: E402
from protobench.cli import sweep as _sweep  # noqa: E402
from protobench.cli.options import SHOWN_DEFAULTS, collect_user, out_option, resolve_out, run_options  # noqa: E402
from protobench.cli.output import console, print_record  # noqa: E402

for _module in (_run, _plugins, _sweep, _results, _eval, _status):
    for _command in _module.COMMANDS:
        main.add_command(_command)

__all__ = ["SHOWN_DEFAULTS", "collect_user", "console", "main", "out_option", "print_record", "resolve_out",
           "run_options"]
