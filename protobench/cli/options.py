"""The options several commands share, and the flags-to-overrides merge of `run` and `sweep`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from protobench.errors import UsageError
from protobench.vocabulary import AXES


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


#: flags whose --help shows the default dataset's value (tests/unit/test_help.py keeps them equal)
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
