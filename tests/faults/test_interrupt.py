"""Ctrl-C (a real SIGINT to a real `protobench run`) before the first evaluation: a checkpoint is saved, one
line says so and how to resume, and the rerun resumes from that checkpoint instead of from zero."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from protobench.events import read_events

TINY = ["--budget", "8192", "--eval-every", "8192", "--eval-samples", "20", "-o", "batch_size=32",
        "-o", "denoiser.base_channels=8", "-o", "denoiser.num_res_blocks=1", "-o", "sampler.steps=3",
        "--metric", "fid", "-o", "log_every=2"]


def wait_for(predicate, proc: subprocess.Popen, what: str, limit: float = 600.0):
    """Poll on events, not on a timer: the machine may be slow, the test only waits longer."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc.poll() is not None:
            raise AssertionError(f"the run exited ({proc.returncode}) before {what}: {proc.stderr.read()[-2000:]}")
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
def test_sigint_before_the_first_evaluation_checkpoints_and_the_rerun_resumes(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "PROTOBENCH_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1",
           "PROTOBENCH_CHECKPOINT_SECONDS": "100000"}  # only Ctrl-C may write a checkpoint here
    cmd = [sys.executable, "-m", "protobench.cli", "run", *TINY, "--out", str(out)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    runs = out / "runs"

    def trained_a_little():
        for events in runs.glob("*/events.jsonl"):
            seen = [e.get("images_seen", 0) for e in read_events(events) if e.get("event") == "loss"]
            if seen and max(seen) >= 256:
                return events
        return None

    events = wait_for(trained_a_little, proc, "training started")
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 130, stderr[-2000:]
    lines = [line for line in stderr.splitlines() if line.startswith("interrupted")]
    assert len(lines) == 1 and "saved checkpoint" in lines[0] and "resume with" in lines[0], stderr[-2000:]
    assert "Traceback" not in stderr
    log = read_events(events)
    stop = next(e for e in log if e["event"] == "interrupted")
    assert 0 < stop["images_seen"] < 8192 and stop["checkpoint"]
    assert not any(e["event"] == "eval" for e in log)  # stopped before the first evaluation
    assert (events.parent / "checkpoints" / stop["checkpoint"]).exists()

    again = subprocess.run([*cmd, "--json"], env=env, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"from its checkpoint at {stop['images_seen']:,} of 8,192 images" in again.stderr
    log = read_events(events)
    resumed = [e for e in log if e["event"] == "resume"]
    assert len(resumed) == 1 and resumed[0]["images_seen"] == stop["images_seen"]
    # training went on from there: no step before the checkpoint was trained twice
    after = [e["images_seen"] for e in log[log.index(resumed[0]):] if e["event"] == "loss"]
    assert after and min(after) > stop["images_seen"]
    record = json.loads(again.stdout)
    assert record["status"] == "completed" and record["evals"][-1]["images_seen"] == 8192


@pytest.mark.slow
def test_stop_after_stops_at_that_point_like_ctrl_c_and_the_rerun_finishes(tmp_path, env):
    """`--stop-after IMAGES`: the run, not a signal, chooses where to stop (checkpoint, one line, exit 130)."""
    args = [*TINY, "--budget", "256", "--eval-every", "128", "--out", str(tmp_path / "out")]
    cmd = [sys.executable, "-m", "protobench.cli", "run", *args]
    stopped = subprocess.run([*cmd, "--stop-after", "64"], env=env, capture_output=True, text=True, timeout=600)
    assert stopped.returncode == 130, stopped.stderr[-2000:]
    (line,) = [line for line in stopped.stderr.splitlines() if line.startswith("interrupted")]
    assert "at 64 images" in line and "--stop-after" not in line.split("resume with:")[1]
    (events,) = (tmp_path / "out" / "runs").glob("*/events.jsonl")
    assert [(e["event"], e["images_seen"]) for e in read_events(events) if e["event"] == "interrupted"] == [
        ("interrupted", 64)]
    done = subprocess.run([*cmd, "--json"], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    record = json.loads(done.stdout)
    assert record["status"] == "completed" and [e["images_seen"] for e in record["evals"]] == [128, 256]
    assert any(e["event"] == "resume" and e["images_seen"] == 64 for e in read_events(events))
