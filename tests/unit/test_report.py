"""Report arithmetic on hand-made run folders with known answers: t-interval, work to target interpolated in log
work, paired speed-up vs the random baseline, unit labels; the SQLite index; `report --json` and `compare --json`."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import pytest
from click.testing import CliRunner

from protobench.cli import main
from protobench.config import RunConfig
from protobench.events import append_event
from protobench.io import atomic_write_json
from protobench.records import load_record
from protobench.report import build_rows, compare_sides, hours_to_target
from protobench.stats import summarize
from protobench.store import index_path, records

T_975_DF2 = 4.302652729911275  # Student t, 97.5% quantile, 2 degrees of freedom (statistical tables)
T_975_DF1 = 12.706204736174707


def make_run(out: Path, conditioner: str, seed: int, fids: list[float], train_hours: list[float],
             prepare_hours: float = 0.0, device: str = "cpu", budget: int = 3000, prepare_images: int = 0,
             work: bool = True, key: str = "fid[digits-evaluator]", options: dict | None = None) -> dict:
    """A finished run folder written the way the engine writes one: config.json + events.jsonl."""
    cfg = RunConfig(conditioner=conditioner, seed=seed, budget=budget, eval_every=budget // len(fids),
                    primary_metric=key.split("[")[0],
                    options={"conditioner": dict(options or {}), "denoiser": {}, "guidance": {}, "sampler": {},
                             "metric": {}, "dataset": {}})
    run_dir = out / "runs" / cfg.run_id()
    run_dir.mkdir(parents=True)
    atomic_write_json(run_dir / "config.json", {
        "run_id": cfg.run_id(), "config": cfg.to_dict(), "config_hash": cfg.hash(), "combination": cfg.combination(),
        "plugins": {}, "dataset_checksum": "x", "device": {"type": device, "name": "test", "count": 1},
    })
    events = run_dir / "events.jsonl"
    append_event(events, {"event": "start"})
    append_event(events, {"event": "prepare", "device_seconds": prepare_hours * 3600, "results": {}})
    seconds = {}
    for i, (fid, hours) in enumerate(zip(fids, train_hours, strict=True)):
        seconds = {"prepare": prepare_hours * 3600, "train": hours * 3600, "eval": 10.0 * (i + 1)}
        seen = (i + 1) * cfg.eval_every
        # machine-independent work as the engine records it: 1 GFLOP per training image, 2 per Stage-I image
        done = {"images": {"prepare": prepare_images, "train": seen},
                "flops": {"prepare": 2e9 * prepare_images, "train": 1e9 * seen}}
        append_event(events, {"event": "eval", "images_seen": seen, "step": i + 1, "device_seconds": seconds,
                              "metrics": {key: fid}, "metrics_se": {key: 0.5}, "samples": 100,
                              **({"work": done} if work else {})})
    append_event(events, {"event": "end", "status": "completed", "device_seconds": seconds})
    return load_record(run_dir)


def baseline_and_proto(out: Path) -> None:
    # random: best 20 @2h, 22 @3h, 24 @3h -> mean best 22, target (worst best) 24, reached at 2h, 3h, 3h
    make_run(out, "random", 0, [40, 20, 25], [1, 2, 3])
    make_run(out, "random", 1, [40, 30, 22], [1, 2, 3])
    make_run(out, "random", 2, [40, 30, 24], [1, 2, 3])
    # none (a stand-in for a faster conditioner), 0.5 h of prepare + 0.5/1.5/2.5 h of train = 1/2/3 h:
    # best 15 @2h, 17 @3h, 19 @3h; reaches 24 at 1h, 1h, 2h -> 4/3 h; speedup (8/3) / (4/3) = 2.0
    make_run(out, "none", 0, [21, 15, 16], [0.5, 1.5, 2.5], prepare_hours=0.5)
    make_run(out, "none", 1, [23, 18, 17], [0.5, 1.5, 2.5], prepare_hours=0.5)
    make_run(out, "none", 2, [25, 21, 19], [0.5, 1.5, 2.5], prepare_hours=0.5)


def interp(w0: float, w1: float, v0: float, v1: float, target: float) -> float:
    """The documented rule: linear in log work between the bracketing evaluations."""
    f = (v0 - target) / (v0 - v1)
    return math.exp(math.log(w0) + f * (math.log(w1) - math.log(w0)))


def test_summarize_mean_and_t_interval():
    s = summarize([1.0, 2.0, 3.0])
    assert s["mean"] == pytest.approx(2.0) and s["n"] == 3
    assert s["ci95"] == pytest.approx(T_975_DF2 * 1.0 / math.sqrt(3))
    single = summarize([7.0])
    assert single["mean"] == 7.0 and single["ci95"] is None and single["n"] == 1


def test_five_seeds_keep_every_value():
    s = summarize([10.0, 1.0, 2.0, 3.0, 100.0])  # no olympic mean: its interval over the kept values under-covers
    assert s["n"] == 5 and s["mean"] == pytest.approx(116 / 5)


def test_hours_to_target_is_interpolated_in_log_work_between_the_bracketing_evaluations(tmp_path):
    r = make_run(tmp_path, "random", 0, [50, 30, 20], [1, 2, 3], prepare_hours=0.25)
    assert hours_to_target(r, 30.0) == pytest.approx(2.25)  # prepare counts too
    assert hours_to_target(r, 49.0) == pytest.approx(interp(1.25, 2.25, 50, 30, 49.0))
    assert hours_to_target(r, 25.0) == pytest.approx(interp(2.25, 3.25, 30, 20, 25.0))
    assert hours_to_target(r, 50.0) == pytest.approx(1.25)  # at the first evaluation: its work
    assert hours_to_target(r, 10.0) is None


def expected_random() -> list[float]:  # random's seeds reach 24 (see baseline_and_proto)
    return [interp(1, 2, 40, 20, 24), interp(2, 3, 30, 22, 24), 3.0]


def test_rows_best_fid_time_to_target_and_paired_speedup(tmp_path):
    baseline_and_proto(tmp_path)
    rows = {r["conditioner"]: r for r in build_rows(records(tmp_path), target=24.0)}
    base, other = rows["random"], rows["none"]
    assert base["best_fid"]["mean"] == pytest.approx(22.0)
    assert base["best_fid"]["ci95"] == pytest.approx(T_975_DF2 * 2.0 / math.sqrt(3))
    assert base["device_hours_to_best"]["mean"] == pytest.approx(8 / 3)
    assert base["target"] == pytest.approx(24.0) and base["target_source"] == "flag"
    assert base["device_hours_to_target"]["mean"] == pytest.approx(sum(expected_random()) / 3)
    assert base["device_hours_to_target"]["reached"] == 3 and base["device_hours_to_target"]["of"] == 3
    assert base["crossings"] == {"between": 1, "at_first": 0, "at_last": 2, "never": 0}
    assert base["speedup_vs_baseline"] == pytest.approx(1.0) and "paired" not in base
    assert other["best_fid"]["mean"] == pytest.approx(17.0)
    assert other["prepare_hours"]["mean"] == pytest.approx(0.5)
    mine = [1.0, 1.0, interp(1, 2, 25, 21, 24)]
    assert other["device_hours_to_target"]["mean"] == pytest.approx(sum(mine) / 3)
    assert other["crossings"] == {"between": 1, "at_first": 2, "at_last": 0, "never": 0}
    logs = [math.log(b / a) for b, a in zip(expected_random(), mine, strict=True)]
    p = other["paired"]
    assert p["seeds"] == 3 and p["work_ratio"]["value"] == pytest.approx(math.exp(sum(logs) / 3))
    half = T_975_DF2 * statistics.stdev(logs) / math.sqrt(3)
    assert p["work_ratio"]["low"] == pytest.approx(math.exp(sum(logs) / 3 - half))
    assert p["work_ratio"]["high"] == pytest.approx(math.exp(sum(logs) / 3 + half))
    diffs = [15 - 20, 17 - 22, 19 - 24]  # paired by seed: no spread, so the interval is the point
    assert p["best_difference"] == {"value": pytest.approx(-5.0), "low": pytest.approx(-5.0), "high": pytest.approx(-5.0)}
    assert p["mde"] == pytest.approx(0.0) and len(diffs) == 3
    assert other["speedup_vs_baseline"] == pytest.approx(p["work_ratio"]["value"])
    assert other["baseline"] == base["combination"]
    assert base["unit"] == "CPU-hours" and base["device_type"] == "cpu"


def test_without_a_declared_target_or_flag_there_is_no_target(tmp_path):
    baseline_and_proto(tmp_path)  # hand-made runs declare none: the report never derives one from the runs it scores
    rows = build_rows(records(tmp_path))
    assert all(r["target"] is None and r["target_source"] is None and r["speedup_vs_baseline"] is None for r in rows)
    arm = next(r for r in rows if r["conditioner"] == "none")  # the difference in best needs no target
    assert arm["paired"]["work_ratio"]["value"] is None and arm["paired"]["best_difference"]["value"] == -5.0


def test_a_target_declared_by_the_preset_is_used_and_named(tmp_path):
    baseline_and_proto(tmp_path)
    for run in (tmp_path / "runs").iterdir():  # as the engine writes it: the dataset's declared target
        meta = json.loads((run / "config.json").read_text())
        meta["target"] = {"metric": "fid", "value": 24.0, "samples": 400, "how": "held-out seeds 100-102"}
        atomic_write_json(run / "config.json", meta)
    rows = {r["conditioner"]: r for r in build_rows(records(tmp_path))}
    assert rows["none"]["target"] == 24.0 and rows["none"]["target_source"] == "preset"
    # FID's bias depends on the sample count: a target declared at 400 samples, runs evaluated at 100, is said
    assert rows["none"]["target_note"].startswith("held-out seeds 100-102; declared at 400 samples")
    flagged = {r["conditioner"]: r for r in build_rows(records(tmp_path), target=30.0)}
    assert flagged["none"]["target"] == 30.0 and flagged["none"]["target_source"] == "flag"


def test_gpu_and_cpu_runs_are_never_pooled(tmp_path):
    baseline_and_proto(tmp_path)
    gpu = tmp_path / "gpu"
    make_run(gpu, "random", 0, [30, 10], [0.1, 0.2], device="cuda")
    for run in (gpu / "runs").iterdir():  # same config as a CPU run, but measured on a GPU
        run.rename(tmp_path / "runs" / (run.name + "-gpu"))
    rows = build_rows(records(tmp_path), target=24.0)
    cuda = [r for r in rows if r["device_type"] == "cuda"]
    assert len(cuda) == 1 and cuda[0]["unit"] == "GPU-hours" and cuda[0]["best_fid"]["n"] == 1
    cpu_random = next(r for r in rows if r["device_type"] == "cpu" and r["conditioner"] == "random")
    assert cpu_random["best_fid"]["n"] == 3 and cpu_random["best_fid"]["mean"] == pytest.approx(22.0)
    # the GPU baseline is its own, and the CPU arm is paired with the CPU baseline
    assert cuda[0]["baseline"] == cuda[0]["combination"]
    assert next(r for r in rows if r["conditioner"] == "none")["baseline"] == cpu_random["combination"]


def test_report_json_reads_the_index_and_the_index_rebuilds(tmp_path):
    baseline_and_proto(tmp_path)
    result = CliRunner().invoke(main, ["report", "--out", str(tmp_path), "--json", "--target", "24"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert {r["conditioner"] for r in rows} == {"random", "none"}
    none = next(r for r in rows if r["conditioner"] == "none")
    assert set(none["best_fid"]) >= {"mean", "ci95", "n"} and none["device_type"] == "cpu"
    assert none["target_source"] == "flag" and set(none["crossings"]) >= {"between", "at_last", "never"}
    assert set(none["paired"]) >= {"seeds", "work_ratio", "best_difference", "mde"}
    assert set(none["paired"]["work_ratio"]) == {"value", "low", "high"} and none["paired"]["work_ratio"]["low"] > 1
    assert index_path(tmp_path).exists()
    index_path(tmp_path).unlink()  # the run folders are the truth: the index comes back from them
    again = json.loads(CliRunner().invoke(main, ["report", "--out", str(tmp_path), "--json", "--target", "24"]).stdout)
    assert again == rows
    # a run removed from disk leaves the index on the next read
    victim = next((tmp_path / "runs").iterdir())
    for f in victim.iterdir():
        f.unlink()
    victim.rmdir()
    assert len(records(tmp_path)) == 5


def test_compare_two_sweeps_marks_better_worse_and_noise(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for seed, fid in enumerate([20.0, 21.0, 22.0]):
        make_run(a, "random", seed, [40, fid], [1, 2])
        make_run(b, "random", seed, [40, fid - 10], [1, 2])  # clearly better FID, the same hours
    result = CliRunner().invoke(main, ["compare", str(a), str(b), "--json"])
    assert result.exit_code == 0, result.output
    (pair,) = json.loads(result.stdout)
    fid = pair["metrics"]["best_fid"]
    assert fid["ratio"] == pytest.approx(11 / 21) and fid["mark"] == "better"
    hours = pair["metrics"]["device_hours_to_best"]
    assert hours["ratio"] == pytest.approx(1.0) and hours["mark"] == "within noise"
    swapped = compare_sides(build_rows(records(b)), build_rows(records(a)))
    assert swapped[0]["metrics"]["best_fid"]["mark"] == "worse"


def test_compare_two_runs_by_id(tmp_path):
    r1 = make_run(tmp_path, "random", 0, [40, 20], [1, 2])
    r2 = make_run(tmp_path, "none", 0, [40, 30], [1, 4])
    result = CliRunner().invoke(main, ["compare", "--out", str(tmp_path), r1["run_id"], r2["run_id"], "--json"])
    assert result.exit_code == 0, result.output
    (pair,) = json.loads(result.stdout)
    assert pair["metrics"]["best_fid"]["ratio"] == pytest.approx(1.5)
    assert pair["metrics"]["device_hours_to_best"]["ratio"] == pytest.approx(2.0)
    assert pair["metrics"]["best_fid"]["mark"] == "worse"
    bad = CliRunner().invoke(main, ["compare", "--out", str(tmp_path), r1["run_id"], "nope"])
    assert bad.exit_code == 2 and "no run 'nope'" in bad.output


def test_no_speedup_when_some_seeds_never_reach_the_target(tmp_path):
    # the target is 24; only one of these three seeds ever gets to 24 or below
    make_run(tmp_path, "random", 0, [40, 20, 25], [1, 2, 3])
    make_run(tmp_path, "random", 1, [40, 30, 22], [1, 2, 3])
    make_run(tmp_path, "random", 2, [40, 30, 24], [1, 2, 3])
    make_run(tmp_path, "none", 0, [21, 15, 16], [0.5, 1.5, 2.5])
    make_run(tmp_path, "none", 1, [30, 27, 25], [0.5, 1.5, 2.5])
    make_run(tmp_path, "none", 2, [30, 26, 28], [0.5, 1.5, 2.5])
    rows = {r["conditioner"]: r for r in build_rows(records(tmp_path), target=24.0)}
    assert rows["none"]["device_hours_to_target"]["reached"] == 1
    assert rows["none"]["crossings"]["never"] == 2 and rows["none"]["paired"]["seeds_reached"] == 1
    assert rows["none"]["speedup_vs_baseline"] is None
    assert rows["random"]["speedup_vs_baseline"] == pytest.approx(1.0)


def test_rows_sharing_their_plugins_are_told_apart_by_the_settings_that_differ(tmp_path):
    make_run(tmp_path, "random", 0, [30, 20], [1, 2], budget=3000)
    make_run(tmp_path, "random", 0, [30, 25], [1, 2], budget=4000)
    make_run(tmp_path, "none", 0, [30, 25], [1, 2], budget=3000)
    rows = build_rows(records(tmp_path))
    variants = sorted(r["variant"] for r in rows if r["conditioner"] == "random")
    assert variants == ["budget=3000 eval_every=1500", "budget=4000 eval_every=2000"]
    assert next(r for r in rows if r["conditioner"] == "none")["variant"] == ""


def test_clock_images_and_flops_charge_prepare_and_rank_by_work(tmp_path):
    # random: budget 3000 in 3 evaluations of 1000 images; best at 2000, 3000, 3000 images
    make_run(tmp_path, "random", 0, [40, 20, 25], [1, 2, 3])
    make_run(tmp_path, "random", 1, [40, 30, 22], [1, 2, 3])
    make_run(tmp_path, "random", 2, [40, 30, 24], [1, 2, 3])
    # proto-like: 500 Stage-I images charged; best at 1000, 2000, 2000 images
    for seed, fids in enumerate([[21, 25, 26], [23, 18, 19], [25, 21, 30]]):
        make_run(tmp_path, "none", seed, fids, [0.5, 1.5, 2.5], prepare_hours=0.5, prepare_images=500)
    rows = {r["conditioner"]: r for r in build_rows(records(tmp_path), clock="images", target=24.0)}
    assert rows["random"]["clock_unit"] == "images"
    assert rows["random"]["to_best"]["mean"] == pytest.approx(8000 / 3)
    assert rows["none"]["to_best"]["mean"] == pytest.approx(500 + 5000 / 3)
    assert rows["none"]["prepare"]["mean"] == pytest.approx(500)
    # target 24, interpolated in log images; Stage I's 500 images are charged before the first evaluation
    theirs = [interp(1000, 2000, 40, 20, 24), interp(2000, 3000, 30, 22, 24), 3000]
    mine = [1500, 1500, interp(1500, 2500, 25, 21, 24)]
    assert rows["none"]["to_target"]["mean"] == pytest.approx(sum(mine) / 3)
    ratio = math.exp(sum(math.log(b / a) for b, a in zip(theirs, mine, strict=True)) / 3)
    assert rows["none"]["speedup_vs_baseline"] == pytest.approx(ratio)
    assert rows["none"]["clocks"]["images"]["work_ratio"]["value"] == pytest.approx(ratio)
    flops = {r["conditioner"]: r for r in build_rows(records(tmp_path), clock="flops", target=24.0)}
    assert flops["none"]["clock_unit"] == "TFLOP"
    assert flops["none"]["prepare"]["mean"] == pytest.approx(500 * 2e9 / 1e12)  # Stage I charged in FLOPs too
    # device-hours stay in every row, whatever the clock
    assert flops["none"]["device_hours_to_best"] == rows["none"]["device_hours_to_best"]
    result = CliRunner().invoke(main, ["report", "--out", str(tmp_path), "--clock", "images"])
    assert result.exit_code == 0, result.output
    assert "images" in result.output


def test_a_clock_a_run_did_not_record_is_one_line(tmp_path):
    make_run(tmp_path, "random", 0, [40, 20], [1, 2], work=False)
    result = CliRunner().invoke(main, ["report", "--out", str(tmp_path), "--clock", "flops"])
    assert result.exit_code == 2
    assert result.output.strip().startswith("error: --clock flops") and len(result.output.strip().splitlines()) == 1


def test_best_honours_the_metric_direction_everywhere(tmp_path):
    # class accuracy goes up: its best evaluation is the highest, in the record (run, sweep lines, index) and report
    r = make_run(tmp_path, "random", 0, [0.05, 0.13, 0.0925], [1, 2, 3], key="class-accuracy[digits-evaluator]")
    assert r["best"]["metric"] == "class-accuracy[digits-evaluator]" and r["best"]["value"] == pytest.approx(0.13)
    assert r["best"]["images_seen"] == 2000
    (row,) = build_rows(records(tmp_path), target=0.1)
    assert row["best"]["mean"] == pytest.approx(0.13) and row["higher_is_better"]
    assert records(tmp_path)[0]["best"]["value"] == pytest.approx(0.13)  # through the SQLite index too
    assert hours_to_target(r, 0.1) == pytest.approx(interp(1, 2, 0.05, 0.13, 0.1))  # reached going up


def test_the_baseline_is_keyed_with_the_conditioner_options(tmp_path):
    for dim, base_fids, arm_fids in ((32, [40, 30], [40, 20]), (128, [40, 22], [40, 21])):
        for seed in (0, 1):
            make_run(tmp_path, "random", seed, base_fids, [1, 2], options={"dim": dim})
            make_run(tmp_path, "proto-frozen", seed, arm_fids, [1, 2], options={"dim": dim, "stage1_epochs": 5})
    rows = build_rows(records(tmp_path), target=25.0)
    by = {(r["conditioner"], r["variant"]): r for r in rows}
    for dim in (32, 128):
        arm, base = by[("proto-frozen", f"conditioner.dim={dim}")], by[("random", f"conditioner.dim={dim}")]
        assert arm["baseline"] == base["combination"]
    # at dim 32 the baseline never reaches 25 (its best is 30): no speed-up; at dim 128 both do
    assert by[("random", "conditioner.dim=32")]["crossings"]["never"] == 2
    assert by[("proto-frozen", "conditioner.dim=32")]["speedup_vs_baseline"] is None
    assert by[("proto-frozen", "conditioner.dim=128")]["speedup_vs_baseline"] is not None


def test_an_ambiguous_baseline_is_one_line(tmp_path):
    # two random rows differ by an option the arm does not have: which is its baseline cannot be told
    for std in (0.02, 1.0):
        make_run(tmp_path, "random", 0, [40, 30], [1, 2], options={"dim": 32, "init_std": std})
    make_run(tmp_path, "proto-frozen", 0, [40, 20], [1, 2], options={"dim": 32})
    result = CliRunner().invoke(main, ["report", "--out", str(tmp_path), "--target", "25"])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "ambiguous baseline" in lines[0] and "init_std" in lines[0]


def test_the_report_fits_80_columns_and_never_wraps_a_number(tmp_path):
    import os
    import re
    import subprocess
    import sys

    for seed in range(3):  # realistic magnitudes: intra-FID-like values, CPU-hours of a few thousandths
        make_run(tmp_path, "random", seed, [107.3 + seed, 39.2, 12.51 + seed], [0.0031, 0.0062, 0.0093])
        make_run(tmp_path, "proto-unfrozen", seed, [91.0, 35.3 + seed, 11.46], [0.0061, 0.0092, 0.0123],
                 prepare_hours=0.003, options={"stage1_epochs": 5})
        make_run(tmp_path, "none", seed, [140.1, 120.2, 107.29 + seed], [0.0031, 0.0062, 0.0093])
    env = {**os.environ, "COLUMNS": "80"}
    out = subprocess.run([sys.executable, "-m", "protobench", "report", "--out", str(tmp_path), "--target", "20"],
                         capture_output=True, text=True, env=env, check=True).stderr
    rows = json.loads(subprocess.run([sys.executable, "-m", "protobench", "report", "--out", str(tmp_path),
                                      "--target", "20", "--json"], capture_output=True, text=True, env=env,
                                     check=True).stdout)
    table = out.split("best: each seed")[0]  # the footnote is prose and may wrap
    assert max(len(line) for line in table.splitlines()) <= 80, table
    proto = next(r for r in rows if r["conditioner"] == "proto-unfrozen")
    ratio, diff = proto["paired"]["work_ratio"], proto["paired"]["best_difference"]
    # each interval whole on its row's line (a wrapped number would be split over lines)
    def g(x: float) -> str:  # three significant figures, as printed
        return f"{x:#.3g}".rstrip(".")

    speed = f"{g(ratio['value'])}× [{g(ratio['low'])}, {g(ratio['high'])}]"
    delta = f"{g(diff['value'])} [{g(diff['low'])}, {g(diff['high'])}]"
    lines = [line for line in table.splitlines() if line.strip().startswith("proto-unfrozen")]
    assert any(speed in line and delta in line for line in lines), table
    assert any(f"{g(proto['best']['mean'])}±" in line for line in lines), table
    assert all(re.search(r"\d", line) for line in lines)
    every = subprocess.run([sys.executable, "-m", "protobench", "report", "--out", str(tmp_path), "--target", "20",
                            "--clock", "all"], capture_output=True, text=True, env=env, check=True).stderr
    tables = every.split("best: each seed")[0]
    assert max(len(line) for line in tables.splitlines()) <= 80 and "(TFLOP)" in tables and "(images)" in tables
    wide = subprocess.run([sys.executable, "-m", "protobench", "report", "--out", str(tmp_path), "--target", "20",
                           "--wide", "--clock", "all"], capture_output=True, text=True, env={**env, "COLUMNS": "250"},
                          check=True).stderr
    assert "to target (images)" in wide and "to target (TFLOP)" in wide


def test_compare_of_single_runs_uses_each_evaluations_standard_error(tmp_path):
    r1 = make_run(tmp_path, "random", 0, [40, 20.0], [1, 2])  # make_run records a bootstrap se of 0.5
    r2 = make_run(tmp_path, "none", 0, [40, 20.9], [1, 2])
    r3 = make_run(tmp_path, "random", 1, [40, 25.0], [1, 2])
    close = CliRunner().invoke(main, ["compare", "--out", str(tmp_path), r1["run_id"], r2["run_id"], "--json"])
    (pair,) = json.loads(close.stdout)
    assert pair["metrics"]["best_fid"]["mark"] == "within noise"  # 0.9 < 1.96 · √(0.5² + 0.5²)
    far = CliRunner().invoke(main, ["compare", "--out", str(tmp_path), r1["run_id"], r3["run_id"], "--json"])
    assert json.loads(far.stdout)[0]["metrics"]["best_fid"]["mark"] == "worse"
