"""`eval` (score any generator's samples) and `sample` (draw from a trained run)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from protobench.cli.options import out_option, resolve_out
from protobench.cli.output import console
from protobench.training.evaluation import DEFAULT_METRICS


@click.command("eval")
@click.option("--samples", "samples", type=click.Path(path_type=Path), required=True,
              help="An .npz with `images` (uint8 N×H×W×C or N×C×H×W) and optional `labels`.")
@click.option("--dataset", default="digits", show_default=True, help="Dataset to compare against.")
@click.option("--metric", "metrics", multiple=True,
              help=f"Metric plugin(s) (default: {', '.join(DEFAULT_METRICS)}, plus class-accuracy with labels).")
@click.option("--inception-weights", type=click.Path(path_type=Path), default=None,
              help="torch-fidelity Inception-v3 weights file (or $PROTOBENCH_INCEPTION_WEIGHTS).")
@click.option("--data-root", default=None, help="Folder holding the dataset (or $PROTOBENCH_DATA_ROOT).")
@click.option("-o", "overrides", multiple=True, metavar="KEY=VALUE",
              help="dataset.<option>=... or metric.<option>=... (e.g. metric.kid_subsets=50).")
@out_option
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def eval_command(samples, dataset, metrics, inception_weights, data_root, overrides, out, as_json, quiet):
    """Score any generator's samples against a dataset."""
    from rich.markup import escape
    from rich.table import Table

    from protobench.training.evaluation import evaluate_file

    record = evaluate_file(samples, dataset, tuple(metrics), inception_weights, data_root, resolve_out(out),
                           tuple(overrides), show_progress=not quiet)
    if as_json:
        click.echo(json.dumps(record, indent=2))
    table = Table(title=f"{record['n']} samples from {escape(str(samples))} vs {dataset}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in record["metrics"].items():
        table.add_row(escape(key), f"{value:.4f}")
    c = console()
    c.print(table)
    if "evaluator" in record:
        c.print(f"{dataset}-evaluator test accuracy: {record['evaluator']['test_accuracy']:.4f} "
                "(not comparable with papers' Inception numbers)")


@click.command("sample")
@click.argument("run_id")
@click.option("--class", "class_k", type=int, default=None, help="Draw only this class.")
@click.option("--n", "n", type=int, default=None, help="Number of samples (default 10 per class shown).")
@click.option("--seed", type=int, default=0, show_default=True, help="Sampling seed.")
@click.option("--output", type=click.Path(path_type=Path), default=None,
              help="A .png grid, or an .npz (images N×H×W×C uint8, labels) for `protobench eval`.")
@out_option
@click.option("--json", "as_json", is_flag=True, help="Print what was written as JSON on stdout.")
def sample_command(run_id, class_k, n, seed, output, out, as_json):
    """Draw samples from a trained run (its latest checkpoint's EMA weights)."""
    from protobench.training.evaluation import sample_run

    info = sample_run(run_id, resolve_out(out), class_k, n, output, seed)
    if as_json:
        click.echo(json.dumps(info, indent=2))
    console().print(f"wrote {info['n']} samples to {info['output']}")


COMMANDS = (eval_command, sample_command)
