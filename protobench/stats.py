"""Statistics over seeds: a single arm's mean ± t-interval, and an arm paired with the baseline seed by seed.

Paired (same seed: same data order, same noise draws): per seed, the baseline's work to target divided by the
arm's (the speed-up, > 1 is faster), and the arm's best metric minus the baseline's. The interval on the
speed-up is taken on the log ratios and mapped back (a geometric mean). The method is chosen by the calibration
test (tests/unit/test_stats.py, 200 simulated sweeps at 3 and at 10 seeds): Student's t on the paired values covers
95% at both, while a percentile bootstrap under-covers at 3 seeds (10 distinct resamples), so `METHOD` is t.
The minimum detectable difference is the true paired difference a two-sided 5% paired t-test would detect with
80% power at this number of seeds, given the paired values' spread.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

LEVEL = 0.95
POWER = 0.80
#: what the calibration test chose (see the module docstring); "bootstrap" is the alternative it measures
METHOD = "t"
METHOD_NAME = "paired t-interval (Student's t on per-seed differences; the speed-up on log ratios)"


def t_within(t: float, df: int) -> float:
    """P(|T| <= t) for Student's t with an integer `df` >= 1, t >= 0: the closed-form finite series
    (Abramowitz & Stegun 26.7.3-4), a sum of positive terms, exact to rounding."""
    theta = math.atan(t / math.sqrt(df))
    c2 = math.cos(theta) ** 2
    if df % 2 == 0:
        term, total = 1.0, 1.0
        for k in range(1, df // 2):  # (1·3···(2k−1))/(2·4···2k) cos^{2k}θ
            term *= c2 * (2 * k - 1) / (2 * k)
            total += term
        return math.sin(theta) * total
    if df == 1:
        return 2 * theta / math.pi
    term = total = math.cos(theta)
    for k in range(1, (df - 1) // 2):  # (2·4···2k)/(3·5···(2k+1)) cos^{2k+1}θ
        term *= c2 * (2 * k) / (2 * k + 1)
        total += term
    return 2 / math.pi * (theta + math.sin(theta) * total)


@functools.lru_cache(maxsize=256)
def t_quantile(df: int, q: float = 0.975) -> float:
    """The `q` quantile of Student's t with integer `df` (scipy.stats.t.ppf's value, to within 1e-12
    relative): bisection on the closed-form CDF, so that reading results imports no scipy (`import
    scipy.special` took 0.23 to 0.34 s here, one thread). Cached: a report asks for the same few (df, q) often."""
    if int(df) != df or df < 1 or not 0 < q < 1:
        raise ValueError(f"t_quantile needs an integer df >= 1 and 0 < q < 1, not df={df}, q={q}")
    if q < 0.5:
        return -t_quantile(df, 1 - q)
    target = 2 * q - 1  # P(|T| <= t)
    low, high = 0.0, 1.0
    while t_within(high, int(df)) < target:
        high *= 2
    for _ in range(200):
        mid = (low + high) / 2
        if mid in (low, high):
            break
        low, high = (mid, high) if t_within(mid, int(df)) < target else (low, mid)
    return (low + high) / 2


def summarize(values: list[float]) -> dict[str, Any]:
    """{mean, ci95, n}: the mean over seeds and the half-width of its 95% Student-t interval (None below 2)."""
    vals = [float(v) for v in values]
    n = len(vals)
    if not n:
        return {"mean": None, "ci95": None, "n": 0}
    mean = sum(vals) / n
    ci = None
    if n >= 2:
        sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1))
        ci = t_quantile(n - 1) * sd / math.sqrt(n)
    return {"mean": mean, "ci95": ci, "n": n}


def interval(values: list[float], method: str = METHOD, seed: int = 0) -> dict[str, float | None]:
    """{value, low, high}: the mean of `values` and its 95% interval (None where fewer than 2 values)."""
    x = np.asarray(values, dtype=np.float64)
    if len(x) == 0:
        return {"value": None, "low": None, "high": None}
    mean = float(x.mean())
    if len(x) < 2:
        return {"value": mean, "low": None, "high": None}
    if np.ptp(x) == 0:  # no spread: the interval is the point
        return {"value": mean, "low": mean, "high": mean}
    if method == "t":  # mean ± t_{(1+LEVEL)/2, n-1} · s / √n: scipy.stats.ttest_1samp's confidence interval
        half = t_quantile(len(x) - 1, 1 - (1 - LEVEL) / 2) * float(x.std(ddof=1)) / math.sqrt(len(x))
        return {"value": mean, "low": mean - half, "high": mean + half}
    if method == "bootstrap":
        from scipy.stats import bootstrap

        res = bootstrap((x,), np.mean, confidence_level=LEVEL, method="percentile", n_resamples=2000,
                        random_state=np.random.default_rng(seed), vectorized=True)
        return {"value": mean, "low": float(res.confidence_interval.low), "high": float(res.confidence_interval.high)}
    raise ValueError(f"unknown interval method {method!r}")


def mde(values: list[float]) -> float | None:
    """The smallest true mean difference a two-sided 5% paired t-test detects with 80% power at this many seeds:
    (t_{0.975, n-1} + t_{0.80, n-1}) · s / √n."""
    x = np.asarray(values, dtype=np.float64)
    n = len(x)
    if n < 2:
        return None
    s = float(x.std(ddof=1))
    return (t_quantile(n - 1, 1 - (1 - LEVEL) / 2) + t_quantile(n - 1, POWER)) * s / math.sqrt(n)


def paired(base_work: list[float | None], arm_work: list[float | None], base_best: list[float],
           arm_best: list[float], method: str = METHOD) -> dict[str, Any]:
    """The arm against the baseline, seed by seed (the lists are aligned by seed).

    work_ratio: baseline work / arm work over the seeds where both reached the target (> 1: the arm is
    faster), geometric mean and interval from the log ratios. best_difference: arm best − baseline best over
    every shared seed. mde: for best_difference, in the metric's units; work_ratio_mde: as a ratio (× or ÷)."""
    logs = [math.log(b / a) for b, a in zip(base_work, arm_work, strict=True)
            if b is not None and a is not None and b > 0 and a > 0]
    diffs = [a - b for b, a in zip(base_best, arm_best, strict=True)]
    log_ci = interval(logs, method)
    ratio = {k: (math.exp(v) if v is not None else None) for k, v in log_ci.items()}
    log_mde = mde(logs)
    return {"seeds": len(diffs), "seeds_reached": len(logs), "method": method,
            "work_ratio": ratio, "best_difference": interval(diffs, method), "mde": mde(diffs),
            "work_ratio_mde": math.exp(log_mde) if log_mde is not None else None}
