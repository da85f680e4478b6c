"""`report`, `compare`, `plot`: the commands that read many runs."""

from __future__ import annotations

import json
from pathlib import Path

import click

from protobench.cli.options import out_option, resolve_out
from protobench.cli.output import console


@click.command()
@out_option
@click.option("--target", type=float, default=None,
              help="Value of the metric to reach (default: the target the dataset's preset declares for it; "
                   "without one, no work to target or speed-up is shown). Never taken from the runs it scores.")
@click.option("--metric", default=None,
              help="Metric to rank by, a name or a full key (default: each run's primary_metric, else intra-fid, else fid).")
@click.option("--clock", type=click.Choice(["device-hours", "images", "flops", "all"]), default="device-hours",
              show_default=True, help="Work to count: measured device-hours, or images seen / training FLOPs "
                                      "(machine-independent), or all three. Prepare (Stage I) is charged in each.")
@click.option("--wide", is_flag=True, help="One table with every column (final evaluation's metrics, each clock); "
                                           "the default fits 80 columns.")
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON on stdout.")
@click.option("--html", "html_file", type=click.Path(path_type=Path), default=None,
              help="Also write one self-contained HTML file: this table, curves, samples, prototypes, provenance.")
def report(out: Path | None, target: float | None, metric: str | None, clock: str, wide: bool,
           as_json: bool, html_file: Path | None) -> None:
    """Work to a fixed target per combination, and each arm paired with the baseline seed by seed:
    speed-up and difference in best metric with 95% intervals, and the smallest detectable difference."""
    from protobench.report import build_rows, render_rows
    from protobench.store import records

    out = resolve_out(out)
    if no_runs(out):
        if as_json:
            click.echo("[]")
        console().print(f"no runs in {out}")
        return
    done = records(out, status="completed")
    rows = build_rows(done, target=target, metric=metric,
                      clock="device-hours" if clock == "all" else clock)
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
    parts = render_rows(rows, title=f"protobench report — {out}", clock=clock, wide=wide)
    c = console()
    if wide:  # one row per arm, whole: as wide as the table needs, whatever the terminal
        from rich.console import Console

        wide_options = c.options.update_width(100_000)
        c = Console(stderr=True, width=max([c.width, *(c.measure(p, options=wide_options).maximum for p in parts[:-1])]))
    for part in parts:
        c.print(part)
    if html_file is not None:
        from protobench.report import write_html

        c.print(f"wrote {write_html(html_file, rows, done, title=f'protobench report — {out}', out=out)}")

@click.command()
@out_option
@click.argument("a")
@click.argument("b")
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON on stdout.")
def compare(out: Path | None, a: str, b: str, as_json: bool) -> None:
    """Two runs (ids or folders) or two sweeps (results directories) side by side, B relative to A."""
    from protobench.report import compare_sides, load_side, render_comparison

    out = resolve_out(out)
    side_a, side_b = load_side(a, out), load_side(b, out)
    pairs = compare_sides(side_a, side_b)
    if as_json:
        click.echo(json.dumps(pairs, indent=2, default=str))
    console().print(render_comparison(pairs, a, b))

@click.group()
def plot() -> None:
    """PNG figures: learning curves, sample grids, prototypes."""

@plot.command()
@out_option
@click.option("--output", type=click.Path(path_type=Path), default=None, help="PNG file (default <out>/curves.png).")
def curves(out: Path | None, output: Path | None) -> None:
    """Each combination's ranked metric against device-hours: mean line, min-max band over seeds."""
    from protobench.plots import plot_curves
    from protobench.store import records

    out = resolve_out(out)
    if no_runs(out):
        console().print(f"no runs in {out}: nothing to plot")
        return
    output = output or out / "curves.png"
    plot_curves(records(out), output)
    console().print(f"wrote {output}")

@plot.command()
@out_option
@click.argument("run")
@click.option("--output", type=click.Path(path_type=Path), default=None, help="PNG file (default <run>/samples-grid.png).")
def samples(out: Path | None, run: str, output: Path | None) -> None:
    """The run's last evaluation samples as a grid, one row per class."""
    from protobench.plot_samples import plot_samples
    from protobench.runfolder import resolve_run

    run_dir = resolve_run(run, resolve_out(out))
    output = output or run_dir / "samples-grid.png"
    plot_samples(run_dir, output)
    console().print(f"wrote {output}")

@plot.command()
@out_option
@click.argument("run")
@click.option("--output", type=click.Path(path_type=Path), default=None, help="PNG file (default <run>/prototypes.png).")
def prototypes(out: Path | None, run: str, output: Path | None) -> None:
    """The prototypes a proto-* conditioner learned (Stage I)."""
    from protobench.runfolder import resolve_run

    run_dir = resolve_run(run, resolve_out(out))
    output = output or run_dir / "prototypes.png"
    from protobench.plot_prototypes import plot_prototypes

    plot_prototypes(run_dir, output)
    console().print(f"wrote {output}")


def write_report_html(out: Path) -> Path:
    """<out>/report.html: what `protobench report --out OUT --html OUT/report.html` writes (a sweep's last word)."""
    from protobench.report import build_rows, write_html
    from protobench.store import records

    done = records(out, status="completed")
    return write_html(Path(out) / "report.html", build_rows(done), done, title=f"protobench report — {out}", out=out)


def no_runs(out: Path) -> bool:
    """A results folder that holds no run yet: `report` and `plot curves` say so and exit 0.
    A path that is not a folder is a mistake (exit 2)."""
    from protobench.config import check_out
    from protobench.errors import UsageError
    from protobench.runfolder import RUNS

    check_out(out, write=False)
    if not out.is_dir():
        raise UsageError(f"no results folder {out} (--out, or $PROTOBENCH_OUT)")
    runs = out / RUNS
    return not runs.is_dir() or not any(runs.iterdir())


COMMANDS = (report, compare, plot)
