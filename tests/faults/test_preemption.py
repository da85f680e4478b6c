"""Preemption loses nothing, with real processes: SIGTERM (a scheduler's, or kill) stops a `protobench run` as
Ctrl-C does, with a checkpoint and one line; a full disk under --out is one line too, keeps the last good
checkpoint as the latest, and the run resumes once there is room."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from protobench.events import read_events
from protobench.training.checkpoints import load_latest

# long enough that a run signalled at its first logged steps is far from done, even on a fast machine
TINY = ["--budget", "24576", "--eval-every", "24576", "--eval-samples", "20", "-o", "batch_size=32",
        "-o", "denoiser.base_channels=8", "-o", "denoiser.num_res_blocks=1", "-o", "sampler.steps=3",
        "--metric", "fid", "-o", "log_every=2"]

# the full-disk run checkpoints every other step: the disk fills long before 8,192 images
SHORT = ["--budget", "8192", "--eval-every", "8192", *TINY[4:]]

sys.path.insert(0, str(Path(__file__).resolve().parent))
from disks import fill, kept_full, mount_tmpfs, unmount  # noqa: E402
from test_interrupt import wait_for  # noqa: E402


def logged(runs: Path, kind: str, at_least: int = 0):
    """The events.jsonl holding an event `kind` with images_seen >= at_least, once there is one."""
    def found():
        for events in runs.glob("*/events.jsonl"):
            if any(e.get("event") == kind and e.get("images_seen", 0) >= at_least for e in read_events(events)):
                return events
        return None
    return found


def status(out: Path, env: dict[str, str]) -> list[dict]:
    got = subprocess.run([sys.executable, "-m", "protobench.cli", "status", "--out", str(out), "--json"], env=env,
                         capture_output=True, text=True, timeout=300)
    assert got.returncode == 0, got.stderr[-2000:]
    return json.loads(got.stdout)


@pytest.mark.slow
def test_sigterm_checkpoints_says_so_in_one_line_and_the_rerun_resumes(tmp_path, env):
    out = tmp_path / "out"
    env = {**env, "PROTOBENCH_CHECKPOINT_SECONDS": "100000"}  # only the signal may write a checkpoint here
    cmd = [sys.executable, "-m", "protobench.cli", "run", *TINY, "--out", str(out)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    events = wait_for(logged(out / "runs", "loss", 256), proc, "training started")
    [row] = status(out, env)
    assert row["state"] == "running" and row["where"] == socket.gethostname() and row["since"], row
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 130, stderr[-2000:]  # interrupted, resumable
    lines = [line for line in stderr.splitlines() if line.startswith("interrupted")]
    assert len(lines) == 1 and "saved checkpoint" in lines[0] and "resume with" in lines[0], stderr[-2000:]
    assert "SIGTERM" in stderr and "Traceback" not in stderr
    stop = next(e for e in read_events(events) if e["event"] == "interrupted")
    assert 0 < stop["images_seen"] < 24576 and (events.parent / "checkpoints" / stop["checkpoint"]).exists()
    [row] = status(out, env)
    assert row["state"] == "interrupted" and row["images_seen"] == stop["images_seen"], row

    again = subprocess.run([*cmd, "--json"], env=env, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"from its checkpoint at {stop['images_seen']:,} of 24,576 images" in again.stderr
    log = read_events(events)
    resumed = next(e for e in log if e["event"] == "resume")
    after = [e["images_seen"] for e in log[log.index(resumed):] if e["event"] == "loss"]
    assert after and min(after) > stop["images_seen"]  # no step trained twice
    assert json.loads(again.stdout)["status"] == "completed"


@pytest.fixture
def small_disk(tmp_path):
    """A 16 MiB tmpfs the runs' folders fill up."""
    where = tmp_path / "disk"
    mount_tmpfs(where, "16m")
    try:
        yield where
    finally:
        unmount(where)


