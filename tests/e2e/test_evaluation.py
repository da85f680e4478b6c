"""What each evaluation records about its own error, and the careful final evaluation: real digits runs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from click.testing import CliRunner

from protobench.cli import main
from protobench.events import scan_events

TINY = ["-o", "denoiser.base_channels=8", "-o", "sampler.steps=3", "--quiet"]


@pytest.fixture
def cache(protobench_cache):
    """The session's evaluator cache (protobench.testing), so the evaluator trains once."""
    return protobench_cache


def _run(args: list[str], out: Path):
    return CliRunner().invoke(main, ["run", "--out", str(out), *args])


def test_every_eval_event_carries_metrics_se_and_the_final_one_draws_a_sample_per_dimension(tmp_path, cache):
    result = _run(["--budget", "256", "--eval-every", "128", "--eval-samples", "20", "--json", *TINY], tmp_path)
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout[: result.stdout.rindex("}") + 1])
    events, _ = scan_events(Path(record["path"]) / "events.jsonl")
    evals = [e for e in events if e.get("event") == "eval"]
    assert len(evals) == 2
    primary = record["best"]["metric"]
    assert primary.startswith(record["config"]["primary_metric"] + "[")
    for ev in evals:  # bootstrap standard errors of each metric, positive and finite, beside the values
        assert ev["samples"] == 20
        assert set(ev["metrics_se"]) >= {primary, "intra-fid[digits-evaluator]", "class-accuracy[digits-evaluator]"}
        assert all(math.isfinite(v) and v > 0 for v in ev["metrics_se"].values())
    # the last evaluation: 128 samples per class (the digits evaluator's 128 features), scored beside the
    # 20-sample values that keep the curve at one sample count
    final = evals[-1]["final"]
    assert final["samples"] == 1280 and "final" not in evals[0]
    assert set(final["metrics"]) >= {primary, "intra-fid[digits-evaluator]"}
    assert final["metrics_se"]["intra-fid[digits-evaluator]"] < evals[-1]["metrics_se"]["intra-fid[digits-evaluator]"]


def test_a_final_evaluation_with_too_few_samples_per_class_is_refused(tmp_path, cache):
    args = ["--budget", "128", "--eval-every", "128", "--eval-samples", "20", "-o", "final_eval_samples=200", *TINY]
    result = _run(args, tmp_path)
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "20 samples per class" in lines[0] and "128 feature dimensions" in lines[0]
    assert "final_eval_samples >= 1280" in lines[0] and "few_final_samples" in lines[0]
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())  # nothing written
    allowed = _run([*args, "-o", "few_final_samples=true", "--json"], tmp_path)
    assert allowed.exit_code == 0, allowed.output
