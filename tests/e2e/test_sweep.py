"""Sweeps: axes expand to their cartesian product; a combination that fails is recorded and the others finish;
the exit code says so; running the sweep again skips what finished."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from protobench.errors import UsageError
from protobench.store import records
from protobench.sweep import DEFAULT_SWEEP, expand, load_sweep_toml, split_overrides


def test_pipe_sweeps_an_option_and_commas_stay_inside_tuple_values():
    fixed, swept = split_overrides(["lr=1e-4", "denoiser.channel_mult=1,2|1,2,2", "denoiser.dropout=0|0.1"])
    assert fixed == ["lr=1e-4"]
    assert swept == {"denoiser.channel_mult": ["1,2", "1,2,2"], "denoiser.dropout": ["0", "0.1"]}
    with pytest.raises(UsageError, match="unknown config key"):
        split_overrides(["nonsense=1|2"])


def test_expand_is_the_cartesian_product_with_seed_outermost():
    combos = expand({"conditioner": ["random", "none"], "seed": [0, 1], "lr": [1, 2]})
    assert len(combos) == 8
    assert [c["seed"] for c in combos] == [0, 0, 0, 0, 1, 1, 1, 1]
    assert {tuple(sorted(c.items())) for c in combos} == {
        (("conditioner", k), ("lr", lr), ("seed", s)) for k in ("random", "none") for lr in (1, 2) for s in (0, 1)}
    default = expand(DEFAULT_SWEEP)
    assert len(default) == 12
    assert {c["conditioner"] for c in default} == {"none", "random", "proto-frozen", "proto-unfrozen"}


def test_sweep_toml(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text('budget = 640\n[options.denoiser]\nbase_channels = 8\n'
                    '[sweep]\nconditioner = ["random", "none"]\nseed = [0, 1, 2]\n"denoiser.dropout" = [0.0]\n')
    fixed, lists = load_sweep_toml(path)
    assert fixed == {"budget": 640, "denoiser.base_channels": 8}
    assert lists == {"conditioner": ["random", "none"], "seed": [0, 1, 2], "denoiser.dropout": [0.0]}
    path.write_text('[sweep]\nbogus = [1]\n')
    with pytest.raises(UsageError, match="bogus"):
        load_sweep_toml(path)


SWEEP = ["sweep", "--conditioner", "random,none,no-such-conditioner", "--seed", "0", "--budget", "64",
         "--eval-every", "64", "--eval-samples", "20", "-o", "batch_size=32", "-o", "denoiser.base_channels=8",
         "-o", "denoiser.num_res_blocks=1", "-o", "sampler.steps=3", "-o", "denoiser.join=concat|bogus",
         "--json", "--quiet"]


@pytest.mark.slow
def test_failing_combination_is_recorded_others_finish_and_rerun_skips(tmp_path, env):
    out = tmp_path / "out"
    first = subprocess.run([sys.executable, "-m", "protobench.cli", *SWEEP, "--out", str(out)], env=env,
                           capture_output=True, text=True, timeout=900)
    assert first.returncode == 1, first.stderr[-3000:]
    recs = json.loads(first.stdout)
    assert len(recs) == 6  # 3 conditioners × 2 joins
    done = [r for r in recs if r["status"] == "completed"]
    failed = [r for r in recs if r["status"] == "failed"]
    assert sorted(r["config"]["conditioner"] for r in done) == ["none", "random"]
    assert all(r["config"]["options"]["denoiser"]["join"] == "concat" for r in done)
    assert all(r["best"] is not None for r in done)
    assert len(failed) == 4
    # a plugin that refuses its options at construction, or an unknown plugin name: refused before the run
    # holds a record; the sweep's records and manifest say why
    joins = [r for r in failed if "join must be" in r["error"]]
    unknown = [r for r in failed if "no-such-conditioner" in r["error"]]
    assert len(joins) == 2 and len(unknown) == 2
    assert records(out, status="failed") == []
    (manifest,) = (out / "sweeps").glob("*.json")
    assert sum(e["status"] == "failed" for e in json.loads(manifest.read_text())["runs"]) == 4
    assert "failed" in first.stderr

    logs = {r["run_id"]: (Path(r["path"]) / "events.jsonl").read_text() for r in done}
    second = subprocess.run([sys.executable, "-m", "protobench.cli", *SWEEP, "--out", str(out)], env=env,
                            capture_output=True, text=True, timeout=900)
    assert second.returncode == 1
    again = {r["run_id"]: r for r in json.loads(second.stdout) if r["status"] == "completed"}
    assert set(again) == set(logs)
    for run_id, log in logs.items():  # skipped: not one event more
        assert (out / "runs" / run_id / "events.jsonl").read_text() == log
        assert again[run_id]["evals"] == next(r for r in done if r["run_id"] == run_id)["evals"]
    # the failed ones were tried again, and failed again
    assert sum(r["status"] == "failed" for r in json.loads(second.stdout)) == 4

    # the figures over the sweep: learning curves, and a run's samples one row per class
    from PIL import Image

    curves = subprocess.run([sys.executable, "-m", "protobench.cli", "plot", "curves", "--out", str(out)], env=env,
                            capture_output=True, text=True, timeout=300)
    assert curves.returncode == 0, curves.stderr
    assert Image.open(out / "curves.png").size[0] > 100
    grid = tmp_path / "grid.png"
    samples = subprocess.run([sys.executable, "-m", "protobench.cli", "plot", "samples", "--out", str(out),
                              done[0]["run_id"], "--output", str(grid)], env=env, capture_output=True, text=True,
                             timeout=300)
    assert samples.returncode == 0, samples.stderr
    # 10 classes × 10 samples of 8×8 shown 8× larger, 2-pixel gaps, a 64-pixel label margin
    assert Image.open(grid).size == (64 + 10 * 64 + 11 * 2, 10 * 64 + 11 * 2)


def test_parallel_sweep_spreads_arms_that_share_a_prepare_step():
    """proto-frozen and proto-unfrozen of a seed share Stage I: run side by side both would compute it."""
    from types import SimpleNamespace

    from protobench.sweep import spread as _spread

    jobs = [SimpleNamespace(cfg=SimpleNamespace(dataset="digits", seed=s, conditioner=c), name=f"{c}{s}")
            for s in (0, 1) for c in ("none", "random", "proto-frozen", "proto-unfrozen")]
    order = [j.name for j in _spread(jobs)]
    assert sorted(order) == sorted(j.name for j in jobs)
    assert order[:4] == ["proto-frozen0", "none0", "proto-unfrozen0", "random0"]
    for a, b in zip(order, order[1:], strict=False):  # two jobs at a time: never the two proto arms of a seed
        assert {a[:-1], b[:-1]} != {"proto-frozen", "proto-unfrozen"} or a[-1] != b[-1]
