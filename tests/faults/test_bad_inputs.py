"""Bad input is refused the same way every time: one `error:` line on stderr, exit code 2, no traceback, and
nothing written — no run folder, no cache, no index. Each case runs in its own empty folder (cwd,
HOME, --out and the cache all inside it), through the command line in-process; a few of each kind also as a
real `protobench` process, for the interpreter's exit code and stderr."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

RUN = ("run", "--quiet")


@dataclass(frozen=True)
class Case:
    args: tuple[str, ...]
    #: files made in the case's folder before the command runs: name -> bytes
    files: dict[str, bytes] = field(default_factory=dict)
    #: `run`/`sweep` cases get `--out out` unless they name their own
    default_out: bool = True


def run_case(*args: str, files: dict[str, bytes] | None = None) -> Case:
    return Case((*RUN, *args), files or {})


def toml(text: str | bytes) -> dict[str, bytes]:
    return {"bad.toml": text if isinstance(text, bytes) else text.encode()}


#: a path no user can make a folder in, root included
UNWRITABLE = "/proc/protobench-out" if os.geteuid() == 0 else "/protobench-out"

CASES: dict[str, Case] = {
    # --budget (images seen)
    "budget-inf": run_case("--budget", "inf"),
    "budget-nan": run_case("--budget", "nan"),
    "budget-1e30": run_case("--budget", "1e30"),
    "budget-negative": run_case("--budget", "-5"),
    "budget-zero": run_case("--budget", "0"),
    "budget-words": run_case("--budget", "lots"),
    "budget-fraction": run_case("--budget", "2.5"),
    "eval-every-zero": run_case("--eval-every", "0"),
    "eval-samples-zero": run_case("--eval-samples", "0"),
    # processes
    "gpus-zero": run_case("--gpus", "0"),
    "gpus-negative": run_case("--gpus", "-2"),
    "gpus-words": run_case("--gpus", "two"),
    "gpus-uneven-batch": run_case("--gpus", "3"),
    "zero-stage-9": run_case("-o", "zero_stage=9"),
    "hostfile-missing": run_case("--hostfile", "no-such-hostfile"),
    # seed
    "seed-huge": run_case("--seed", "99999999999999999999"),
    "seed-negative": run_case("--seed", "-1"),
    "seed-fraction": run_case("--seed", "1.5"),
    # top-level -o keys
    "timesteps-zero": run_case("-o", "timesteps=0"),
    "timesteps-negative": run_case("-o", "timesteps=-5"),
    "timesteps-too-few-for-linear": run_case("-o", "timesteps=10"),
    "lr-negative": run_case("-o", "lr=-1"),
    "lr-nan": run_case("-o", "lr=nan"),
    "lr-inf": run_case("-o", "lr=inf"),
    "lr-words": run_case("-o", "lr=fast"),
    "grad-clip-nan": run_case("-o", "grad_clip=nan"),
    "grad-clip-negative": run_case("-o", "grad_clip=-1"),
    "weight-decay-negative": run_case("-o", "weight_decay=-1"),
    "batch-size-zero": run_case("-o", "batch_size=0"),
    "label-dropout-1.5": run_case("-o", "label_dropout=1.5"),
    "ema-decay-1": run_case("-o", "ema_decay=1"),
    "log-every-zero": run_case("-o", "log_every=0"),
    "schedule-unknown": run_case("-o", "schedule=quadratic"),
    "precision-unknown": run_case("-o", "precision=fp8"),
    "metrics-empty": run_case("-o", "metrics="),
    "override-without-equals": run_case("-o", "lr"),
    "override-unknown-key": run_case("-o", "bogus=1"),
    # plugins and their options (refused before the run folder exists)
    "dataset-unknown": run_case("--dataset", "nope"),
    "conditioner-unknown": run_case("--conditioner", "nope"),
    "denoiser-unknown": run_case("--denoiser", "nope"),
    "guidance-unknown": run_case("--guidance", "nope"),
    "sampler-unknown": run_case("--sampler", "nope"),
    "metric-unknown": run_case("--metric", "nope"),
    "plugin-option-unknown": run_case("-o", "denoiser.bogus=1"),
    "channel-mult-zero": run_case("-o", "denoiser.channel_mult=0"),
    "channel-mult-words": run_case("-o", "denoiser.channel_mult=1,x"),
    "base-channels-negative": run_case("-o", "denoiser.base_channels=-4"),
    "dropout-5": run_case("-o", "denoiser.dropout=5"),
    "sampler-steps-zero": run_case("-o", "sampler.steps=0"),
    "data-root-missing": run_case("--dataset", "cifar10", "--data-root", "no-such-folder"),
    # TOML config files
    "toml-missing": run_case("--config", "no-such.toml"),
    "toml-seed-fraction": run_case("--config", "bad.toml", files=toml("seed = 1.5\n")),
    "toml-lr-list": run_case("--config", "bad.toml", files=toml("lr = [1, 2]\n")),
    "toml-budget-bool": run_case("--config", "bad.toml", files=toml("budget = true\n")),
    "toml-not-utf8": run_case("--config", "bad.toml", files=toml(b"budget = 100\n# \xff\xfe\xfa\n")),
    "toml-syntax": run_case("--config", "bad.toml", files=toml("budget = \n")),
    "toml-unknown-key": run_case("--config", "bad.toml", files=toml("bogus = 1\n")),
    "toml-dataset-table": run_case("--config", "bad.toml", files=toml("[dataset]\nname = 'digits'\n")),
    "toml-plugin-option-type": run_case("--config", "bad.toml",
                                        files=toml("[options.denoiser]\nbase_channels = 'wide'\n")),
    "toml-nested-5000-arrays": run_case("--config", "bad.toml", files=toml("x = " + "[" * 5000 + "]" * 5000 + "\n")),
    "toml-nested-5000-tables": run_case("--config", "bad.toml",
                                        files=toml("x = " + "{a = " * 5000 + "1" + "}" * 5000 + "\n")),
    "sweep-toml-nested-5000": Case(("sweep", "--config", "bad.toml"), toml("x = " + "[" * 5000 + "]" * 5000 + "\n")),
    # where results go
    "out-is-a-file": run_case("--out", "a-file", files={"a-file": b"x"}),
    "out-below-a-file": run_case("--out", "a-file/runs", files={"a-file": b"x"}),
    "out-unwritable": run_case("--out", UNWRITABLE),
    "resume-unknown-run": run_case("--resume", "no-such-run"),
    # click's own parsing
    "flag-unknown": run_case("--budgit", "5"),
    "command-unknown": Case(("trian",)),
    # the commands that read results
    "report-out-is-a-file": Case(("report", "--out", "a-file"), {"a-file": b"x"}),
    "report-out-missing": Case(("report", "--out", "no-such-folder")),
    "plot-curves-out-is-a-file": Case(("plot", "curves", "--out", "a-file"), {"a-file": b"x"}),
    "plot-curves-out-missing": Case(("plot", "curves", "--out", "no-such-folder")),
    "sample-unknown-run": Case(("sample", "no-such-run", "--out", "out")),
    "eval-samples-missing": Case(("eval", "--samples", "no-such.npz", "--out", "out")),
}


#: also run as real processes (console entry point, interpreter exit code): one of each kind of refusal
AS_PROCESS = ("budget-inf", "dropout-5", "out-unwritable", "flag-unknown", "toml-nested-5000-arrays")


@dataclass(frozen=True)
class Outcome:
    returncode: int
    stdout: str
    stderr: str
    new_files: list[str]
    crashed: str | None = None  # an exception other than the exit, in-process


def snapshot(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def arrange(case: Case, folder: Path) -> tuple[list[str], dict[str, str]]:
    """The case's folder with its files, its arguments, and an environment confined to the folder."""
    folder.mkdir(parents=True)
    (folder / "home").mkdir()
    for name, data in case.files.items():
        (folder / name).write_bytes(data)
    args = list(case.args)
    if args[0] == "run" and "--out" not in args:
        args += ["--out", "out"]
    env = {"HOME": str(folder / "home"), "PROTOBENCH_OUT": str(folder / "default-out"),
           "PROTOBENCH_CACHE": str(folder / "cache"), "PROTOBENCH_DEBUG": None, "PROTOBENCH_DATA_ROOT": None,
           "COLUMNS": "200"}
    return args, env


