"""`protobench sweep --executor slurm` against a real Slurm (munged, slurmctld and slurmd started on this machine by
the session fixture): jobs run through real sbatch, `status` reads the queue, a job sent SIGTERM checkpoints,
requeues itself and resumes, and two sweeps on one --out train each run once. Bad input is refused before
anything is submitted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from protobench.events import read_events
from protobench.records import load_record

sys.path.insert(0, str(Path(__file__).resolve().parent))
from slurm_cluster import Cluster, missing  # noqa: E402

TINY = ["--eval-samples", "20", "-o", "batch_size=32", "-o", "denoiser.base_channels=8",
        "-o", "denoiser.num_res_blocks=1", "-o", "sampler.steps=3", "--metric", "fid", "-o", "log_every=2"]
SMALL = ["--budget", "512", "--eval-every", "512", *TINY]  # seconds per run: for tests that wait for the end
# long enough that a job signalled at its first logged step is far from done, even on a fast machine
LONG = ["--budget", "24576", "--eval-every", "24576", *TINY]


@pytest.fixture(scope="session")
def slurm(tmp_path_factory):
    why = missing()
    if why:
        pytest.skip(why)
    cluster = Cluster(tmp_path_factory.mktemp("slurm")).start()
    saved = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(cluster.conf)
    try:
        yield cluster
    finally:
        cluster.stop()
        if saved is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = saved


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    # one cache for the module: the local and the Slurm sweeps score with the same instruments
    return str(tmp_path_factory.mktemp("cache"))


@pytest.fixture
def env(env, cache):
    """conftest's environment with this module's cache, and $SLURM_CONF read when each test starts (it is
    there once the `slurm` fixture has started the cluster)."""
    slurm = {k: v for k, v in os.environ.items() if k.startswith("SLURM")}
    return {**env, **slurm, "PROTOBENCH_CACHE": cache,
            "PROTOBENCH_CHECKPOINT_SECONDS": "100000"}  # only a signal (or an evaluation) writes a checkpoint


def protobench(*args: str, env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess:
    got = subprocess.run([sys.executable, "-m", "protobench.cli", *args], env=env, capture_output=True, text=True,
                         timeout=900)
    if check:
        assert got.returncode == 0, got.stderr[-3000:]
    return got


def status(out: Path, env: dict[str, str]) -> dict[str, dict]:
    rows = json.loads(protobench("status", "--out", str(out), "--json", env=env).stdout)
    return {r["run_id"]: r for r in rows}


def wait_until(predicate, what: str, limit: float = 600.0):
    """Poll a state the test can see (events, the queue), never a timer: a slow machine only waits longer."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def queue(env) -> list[str]:
    got = subprocess.run(["squeue", "-h", "-o", "%i %T %r"], env=env, capture_output=True, text=True, check=True)
    return got.stdout.split("\n")[:-1]


def release(job: str, env: dict[str, str]) -> None:
    """Let a requeued job start in two seconds instead of after Slurm's two-minute hold. Slurm refuses a start
    whose credential is not newer, in whole seconds, than the revocation of the previous start's ("Job credential
    revoked", and the job is killed): the revocation is done once the node is idle again, and a start at least two
    seconds after that is newer whatever the machine's speed."""
    def node_idle():
        got = subprocess.run(["sinfo", "-h", "-o", "%t"], env=env, capture_output=True, text=True, check=True)
        return got.stdout.split() == ["idle"]

    wait_until(node_idle, "the node to finish cleaning up the job's previous start")
    subprocess.run(["scontrol", "update", f"jobid={job}", "starttime=now+2"], env=env, check=True)


def resumed_to_completion(out: Path, run_id: str, slurm: Cluster, env: dict[str, str]) -> None:
    """Wait for the released job's run to complete; a run that ends any other way fails the test at once, with
    its row and what the controller said."""
    def done():
        row = status(out, env)[run_id]
        if row["state"] in ("failed", "interrupted") and not any(
                line.split()[0] == row["job_id"] for line in queue(env)):
            log = (slurm.root / "slurmctld.log").read_text().splitlines()[-15:]
            raise AssertionError(f"the resumed job ended {row['state']}: {row}\n" + "\n".join(log))
        return row["state"] == "completed"

    wait_until(done, "the resumed job to complete", limit=900)


def submitted_jobs(out: Path) -> dict[str, str]:
    """{run_id: job id} of the sweeps submitted on `out` (the latest job of each run)."""
    jobs = {}
    for manifest in (out / "sweeps").glob("*.json"):
        for r in json.loads(manifest.read_text())["runs"]:
            if r.get("job_id"):
                jobs[r["run_id"]] = r["job_id"]
    return jobs


def metrics_by_run(records: list[dict]) -> dict[str, list]:
    return {r["run_id"]: [(e["images_seen"], e["metrics"]) for e in r["evals"]] for r in records}


