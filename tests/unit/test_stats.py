"""The report's statistics, checked by simulation (fixed RNG, synthetic records, no training): the paired 95%
intervals cover the truth at 3 and at 10 seeds, which is how stats.METHOD was chosen, and an arm that needs half
the work is found faster."""

from __future__ import annotations

import numpy as np
import pytest

from protobench import stats
from protobench.report import build_rows, crossing
from protobench.stats import t_quantile

KEY = "fid[digits-evaluator]"
EVALS = 8  # as the digits preset: 8 evaluations per run
STEP = 1000  # images between evaluations
TARGET = 5.0 + 100.0 * np.exp(-5000 / 4000)  # reached near the 5th evaluation by a typical seed


def record(conditioner: str, seed: int, tau: float, noise: np.ndarray) -> dict:
    """A finished run: metric(images) = 100·exp(−images/tau) + 5 + evaluation noise."""
    evals = []
    for j in range(1, EVALS + 1):
        seen = j * STEP
        evals.append({"images_seen": seen, "step": j, "metrics": {KEY: float(100 * np.exp(-seen / tau) + 5 + noise[j - 1])},
                      "device_seconds": {"prepare": 0.0, "train": float(seen), "eval": 1.0},
                      "work": {"images": {"prepare": 0, "train": seen}, "flops": {"prepare": 0, "train": seen * 1e9}}})
    config = {"dataset": "digits", "conditioner": conditioner, "denoiser": "unet", "guidance": "cfg",
              "sampler": "dpm-solver++", "seed": seed, "options": {"conditioner": {}}}
    return {"run_id": f"{conditioner}-{seed}", "status": "completed", "combination": conditioner, "config": config,
            "device": {"type": "cpu"}, "instruments": {"digits-evaluator": "x"}, "evals": evals}


def sweep(rng: np.random.Generator, seeds: int, speed: float) -> list[dict]:
    """The baseline and an arm `speed` times faster; a seed shares its difficulty across arms (pairing)."""
    runs = []
    for seed in range(seeds):
        tau = 4000 * np.exp(0.15 * rng.standard_normal())  # the seed: data order, noise draws
        for conditioner, factor in (("random", 1.0), ("none", speed)):
            run_tau = tau * np.exp(0.1 * rng.standard_normal()) / factor  # the run's own training noise
            runs.append(record(conditioner, seed, run_tau, 1.5 * rng.standard_normal(EVALS)))
    return runs


def simulate(seeds: int, speed: float, sweeps: int = 200, bootstrap: bool = True) -> dict[str, list]:
    rng = np.random.default_rng(12345 + seeds)
    found: dict[str, list] = {"ratio": [], "difference": [], "bootstrap_ratio": [], "bootstrap_difference": []}
    for _ in range(sweeps):
        runs = sweep(rng, seeds, speed)
        arm = next(r for r in build_rows(runs, target=TARGET, clock="images") if r["conditioner"] == "none")
        found["ratio"].append(arm["paired"]["work_ratio"])
        found["difference"].append(arm["paired"]["best_difference"])
        if not bootstrap:
            continue
        base = [r for r in runs if r["config"]["conditioner"] == "random"]
        mine = [r for r in runs if r["config"]["conditioner"] == "none"]
        work = [[crossing(r, TARGET, KEY, "images")["work"] for r in side] for side in (base, mine)]
        best = [[min(e["metrics"][KEY] for e in r["evals"]) for r in side] for side in (base, mine)]
        boot = stats.paired(work[0], work[1], best[0], best[1], method="bootstrap")
        found["bootstrap_ratio"].append(boot["work_ratio"])
        found["bootstrap_difference"].append(boot["best_difference"])
    return found


def coverage(intervals: list[dict], truth: float) -> float:
    return float(np.mean([iv["low"] <= truth <= iv["high"] for iv in intervals]))


@pytest.mark.parametrize("seeds", [3, 10])
def test_paired_intervals_cover_at_this_number_of_seeds(seeds):
    found = simulate(seeds, speed=1.0)  # the arm is the baseline plus noise: ratio 1, difference 0
    assert stats.METHOD == "t"
    assert 0.90 <= coverage(found["ratio"], 1.0) <= 0.99
    assert 0.90 <= coverage(found["difference"], 0.0) <= 0.99
    if seeds == 3:  # why the bootstrap was not chosen: 10 distinct resamples of 3 seeds under-cover
        assert coverage(found["bootstrap_ratio"], 1.0) < 0.90
        assert coverage(found["bootstrap_difference"], 0.0) < 0.90


@pytest.mark.parametrize("seeds", [3, 10])
def test_an_arm_needing_half_the_work_is_reported_faster(seeds):
    found = simulate(seeds, speed=2.0, bootstrap=False)
    above = np.mean([iv["low"] > 1.0 for iv in found["ratio"]])
    assert above > 0.5
    assert np.median([iv["value"] for iv in found["ratio"]]) == pytest.approx(2.0, rel=0.15)


def test_mde_shrinks_with_seeds_and_is_zero_without_spread():
    rng = np.random.default_rng(0)
    diffs = rng.standard_normal(40)
    assert stats.mde(list(diffs[:10])) < stats.mde(list(diffs[:3]))
    assert stats.mde([1.0, 1.0, 1.0]) == 0.0 and stats.mde([1.0]) is None


@pytest.mark.parametrize("q", [0.6, 0.8, 0.9, 0.95, 0.975, 0.99, 0.995, 0.9995, 0.025, 0.2])
def test_t_quantile_is_scipys_to_1e12(q):  # that reading results imports no scipy: test_no_torch.py
    from scipy.special import stdtrit

    for df in [*range(1, 301), 500, 1000, 5000]:
        ours, theirs = t_quantile(df, q), float(stdtrit(df, q))
        assert abs(ours - theirs) <= 1e-12 * abs(theirs), (df, q, ours, theirs)


def test_t_quantile_refuses_what_it_cannot_compute():
    for df, q in ((0, 0.975), (2.5, 0.975), (3, 1.0), (3, 0.0)):
        with pytest.raises(ValueError):
            t_quantile(df, q)
