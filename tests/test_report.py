"""Report arithmetic on hand-made run folders with known answers: olympic mean, t-interval, time to target,
speedup vs the random baseline, unit labels; the SQLite index; `report --json` and `compare --json`."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from click.testing import CliRunner

from protobench.cli import main
from protobench.config import RunConfig
from protobench.io import append_event, atomic_write_json
from protobench.records import load_record
from protobench.report import build_rows, compare_sides, hours_to_target, summarize
from protobench.store import index_path, records

T_975_DF2 = 4.302652729911275  # Student t, 97.5% quantile, 2 degrees of freedom (statistical tables)
T_975_DF1 = 12.706204736174707


def make_run(out: Path, conditioner: str, seed: int, fids: list[float], train_hours: list[float],
             prepare_hours: float = 0.0, device: str = "cpu", budget: int = 3000, prepare_images: int = 0,
             work: bool = True) -> dict:
    """A finished run folder written the way the engine writes one: config.json + events.jsonl."""
    cfg = RunConfig(conditioner=conditioner, seed=seed, budget=budget, eval_every=budget // len(fids))
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
                              "metrics": {"fid[digits-evaluator]": fid}, **({"work": done} if work else {})})
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


def test_summarize_mean_and_t_interval():
    s = summarize([1.0, 2.0, 3.0])
    assert s["mean"] == pytest.approx(2.0) and s["n"] == 3 and not s["olympic"]
    assert s["ci95"] == pytest.approx(T_975_DF2 * 1.0 / math.sqrt(3))
    single = summarize([7.0])
    assert single["mean"] == 7.0 and single["ci95"] is None and single["n"] == 1


def test_olympic_mean_drops_best_and_worst_from_five_seeds():
    s = summarize([10.0, 1.0, 2.0, 3.0, 100.0])
    assert s["olympic"] and s["n"] == 5
    assert s["mean"] == pytest.approx(5.0)  # mean of 2, 3, 10
    sd = math.sqrt(((2 - 5) ** 2 + (3 - 5) ** 2 + (10 - 5) ** 2) / 2)
    assert s["ci95"] == pytest.approx(T_975_DF2 * sd / math.sqrt(3))
    four = summarize([10.0, 1.0, 2.0, 3.0])
    assert not four["olympic"] and four["mean"] == pytest.approx(4.0)


def test_hours_to_target_is_first_eval_at_or_below(tmp_path):
    r = make_run(tmp_path, "random", 0, [50, 30, 20], [1, 2, 3], prepare_hours=0.25)
    assert hours_to_target(r, 30.0) == pytest.approx(2.25)  # prepare counts too
    assert hours_to_target(r, 49.0) == pytest.approx(2.25)
    assert hours_to_target(r, 50.0) == pytest.approx(1.25)
    assert hours_to_target(r, 10.0) is None


def test_rows_best_fid_time_to_target_and_speedup(tmp_path):
    baseline_and_proto(tmp_path)
    rows = {r["conditioner"]: r for r in build_rows(records(tmp_path))}
    base, other = rows["random"], rows["none"]
    assert base["best_fid"]["mean"] == pytest.approx(22.0)
    assert base["best_fid"]["ci95"] == pytest.approx(T_975_DF2 * 2.0 / math.sqrt(3))
    assert base["device_hours_to_best"]["mean"] == pytest.approx(8 / 3)
    assert base["target"] == pytest.approx(24.0) and other["target"] == pytest.approx(24.0)
    assert base["device_hours_to_target"]["mean"] == pytest.approx(8 / 3)
    assert base["device_hours_to_target"]["reached"] == 3 and base["device_hours_to_target"]["of"] == 3
    assert base["speedup_vs_baseline"] == pytest.approx(1.0)
    assert other["best_fid"]["mean"] == pytest.approx(17.0)
    assert other["device_hours_to_best"]["mean"] == pytest.approx(8 / 3)
    assert other["prepare_hours"]["mean"] == pytest.approx(0.5)
    assert other["device_hours_to_target"]["mean"] == pytest.approx(4 / 3)
    assert other["speedup_vs_baseline"] == pytest.approx(2.0)
    assert other["baseline"] == base["combination"]
    assert base["unit"] == "CPU-hours" and base["device_type"] == "cpu"


def test_explicit_target(tmp_path):
    baseline_and_proto(tmp_path)
    rows = {r["conditioner"]: r for r in build_rows(records(tmp_path), target=30.0)}
    assert rows["random"]["device_hours_to_target"]["mean"] == pytest.approx(2.0)  # 20, 30, 30 at 2h
    assert rows["none"]["device_hours_to_target"]["mean"] == pytest.approx(1.0)
    assert rows["none"]["speedup_vs_baseline"] == pytest.approx(2.0)


def test_gpu_and_cpu_runs_are_never_pooled(tmp_path):
    baseline_and_proto(tmp_path)
    gpu = tmp_path / "gpu"
    make_run(gpu, "random", 0, [30, 10], [0.1, 0.2], device="cuda")
    for run in (gpu / "runs").iterdir():  # same config as a CPU run, but measured on a GPU
        run.rename(tmp_path / "runs" / (run.name + "-gpu"))
    rows = build_rows(records(tmp_path))
    cuda = [r for r in rows if r["device_type"] == "cuda"]
    assert len(cuda) == 1 and cuda[0]["unit"] == "GPU-hours" and cuda[0]["best_fid"]["n"] == 1
    cpu_random = next(r for r in rows if r["device_type"] == "cpu" and r["conditioner"] == "random")
    assert cpu_random["best_fid"]["n"] == 3 and cpu_random["best_fid"]["mean"] == pytest.approx(22.0)
    # the GPU baseline is its own: its target is its own best, not the CPU baseline's
    assert cuda[0]["target"] == pytest.approx(10.0)


def test_report_json_reads_the_index_and_the_index_rebuilds(tmp_path):
    baseline_and_proto(tmp_path)
    result = CliRunner().invoke(main, ["report", "--out", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert {r["conditioner"] for r in rows} == {"random", "none"}
    none = next(r for r in rows if r["conditioner"] == "none")
    assert set(none["best_fid"]) >= {"mean", "ci95", "n"} and none["device_type"] == "cpu"
    assert none["speedup_vs_baseline"] == pytest.approx(2.0)
    assert index_path(tmp_path).exists()
    index_path(tmp_path).unlink()  # the run folders are the truth: the index comes back from them
    again = json.loads(CliRunner().invoke(main, ["report", "--out", str(tmp_path), "--json"]).stdout)
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
    # the target is 24, the worst of random's bests; only one of these three seeds ever gets to 24 or below
    make_run(tmp_path, "random", 0, [40, 20, 25], [1, 2, 3])
    make_run(tmp_path, "random", 1, [40, 30, 22], [1, 2, 3])
    make_run(tmp_path, "random", 2, [40, 30, 24], [1, 2, 3])
    make_run(tmp_path, "none", 0, [21, 15, 16], [0.5, 1.5, 2.5])
    make_run(tmp_path, "none", 1, [30, 27, 25], [0.5, 1.5, 2.5])
    make_run(tmp_path, "none", 2, [30, 26, 28], [0.5, 1.5, 2.5])
    rows = {r["conditioner"]: r for r in build_rows(records(tmp_path))}
    assert rows["none"]["device_hours_to_target"]["reached"] == 1
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
    rows = {r["conditioner"]: r for r in build_rows(records(tmp_path), clock="images")}
    assert rows["random"]["clock_unit"] == "images"
    assert rows["random"]["to_best"]["mean"] == pytest.approx(8000 / 3)
    assert rows["none"]["to_best"]["mean"] == pytest.approx(500 + 5000 / 3)
    assert rows["none"]["prepare"]["mean"] == pytest.approx(500)
    # target 24 (the worst of random's bests): random at 2000, 3000, 3000; none at 1500, 1500, 2500
    assert rows["none"]["to_target"]["mean"] == pytest.approx(5500 / 3)
    assert rows["none"]["speedup_vs_baseline"] == pytest.approx((8000 / 3) / (5500 / 3))
    flops = {r["conditioner"]: r for r in build_rows(records(tmp_path), clock="flops")}
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