@pytest.mark.slow
def test_a_slurm_sweep_completes_through_sbatch_with_the_records_a_local_sweep_makes(slurm, env, tmp_path):
    on_slurm = protobench("sweep", "--executor", "slurm", "--wait", "--json", "--seed", "0,1", "--conditioner",
                          "random", *SMALL, "--out", str(tmp_path / "slurm"), env=env)
    assert "submitted 2 job(s) to Slurm" in on_slurm.stderr
    local = protobench("sweep", "--json", "--seed", "0,1", "--conditioner", "random", *SMALL,
                       "--out", str(tmp_path / "local"), env=env)
    slurm_records, local_records = json.loads(on_slurm.stdout), json.loads(local.stdout)
    assert [r["status"] for r in slurm_records] == ["completed", "completed"]
    assert metrics_by_run(slurm_records) == metrics_by_run(local_records)
    assert len(metrics_by_run(slurm_records)) == 2
    logs = list((tmp_path / "slurm" / "slurm").glob("*/*_log.out"))  # the jobs really ran under Slurm
    assert len(logs) == 2


@pytest.mark.slow
def test_status_shows_the_jobs_pending_then_completed(slurm, env, tmp_path):
    out = tmp_path / "out"
    # submitted held: pending until the test releases them, whatever the machine's speed
    sub = protobench("sweep", "--executor", "slurm", "--sbatch", "hold=true", "--seed", "0,1", "--conditioner",
                     "random", *SMALL, "--out", str(out), env=env)
    jobs = submitted_jobs(out)
    assert len(jobs) == 2 and all(job in sub.stderr for job in jobs.values())
    rows = status(out, env)
    assert {r["state"] for r in rows.values()} == {"pending"}, rows
    assert all(rows[run]["job_id"] == job for run, job in jobs.items())
    human = protobench("status", "--out", str(out), env=env).stderr
    assert "pending" in human and "2 pending" in human
    for job in jobs.values():
        subprocess.run(["scontrol", "release", job], env=env, check=True)
    wait_until(lambda: {r["state"] for r in status(out, env).values()} == {"completed"}, "both jobs completed")
    rows = status(out, env)
    assert all(r["images_seen"] == 512 and "best fid" in r["detail"] for r in rows.values())


@pytest.mark.slow
@pytest.mark.parametrize("signal", ["TERM", "USR2"])  # preemption; the warning submitit asks for before the time limit
def test_a_job_sent_sigterm_checkpoints_requeues_itself_and_resumes(slurm, env, tmp_path, signal):
    out = tmp_path / "out"
    protobench("sweep", "--executor", "slurm", "--seed", "0", "--conditioner", "random", *LONG, "--out", str(out),
               env=env)
    [(run_id, job)] = submitted_jobs(out).items()
    events = out / "runs" / run_id / "events.jsonl"

    def logged(kind):
        return lambda: [e for e in read_events(events) if e["event"] == kind]

    wait_until(logged("loss"), "the first logged step")
    row = status(out, env)[run_id]
    assert row["state"] == "running" and row["where"] and row["since"], row
    subprocess.run(["scancel", f"--signal={signal}", job], env=env, check=True)
    [requeued] = wait_until(logged("requeue"), "the job to requeue itself")
    # Slurm holds a requeued job for two minutes before it may start again; the test lets it go at once
    wait_until(lambda: any(line.split()[0] == job and "PENDING" in line for line in queue(env)), "back in the queue")
    row = status(out, env)[run_id]
    assert row["state"] == "pending" and f"resumes at {requeued['images_seen']:,} images" in row["detail"], row
    release(job, env)
    resumed_to_completion(out, run_id, slurm, env)

    log = read_events(events)
    kinds = [e["event"] for e in log]
    assert kinds.count("interrupted") == 1 and kinds.count("requeue") == 1 and kinds.count("resume") == 1
    assert kinds.count("start") == 1 and kinds.count("end") == 1
    stop = next(e for e in log if e["event"] == "interrupted")
    assert 0 < stop["images_seen"] < 24576 and stop["checkpoint"]
    resume = next(e for e in log if e["event"] == "resume")
    assert resume["images_seen"] == stop["images_seen"] == requeued["images_seen"]
    steps = [e["step"] for e in log if e["event"] == "loss"]
    assert len(steps) == len(set(steps)), "a step was trained twice"
    after = [e["images_seen"] for e in log[log.index(resume):] if e["event"] == "loss"]
    assert after and min(after) > stop["images_seen"]
    assert load_record(events.parent)["evals"][-1]["images_seen"] == 24576


@pytest.mark.slow
def test_two_sweeps_submitted_on_one_out_train_each_run_once(slurm, env, tmp_path):
    out = tmp_path / "out"
    # both held until both are submitted: the second cannot find the first's runs already done
    args = ["sweep", "--executor", "slurm", "--sbatch", "hold=true", "--seed", "0,1", "--conditioner", "random",
            *SMALL, "--out", str(out)]
    first = protobench(*args, env=env)
    first_jobs = set(submitted_jobs(out).values())
    second = protobench(*args, env=env)
    assert "submitted 2 job(s)" in first.stderr and "submitted 2 job(s)" in second.stderr
    jobs = first_jobs | set(submitted_jobs(out).values())
    assert len(jobs) == 4
    for job in sorted(jobs):
        subprocess.run(["scontrol", "release", job], env=env, check=True)
    wait_until(lambda: not queue(env) and {r["state"] for r in status(out, env).values()} == {"completed"},
               "all four jobs done")
    runs = sorted((out / "runs").iterdir())
    assert len(runs) == 2
    for run in runs:
        kinds = [e["event"] for e in read_events(run / "events.jsonl")]
        assert kinds.count("start") == 1 and kinds.count("end") == 1, (run.name, kinds)
        assert kinds.count("eval") == 1