def in_process(case: Case, folder: Path, monkeypatch) -> Outcome:
    from click.testing import CliRunner

    from protobench.cli import main

    args, env = arrange(case, folder)
    monkeypatch.chdir(folder)
    before = snapshot(folder)
    result = CliRunner(env=env).invoke(main, args)
    crashed = None if isinstance(result.exception, SystemExit) or result.exception is None else repr(result.exception)
    return Outcome(result.exit_code, result.stdout, result.stderr, sorted(snapshot(folder) - before), crashed)


def as_process(case: Case, folder: Path) -> Outcome:
    args, env = arrange(case, folder)
    full_env = {**os.environ, **{k: v for k, v in env.items() if v is not None}, "PYTHONDONTWRITEBYTECODE": "1"}
    for key in (k for k, v in env.items() if v is None):
        full_env.pop(key, None)
    before = snapshot(folder)
    proc = subprocess.run([sys.executable, "-m", "protobench", *args], cwd=folder, env=full_env, capture_output=True,
                          text=True, timeout=300)
    return Outcome(proc.returncode, proc.stdout, proc.stderr, sorted(snapshot(folder) - before))


def assert_refused(outcome: Outcome) -> None:
    lines = outcome.stderr.strip().splitlines()
    assert outcome.crashed is None, outcome.crashed
    assert "Traceback" not in outcome.stderr, outcome.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), f"stderr was:\n{outcome.stderr}"
    assert outcome.returncode == 2, f"exit {outcome.returncode}: {outcome.stderr}"
    assert outcome.new_files == [], f"wrote {outcome.new_files}"
    assert outcome.stdout == ""


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_is_one_line_exit_2_nothing_written(name, tmp_path, monkeypatch):
    assert_refused(in_process(CASES[name], tmp_path / "case", monkeypatch))


