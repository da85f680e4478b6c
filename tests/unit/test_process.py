"""The process layer: exit codes, a child's refusal as an event its parent reads, what the pool records for a
job that exited (and a full disk, wherever it is met), the DeepSpeed launcher's command, and the machine's cores."""

from __future__ import annotations

import errno
import sqlite3
from pathlib import Path
from types import SimpleNamespace

import pytest

from protobench.data_parallel import launcher_command
from protobench.device import cpuinfo, physical_cores
from protobench.diskspace import is_no_space, no_space_in
from protobench.errors import ExitCode, Interrupted, NoSpace, UsageError
from protobench.events import append_event, make_event, read_events
from protobench.pool import Job
from protobench.sweep_runner import job_record
from protobench.testing.tiny import tiny_config
from protobench.training.context import RunContext
from protobench.training.outcome import outcome_recorded
from protobench.worker import refuse


def test_exit_codes_keep_their_values():
    assert (ExitCode.OK, ExitCode.FAILED, ExitCode.USAGE, ExitCode.HELD, ExitCode.INTERRUPTED) == (0, 1, 2, 75, 130)
    assert UsageError.exit_code == ExitCode.USAGE == 2


def _job(tmp_path: Path) -> Job:
    cfg = SimpleNamespace(to_dict=lambda: {"conditioner": "random"}, run_id=lambda: "r1", budget=64)
    run_dir = tmp_path / "runs" / "r1"
    run_dir.mkdir(parents=True)
    return Job(label="conditioner=random", cfg=cfg, run_dir=run_dir)


def test_a_refusal_travels_as_an_event_and_reads_back_as_its_one_line(tmp_path, capsys):
    job = _job(tmp_path)
    assert refuse(job.job_events, ExitCode.USAGE, "an earlier start's refusal") == ExitCode.USAGE
    job.refusals = job.job_events.stat().st_size  # this start begins after it
    assert job.refusal() is None
    refuse(job.job_events, ExitCode.USAGE, "denoiser: join must be add or concat")
    assert job.refusal() == "denoiser: join must be add or concat"
    assert capsys.readouterr().err.splitlines()[-1] == "error: denoiser: join must be add or concat"  # job.log


def test_a_job_refused_before_its_run_started_is_recorded_failed_with_its_reason(tmp_path):
    job = _job(tmp_path)
    refuse(job.job_events, ExitCode.USAGE, "no such dataset folder")
    record = job_record(job, ExitCode.USAGE, tmp_path)
    assert (record["status"], record["error"], record["run_id"]) == ("failed", "no such dataset folder", "r1")
    silent = _job(tmp_path / "other")
    record = job_record(silent, ExitCode.FAILED, tmp_path / "other")
    assert record["status"] == "failed" and "exited with code 1 before it started" in record["error"]
    crashed = _job(tmp_path / "crashed")
    record = job_record(crashed, -7, tmp_path / "crashed")  # a signal, as Popen reports it: named, not "-7"
    assert record["status"] == "failed" and "was killed by SIGBUS before it started" in record["error"]


def test_a_job_whose_events_say_it_stopped_resumably_stopped_whatever_its_exit_code(tmp_path):
    """The events are the truth: a child that saved its stop and then ended with another code (a crash on the way
    out) stopped resumably; one with no such event stopped only if its code says a full disk did it."""
    job = _job(tmp_path)
    assert job.stopped(ExitCode.FAILED) is None and job.stopped(ExitCode.INTERRUPTED) is None
    stop = job.stopped(ExitCode.NO_SPACE)  # a full disk that left no room to say so: rebuilt from the checkpoint
    assert isinstance(stop, NoSpace) and stop.images_seen == 0 and "no space left writing" in stop.reason
    events = job.run_dir / "events.jsonl"
    append_event(events, make_event("interrupted", images_seen=320, checkpoint="step-00000010.safetensors"))
    job.started_at = events.stat().st_size  # an earlier start's stop is not this one's
    assert job.stopped(ExitCode.FAILED) is None
    append_event(events, make_event("start"))
    append_event(events, make_event("interrupted", images_seen=640, checkpoint="step-00000020.safetensors"))
    for rc in (ExitCode.FAILED, ExitCode.INTERRUPTED, -11):
        stop = job.stopped(rc)
        assert type(stop) is Interrupted and (stop.images_seen, stop.checkpoint) == (640, "step-00000020.safetensors")
    assert job.stopped(ExitCode.OK) is None


def test_a_full_disk_is_known_through_the_libraries_that_wrap_it():
    assert is_no_space(OSError(errno.ENOSPC, "No space left on device"))
    assert is_no_space(sqlite3.OperationalError("database or disk is full"))
    assert not is_no_space(OSError(errno.EACCES, "Permission denied"))
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError:
            raise RuntimeError("while writing the refusal") from None  # the context is kept
    except RuntimeError as exc:
        assert no_space_in(exc) is exc.__context__
    assert no_space_in(RuntimeError("unrelated")) is None


def test_the_launcher_starts_the_one_worker_as_ranks(tmp_path):
    cmd = launcher_command(tmp_path / "c.json", tmp_path, 2, None, 29500)
    assert cmd[cmd.index("--config-json") - 1] == "protobench.worker"
    assert "--deepspeed" in cmd


def test_cores_are_counted_once_per_physical_core_from_cpuinfo(tmp_path):
    """Two sockets of two cores with two hyper-threads each: 8 logical CPUs, 4 physical cores."""
    blocks = [f"processor\t: {n}\nmodel name\t: test\nphysical id\t: {socket}\ncore id\t\t: {core}\n"
              for n, (socket, core, _) in enumerate((s, c, t) for s in (0, 1) for c in (0, 1) for t in (0, 1))]
    text = tmp_path / "cpuinfo"
    text.write_text("\n".join(blocks) + "\n")
    cpus = cpuinfo(text)
    assert len(cpus) == 8 and cpus[5] == {"processor": "5", "model name": "test", "physical id": "1", "core id": "0"}
    assert physical_cores(cpus, allowed=8) == 4 and physical_cores(cpus, allowed=2) == 2
    assert physical_cores([], allowed=3) == 3  # no core ids (a VM, not Linux): the CPUs it may use
    assert cpuinfo(tmp_path / "missing") == []


def test_a_run_records_a_full_disk_under_a_librarys_error_as_a_resumable_stop(protobench_registry, tmp_path):
    """What ends a run is written to its events: a full disk, even under another library's error, as a stop that
    resumes (`interrupted`, with the path); any other error as `failed`."""
    ctx = RunContext(tiny_config(protobench_registry, conditioner="random"), protobench_registry, tmp_path, False)
    ctx.dir.mkdir(parents=True)
    grid = ctx.dir / "samples" / "000000064.png"
    with pytest.raises(NoSpace) as stop, outcome_recorded(ctx, lambda: 64):
        try:
            raise OSError(errno.ENOSPC, "No space left on device", str(grid))
        except OSError as exc:
            raise RuntimeError("the image writer gave up") from exc
    assert stop.value.path == str(grid) and stop.value.reason.startswith(f"no space left writing {grid} (")
    assert read_events(ctx.folder.events_path)[-1] == {**read_events(ctx.folder.events_path)[-1],
                                                       "event": "interrupted", "reason": stop.value.reason}
    with pytest.raises(RuntimeError), outcome_recorded(ctx, lambda: 64):
        raise RuntimeError("a plugin's own bug")
    last = read_events(ctx.folder.events_path)[-1]
    assert last["event"] == "failed" and last["error"] == "RuntimeError: a plugin's own bug"