# ---------------------------------------------------------------------------------------------
# bad input: one line, exit 2, nothing submitted


def refused(got: subprocess.CompletedProcess, out: Path, *words: str) -> None:
    assert got.returncode == 2, got.stderr[-2000:]
    lines = got.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and all(w in lines[0] for w in words), got.stderr
    assert not (out / "slurm").exists() and not (out / "runs").exists() and not (out / "sweeps").exists()


def test_no_sbatch_on_path_is_one_line(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "PATH": str(tmp_path / "empty")}
    got = protobench("sweep", "--executor", "slurm", "--seed", "0", *SMALL, "--out", str(out), env=env, check=False)
    refused(got, out, "no sbatch on PATH")


@pytest.mark.parametrize("table, words", [
    ('[slurm]\ncpus = "two"\n', ["[slurm] cpus must be int", "'two'"]),
    ("[slurm]\nnodes_please = 3\n", ["[slurm] has no key 'nodes_please'", "partition"]),
    ('[slurm]\ntime = "soon"\n', ["time must be minutes or [D-]H:MM:SS"]),
    ("slurm = 3\n", ["[slurm] must be a table"]),
])
def test_a_malformed_slurm_table_is_one_line(tmp_path, table, words):
    out = tmp_path / "out"
    toml = tmp_path / "sweep.toml"
    toml.write_text(f"budget = 512\n{table}[sweep]\nseed = [0, 1]\n")
    got = protobench("sweep", "--executor", "slurm", "--config", str(toml), "--out", str(out), env=dict(os.environ),
                     check=False)
    refused(got, out, str(toml), *words)


def test_an_unknown_partition_is_one_line(slurm, env, tmp_path):
    out = tmp_path / "out"
    before = queue(env)
    got = protobench("sweep", "--executor", "slurm", "--partition", "nosuch", "--seed", "0", *SMALL,
                     "--out", str(out), env=env, check=False)
    refused(got, out, "unknown Slurm partition 'nosuch'", slurm.partition)
    assert queue(env) == before


def test_a_run_requeued_three_times_without_progress_is_marked_failed(tmp_path, env):
    """The job's own decision, on a real run folder: three requeues at the same images, then failed with why."""
    from protobench.events import append_event
    from protobench.slurm import requeue

    out = tmp_path / "out"
    protobench("run", *SMALL, "--out", str(out), "-o", "budget=64", "-o", "eval_every=64", env=env)
    [run] = list((out / "runs").iterdir())
    for _ in range(3):
        append_event(run / "events.jsonl", {"event": "requeue", "images_seen": 64, "job_id": "1", "time": 0})
    assert requeue(run, 64) == "failed"
    record = load_record(run)
    assert record["status"] == "failed" and "requeued 3 times without progress" in record["error"]


@pytest.mark.slow
@pytest.mark.distributed
def test_a_deepspeed_job_sent_sigterm_checkpoints_requeues_and_resumes(slurm, env, tmp_path):
    """A combination with --gpus 2 runs DeepSpeed inside its job (CPU processes over gloo with [slurm] gpus = 0)."""
    pytest.importorskip("deepspeed")
    out = tmp_path / "out"
    toml = tmp_path / "sweep.toml"
    toml.write_text("[slurm]\ngpus = 0\ncpus = 2\n[sweep]\nseed = [0]\n")
    protobench("sweep", "--executor", "slurm", "--config", str(toml), "--gpus", "2", "--budget", "8192",
               "--eval-every", "8192", *TINY, "-o", "denoiser.dropout=0", "--out", str(out), env=env)
    [(run_id, job)] = submitted_jobs(out).items()
    events = out / "runs" / run_id / "events.jsonl"
    wait_until(lambda: [e for e in read_events(events) if e["event"] == "loss"], "the first logged step")
    subprocess.run(["scancel", "--signal=TERM", job], env=env, check=True)
    wait_until(lambda: any(line.split()[0] == job and "PENDING" in line for line in queue(env)), "requeued")
    release(job, env)
    resumed_to_completion(out, run_id, slurm, env)
    log = read_events(events)
    kinds = [e["event"] for e in log]
    assert kinds.count("interrupted") == 1 and kinds.count("requeue") == 1 and kinds.count("resume") == 1
    assert load_record(events.parent)["device"]["count"] == 2
    steps = [e["step"] for e in log if e["event"] == "loss"]
    assert len(steps) == len(set(steps)), "a step was trained twice"
