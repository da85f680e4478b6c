"""A real 2-process DeepSpeed run on CPU (gloo), stopped after its first checkpoint and resumed, against a
1-process run of the same global batch: same weights on both ranks, device.count 2, the same loss curve and
(within float tolerance) the same final weights."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from protobench.events import read_events

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

# dropout draws differ between process counts (each rank draws for its slice): off for the comparison
ARGS = ["--budget", "256", "--eval-every", "64", "--eval-samples", "20", "-o", "batch_size=32", "-o", "log_every=1",
        "-o", "denoiser.base_channels=8", "-o", "denoiser.num_res_blocks=1", "-o", "denoiser.dropout=0",
        "-o", "sampler.steps=3", "--quiet"]


def protobench(*args: str, env: dict, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "protobench.cli", *args], env=env, capture_output=True, text=True,
                          timeout=900, **kw)


def losses(run_dir: Path) -> dict[int, float]:
    """mse per step; a step logged again after a resume keeps its last value."""
    return {e["step"]: e["mse"] for e in read_events(run_dir / "events.jsonl") if e["event"] == "loss"}


def final_weights(run_dir: Path) -> dict:
    latest = json.loads((run_dir / "checkpoints" / "latest.json").read_text())
    return load_file(str(run_dir / "checkpoints" / latest["file"]))


def test_two_processes_match_one_and_resume(tmp_path, env):
    one = protobench("run", *ARGS, "--out", str(tmp_path / "one"), "--json", env=env)
    assert one.returncode == 0, one.stderr[-3000:]
    rec1 = json.loads(one.stdout)
    assert rec1["device"]["count"] == 1

    # two processes, stopped by the run itself right after its first checkpoint (at 64 images): the stopping
    # point is the run's, so a fast machine cannot finish before the test interrupts it
    out2 = tmp_path / "two"
    stopped = protobench("run", *ARGS, "--gpus", "2", "--out", str(out2), "--stop-after", "64", env=env)
    assert stopped.returncode == 130, stopped.stderr[-3000:]
    assert "resume with:" in stopped.stderr and "--stop-after" not in stopped.stderr.split("resume with:")[1]
    (run_dir,) = (out2 / "runs").iterdir()
    events = read_events(run_dir / "events.jsonl")
    assert [e["event"] for e in events if e["event"] in ("checkpoint", "interrupted", "end", "failed")] == [
        "checkpoint", "interrupted"]
    assert events[-1]["images_seen"] == 64

    two = protobench("run", *ARGS, "--gpus", "2", "--out", str(out2), "--json", env=env)
    assert two.returncode == 0, two.stderr[-3000:] + (run_dir / "launcher.log").read_text()[-3000:]
    rec2 = json.loads(two.stdout)  # the parent prints the record the ranks wrote
    assert rec2["status"] == "completed" and rec2["device"]["count"] == 2
    assert rec2["device"]["type"] == rec1["device"]["type"]
    events = read_events(run_dir / "events.jsonl")
    assert any(e["event"] == "resume" for e in events)
    end = next(e for e in events if e["event"] == "end")
    digests = end["param_digests"]
    assert len(digests) == 2 and digests[0] == digests[1]  # the same weights on both ranks
    # one set of checkpoints, from rank 0, one per evaluation
    assert [e["images_seen"] for e in rec2["evals"]] == [64, 128, 192, 256]
    assert len(list((run_dir / "checkpoints").glob("step-*.safetensors"))) == 2
    assert not (run_dir / "checkpoints" / "deepspeed").exists()  # ZeRO 0, fp32: the torch optimizer is ours
    # device-seconds are wall × 2 processes; a rough sanity that they were counted at all
    assert rec2["device_seconds"]["train"] > 0 and rec2["best"] is not None

    # the same global batch: the same loss curve, and the same final weights up to float rounding
    l1, l2 = losses(Path(rec1["path"])), losses(run_dir)
    assert sorted(l1) == sorted(l2) == list(range(1, 9))
    for step in l1:
        assert l2[step] == pytest.approx(l1[step], rel=1e-3, abs=1e-4), step
    w1, w2 = final_weights(Path(rec1["path"])), final_weights(run_dir)
    for key in (k for k in w1 if k.startswith(("model.", "ema.", "optim."))):
        assert w2[key].float().allclose(w1[key].float(), rtol=1e-3, atol=1e-4), key

    # asking again returns the finished record without launching anything
    again = protobench("run", *ARGS, "--gpus", "2", "--out", str(out2), "--json", env=env)
    assert again.returncode == 0 and json.loads(again.stdout)["evals"] == rec2["evals"]
    assert read_events(run_dir / "events.jsonl") == events
    print(f"\n1 process: train {rec1['device_seconds']['train']:.2f} device-s; "
          f"2 processes: train {rec2['device_seconds']['train']:.2f} device-s")