def workers_of(out: Path) -> list[str]:
    """The command lines of the sweep jobs still running on `out`."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().decode(errors="replace").split("\0")
        except OSError:  # it ended meanwhile
            continue
        if "protobench.worker" in args and str(out) in args:
            found.append(" ".join(args))
    return found


def explain(stderr: str, out: Path) -> str:
    """What a failed sweep test shows: the sweep's lines before any traceback, its last lines, and each job's log
    tail (why a child ended as it did)."""
    head = stderr.split("Traceback")[0][-3000:]
    logs = [f"--- {p}:\n{p.read_text(errors='replace')[-1500:]}" for p in sorted(out.glob("runs/*/job.log"))]
    return "\n".join([head, "--- last lines:", stderr[-1500:], *logs])


@pytest.mark.slow
def test_a_full_disk_is_one_line_keeps_the_last_good_checkpoint_and_resumes_when_there_is_room(tmp_path, small_disk, env):
    out = small_disk / "out"
    env = {**env, "PROTOBENCH_CHECKPOINT_SECONDS": "0"}  # a checkpoint at every logged step: the disk fills during one
    cmd = [sys.executable, "-m", "protobench.cli", "run", *SHORT, "--out", str(out)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    events = wait_for(logged(out / "runs", "checkpoint"), proc, "the first checkpoint")
    with kept_full(small_disk) as filler:
        _, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 130, stderr[-2000:]  # interrupted, resumable
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    [line] = [x for x in lines if x.startswith("interrupted")]
    assert "no space left writing " + str(out) in line and " free there" in line and "resume with" in line, stderr
    assert not [x for x in lines if x.startswith(("error", "protobench:"))], stderr
    ckpt = events.parent / "checkpoints"
    latest = load_latest(ckpt)  # checks the tensor file against its checksum
    assert latest is not None and f"checkpoint {latest['file']} at {latest['images_seen']:,} images" in line
    assert not list(ckpt.glob(".*.tmp")), "a half-written file was left behind"
    kept = latest["images_seen"]

    filler.unlink()  # room again
    again = subprocess.run([*cmd, "--json"], env={**env, "PROTOBENCH_CHECKPOINT_SECONDS": "100000"},
                           capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"from its checkpoint at {kept:,} of 8,192 images" in again.stderr
    assert json.loads(again.stdout)["status"] == "completed"


@pytest.mark.slow
def test_a_sweep_stops_resumably_on_a_full_disk_and_resumes_when_there_is_room(tmp_path, small_disk, env):
    """A full disk in one combination's process stops the sweep as it stops `protobench run`: one line, exit 130,
    nothing recorded as failed, and the same command resumes it (it is not skipped to fill the next one)."""
    out = small_disk / "out"
    env = {**env, "PROTOBENCH_CHECKPOINT_SECONDS": "0"}
    cmd = [sys.executable, "-m", "protobench.cli", "sweep", "--jobs", "1", "--seed", "0,1", *SHORT, "--out", str(out)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    events = wait_for(logged(out / "runs", "checkpoint"), proc, "the first checkpoint")
    with kept_full(small_disk) as filler:
        _, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 130, explain(stderr, out)
    [line] = [x for x in stderr.splitlines() if x.startswith("interrupted")]
    assert "no space left writing " + str(out) in line and "make room, then resume with: protobench sweep" in line
    assert "failed" not in stderr and len(list((out / "runs").iterdir())) == 1, explain(stderr, out)
    kept = load_latest(events.parent / "checkpoints")["images_seen"]

    filler.unlink()
    again = subprocess.run(cmd, env={**env, "PROTOBENCH_CHECKPOINT_SECONDS": "100000"}, capture_output=True,
                           text=True, timeout=900)
    assert again.returncode == 0, explain(again.stderr, out)
    log = read_events(events)
    assert [e["images_seen"] for e in log if e["event"] == "resume"] == [kept]
    assert "2 completed, 0 failed" in again.stderr


@pytest.mark.slow
def test_a_full_disk_under_the_sweep_itself_is_one_line_leaves_no_job_running_and_resumes(tmp_path, env):
    """The sweep's own write fails (its manifest, on a full file system of its own) when its short combination
    ends: one `interrupted` line, exit 130, no traceback, the long combination stopped with a checkpoint rather
    than left running, and once there is room the same command finishes the sweep. (The long one has 32 times the
    images of the short one, which both start with: it is still training when the short one ends.)"""
    out = tmp_path / "out"
    manifests = out / "sweeps"
    mount_tmpfs(manifests, "64k")
    try:
        fill(manifests)
        cmd = [sys.executable, "-m", "protobench.cli", "sweep", "--jobs", "2", "--conditioner", "random", "--seed", "0",
               "-o", "budget=256|8192", "--eval-every", "8192", *TINY[4:], "--out", str(out)]
        stopped = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
        assert stopped.returncode == 130, explain(stopped.stderr, out)
        assert "Traceback" not in stopped.stderr, explain(stopped.stderr, out)
        [line] = [x for x in stopped.stderr.splitlines() if x.startswith("interrupted")]
        assert line.startswith(f"interrupted: no space left writing {manifests}/") and " free there); make room, " \
            "then resume with: protobench sweep --jobs 2" in line, line
        assert not workers_of(out), f"jobs left running after the sweep stopped: {workers_of(out)}"
        ends = {e["budget"]: [x["event"] for x in read_events(e["events"]) if x["event"] in ("end", "interrupted")]
                for e in ({"budget": json.loads((p.parent / "config.json").read_text())["config"]["budget"],
                           "events": p} for p in out.glob("runs/*/events.jsonl"))}
        assert ends == {256: ["end"], 8192: ["interrupted"]}, ends
    finally:
        unmount(manifests)
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0 and "2 completed, 0 failed" in again.stderr, explain(again.stderr, out)
    assert json.loads(next(manifests.glob("*.json")).read_text())["runs"][0]["status"] == "completed"


def test_a_job_that_meets_a_full_disk_before_its_run_can_record_it_says_so_by_its_exit_code(tmp_path, env):
    """A sweep's job whose run folder has no room even for its lock (so no event can say why) exits 74, the code
    its parent reads as a full disk (a stop to resume), not 1 (a failed run); a refusal with no room to be written
    still leaves with its own code."""
    from protobench.errors import ExitCode
    from protobench.plugins import get_registry
    from protobench.testing.tiny import tiny_config
    from protobench.worker import refuse

    cfg_file = tmp_path / "job-config.json"
    cfg_file.write_text(json.dumps(tiny_config(get_registry(), conditioner="random").to_dict()))
    disk = tmp_path / "disk"
    mount_tmpfs(disk, "64k")
    try:
        fill(disk)
        job = subprocess.run([sys.executable, "-m", "protobench.worker", "--config-json", str(cfg_file), "--out",
                              str(disk / "out"), "--events", str(tmp_path / "job-events.jsonl")], env=env,
                             capture_output=True, text=True, timeout=300)
        assert refuse(disk / "job-events.jsonl", ExitCode.USAGE, "no such dataset folder") == ExitCode.USAGE
    finally:
        unmount(disk)
    assert job.returncode == ExitCode.NO_SPACE, job.stderr[-2000:]


@pytest.mark.slow
def test_a_combination_that_stops_by_itself_stops_the_sweep_which_resumes(tmp_path, env):
    """--stop-after (here through its variable) stops each combination's process resumably: the sweep stops with
    the resume line and exit 130 instead of listing the runs as failed, and the same command finishes them."""
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "protobench.cli", "sweep", "--jobs", "2", "--seed", "0,1", *SHORT[:4],
           "--eval-samples", "20", "-o", "batch_size=32", "-o", "denoiser.base_channels=8", "-o",
           "denoiser.num_res_blocks=1", "-o", "sampler.steps=3", "--metric", "fid", "--out", str(out)]
    stopped = subprocess.run(cmd, env={**env, "PROTOBENCH_STOP_AFTER": "256"}, capture_output=True, text=True,
                             timeout=900)
    assert stopped.returncode == 130, stopped.stderr[-2000:]
    lines = [x for x in stopped.stderr.splitlines() if x.startswith("interrupted")]
    assert len(lines) == 1 and "resume with: protobench sweep" in lines[0], stopped.stderr[-2000:]
    assert "failed" not in stopped.stderr
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0 and "2 completed, 0 failed" in again.stderr, again.stderr[-2000:]
    for events in (out / "runs").glob("*/events.jsonl"):
        kinds = [e["event"] for e in read_events(events)]
        assert kinds.count("start") == 1 and kinds.count("end") == 1, kinds