@pytest.fixture(scope="module")
def process_outcomes(tmp_path_factory) -> dict[str, Outcome]:
    """The AS_PROCESS cases, two processes at a time (each refusal costs an interpreter start, not a run)."""
    root = tmp_path_factory.mktemp("bad-inputs")
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {name: pool.submit(as_process, CASES[name], root / name) for name in AS_PROCESS}
        return {name: f.result() for name, f in futures.items()}


@pytest.mark.parametrize("name", AS_PROCESS)
def test_bad_input_as_a_real_process(name, process_outcomes):
    assert_refused(process_outcomes[name])


@pytest.mark.parametrize("command", [("report",), ("plot", "curves")])
def test_empty_results_folder_is_one_line_exit_0_for_report_and_plot(command, tmp_path, monkeypatch):
    """`report` and `plot curves` agree on a results folder without runs: they say so, exit 0, write nothing."""
    from click.testing import CliRunner

    from protobench.cli import main

    (tmp_path / "results").mkdir()
    monkeypatch.chdir(tmp_path)
    result = CliRunner(env={"HOME": str(tmp_path), "PROTOBENCH_CACHE": str(tmp_path / "cache"), "COLUMNS": "200"}
                       ).invoke(main, [*command, "--out", "results"])
    assert result.exit_code == 0, result.output
    assert result.stderr.strip().startswith("no runs in results") and len(result.stderr.strip().splitlines()) == 1
    assert snapshot(tmp_path) == {"results"}
