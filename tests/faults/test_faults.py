"""Faults injected into real files and real processes: each test damages what a real run wrote, then
checks the one-line message, the fallback, and that nothing is written outside the run's folder.

FAULTS counts the faults these tests inject; each is handled (the test asserts the handling)."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from protobench import cache
from protobench.cli import main
from protobench.errors import UsageError
from protobench.events import append_event, read_events, scan_events
from protobench.io import atomic_write_json, copy_file
from protobench.locks import RunLock, RunLocked, run_lock
from protobench.records import UnreadableRun, load_record
from protobench.runfolder import RunFolder, unreadable_runs, validate_run_id
from protobench.store import index_path, records
from protobench.testing.tiny import TinyDataset, tiny_config
from protobench.training.checkpoints import load_latest, save_checkpoint
from protobench.training.generation import save_grid
from protobench.training.run import Run

BUDGET, EVERY, STOP_AT = 256, 64, 192  # evaluations and checkpoints at 64, 128, 192, 256; stopped before 192


def _config(registry):
    return tiny_config(registry, budget=BUDGET, eval_every=EVERY, conditioner="random")


class _StopAt:
    """A progress callback that interrupts the run (as Ctrl-C does) once it has seen `images` images:
    deterministic, unlike a timer."""

    def __init__(self, images: int):
        self.images = images

    def __call__(self, images_seen: int, budget: int, mse: float) -> None:
        if images_seen >= self.images:
            raise KeyboardInterrupt


@pytest.fixture(scope="module")
def runs(protobench_registry, protobench_cache_dir, tmp_path_factory):
    """A completed run, and the same run interrupted before its third evaluation (checkpoints at 64 and 128)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PROTOBENCH_CACHE", str(protobench_cache_dir))
        mp.setenv("HF_HUB_OFFLINE", "1")
        base = tmp_path_factory.mktemp("faults")
        cfg = _config(protobench_registry)
        straight = Run(cfg, protobench_registry, base / "straight", show_progress=False).execute()
        stopped = Run(cfg, protobench_registry, base / "stopped", show_progress=False, progress=_StopAt(STOP_AT))
        with pytest.raises(KeyboardInterrupt):
            stopped.execute()
        yield {"cfg": cfg, "straight": Path(straight["path"]), "stopped": stopped.dir, "record": straight,
               "registry": protobench_registry}


def _copy_run(run_dir: Path, out: Path, name: str | None = None) -> Path:
    """A copy of a run folder under out/runs (renamed: its config.json then carries the new run id)."""
    dest = out / "runs" / (name or run_dir.name)
    shutil.copytree(run_dir, dest)
    if name:
        meta = json.loads((dest / "config.json").read_text())
        meta["run_id"] = name
        (dest / "config.json").write_text(json.dumps(meta))
    return dest


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")} if root.exists() else set()


def _flip_tensor_bytes(path: Path, n: int = 8) -> None:
    """Flip n bytes in the middle of a safetensors file's data (after its JSON header)."""
    blob = bytearray(path.read_bytes())
    header = struct.unpack("<Q", bytes(blob[:8]))[0]
    start = 8 + header + (len(blob) - 8 - header) // 2
    for i in range(start, start + n):
        blob[i] ^= 0xFF
    path.write_bytes(bytes(blob))


def _truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


# ---------------------------------------------------------------------------------------------
# checkpoints


def test_flipped_checkpoint_is_named_and_resume_falls_back_to_the_unstopped_result(runs, tmp_path, capfd,
                                                                                  protobench_cache):
    run_dir = _copy_run(runs["stopped"], tmp_path / "out")
    newest = run_dir / "checkpoints" / "step-00000004.safetensors"
    _flip_tensor_bytes(newest)
    capfd.readouterr()
    record = Run(runs["cfg"], runs["registry"], tmp_path / "out", show_progress=False).execute()
    err = _lines(capfd.readouterr().err)
    assert any("step-00000004.safetensors does not match its checksum" in line for line in err), err
    assert any("using checkpoint step-00000002.safetensors (step 2)" in line for line in err), err
    assert record["status"] == "completed"
    resumes = [e for e in read_events(run_dir / "events.jsonl") if e["event"] == "resume"]
    assert [e["images_seen"] for e in resumes] == [EVERY]  # from the previous good checkpoint
    # the fallback loses only the work since that checkpoint: the result is the unstopped run's, bit for bit
    mine = load_latest(run_dir / "checkpoints")
    theirs = load_latest(runs["straight"] / "checkpoints")
    assert mine["step"] == theirs["step"] == BUDGET // 32
    for key, value in theirs["tensors"].items():
        if key.startswith(("model.", "ema.")):
            assert torch.equal(value, mine["tensors"][key]), key
    assert [e["metrics"] for e in record["evals"]] == [e["metrics"] for e in runs["record"]["evals"]]


DAMAGE = {
    # name: (what to damage, the step that loads, the words of the one-line message)
    "flipped tensor bytes": (lambda d: _flip_tensor_bytes(d / "step-00000004.safetensors"), 2, "does not match its checksum"),
    "truncated tensor file": (lambda d: _truncate(d / "step-00000004.safetensors"), 2, "does not match its checksum"),
    "flipped header byte": (lambda d: _flip_header(d / "step-00000004.safetensors"), 2, "does not match its checksum"),
    "missing tensor file": (lambda d: (d / "step-00000004.safetensors").unlink(), 2, "is missing"),
    "truncated latest.json": (lambda d: _truncate(d / "latest.json"), 4, "latest.json is unreadable"),
    "garbage latest.json": (lambda d: (d / "latest.json").write_bytes(os.urandom(64)), 4, "latest.json is unreadable"),
    "truncated latest.json and newest manifest": (
        lambda d: (_truncate(d / "latest.json"), _truncate(d / "step-00000004.json")), 2, "is unreadable"),
}


def _flip_header(path: Path) -> None:
    blob = bytearray(path.read_bytes())
    blob[12] ^= 0xFF  # inside the JSON header
    path.write_bytes(bytes(blob))


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_newest_checkpoint_is_named_and_the_previous_one_loads(runs, tmp_path, capfd, damage):
    ckpt = _copy_run(runs["stopped"], tmp_path / "out") / "checkpoints"
    inject, step, words = DAMAGE[damage]
    inject(ckpt)
    capfd.readouterr()
    state = load_latest(ckpt)
    err = _lines(capfd.readouterr().err)
    assert state is not None and state["step"] == step
    assert any(words in line for line in err), err
    assert all(line.startswith("protobench: ") for line in err), err  # lines, not a traceback


def test_no_loadable_checkpoint_is_said_in_one_line(runs, tmp_path, capfd):
    ckpt = _copy_run(runs["stopped"], tmp_path / "out") / "checkpoints"
    for f in ckpt.glob("step-*.safetensors"):
        _truncate(f)
    capfd.readouterr()
    assert load_latest(ckpt) is None
    err = _lines(capfd.readouterr().err)
    assert any("no checkpoint" in line and "loads" in line for line in err), err


def test_sample_on_a_damaged_final_checkpoint_falls_back_or_fails_in_one_line(runs, tmp_path, protobench_cache):
    out = tmp_path / "out"
    run_dir = _copy_run(runs["straight"], out)
    final = json.loads((run_dir / "checkpoints" / "latest.json").read_text())["file"]
    _flip_tensor_bytes(run_dir / "checkpoints" / final)
    png = tmp_path / "grid.png"
    result = CliRunner().invoke(main, ["sample", run_dir.name, "--out", str(out), "--output", str(png)])
    assert result.exit_code == 0, result.output
    assert png.is_file() and "Traceback" not in result.output
    assert f"{final} does not match its checksum" in result.stderr
    # every checkpoint damaged: one line, exit 2
    for f in (run_dir / "checkpoints").glob("step-*.safetensors"):
        _truncate(f)
    result = CliRunner().invoke(main, ["sample", run_dir.name, "--out", str(out), "--output", str(tmp_path / "b.png")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "none of its checkpoints loads" in result.stderr
    assert not (tmp_path / "b.png").exists()


# ---------------------------------------------------------------------------------------------
# events.jsonl and unreadable runs


def test_torn_event_line_is_cut_before_the_next_event(runs, tmp_path, capfd):
    run_dir = _copy_run(runs["stopped"], tmp_path / "out")
    events = run_dir / "events.jsonl"
    before = read_events(events)
    with open(events, "ab") as fh:
        fh.write(b'{"event": "loss", "images_seen": 2')  # a write cut by kill -9
    append_event(events, {"event": "resume", "images_seen": 128, "step": 4})
    assert "ended in a damaged line" in capfd.readouterr().err
    after, problems = scan_events(events)
    assert problems == [] and after == [*before, {"event": "resume", "images_seen": 128, "step": 4}]


def test_unreadable_runs_are_listed_with_file_and_reason(runs, tmp_path):
    out = tmp_path / "out"
    good = _copy_run(runs["straight"], out, "good")
    cut_config = _copy_run(runs["straight"], out, "cut-config")
    _truncate(cut_config / "config.json")
    bad_utf8 = _copy_run(runs["straight"], out, "bad-utf8")
    lines = (bad_utf8 / "events.jsonl").read_bytes().split(b"\n")
    lines.insert(2, b'{"event": "loss", "note": "\xff\xfe"}')
    (bad_utf8 / "events.jsonl").write_bytes(b"\n".join(lines))
    torn_end = _copy_run(runs["straight"], out, "torn-end")
    data = (torn_end / "events.jsonl").read_bytes().rstrip(b"\n")
    (torn_end / "events.jsonl").write_bytes(data[: data.rfind(b"\n") + 20])  # the `end` line cut short

    found = {(u["run_id"], u["file"]): u for u in unreadable_runs(out)}
    assert set(found) == {("cut-config", "config.json"), ("bad-utf8", "events.jsonl"), ("torn-end", "events.jsonl")}
    assert not found["cut-config", "config.json"]["readable"] and "not JSON" in found["cut-config", "config.json"]["reason"]
    assert "not UTF-8" in found["bad-utf8", "events.jsonl"]["reason"]
    assert "cut off" in found["torn-end", "events.jsonl"]["reason"]
    with pytest.raises(UnreadableRun, match="config.json"):
        load_record(cut_config)
    # the readable ones are still reported (bad UTF-8 in a loss line costs nothing; a torn end is "running")
    by_id = {r["run_id"]: r for r in records(out)}
    assert set(by_id) == {"good", "bad-utf8", "torn-end"}
    assert by_id["bad-utf8"]["status"] == "completed" and by_id["bad-utf8"]["best"] == by_id["good"]["best"]
    assert by_id["torn-end"]["status"] == "running"
    assert good.is_dir()


# ---------------------------------------------------------------------------------------------
# the index


def _wrong_schema(path: Path) -> None:
    path.unlink()
    for suffix in ("-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE runs (run_id TEXT PRIMARY KEY, something TEXT)")
        conn.execute("INSERT INTO runs VALUES ('x', 'y')")


def _random_bytes(path: Path) -> None:
    for suffix in ("-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    path.write_bytes(os.urandom(8192))


def _truncated_db(path: Path) -> None:
    with sqlite3.connect(path) as conn:  # fold the WAL in, so the main file holds the data
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    for suffix in ("-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2 + 100])


@pytest.mark.parametrize("damage", [_random_bytes, _truncated_db, _wrong_schema], ids=["random", "truncated", "schema"])
def test_damaged_index_is_rebuilt_from_the_run_folders(runs, tmp_path, capfd, damage):
    out = tmp_path / "out"
    for name in ("a", "b"):
        _copy_run(runs["straight"], out, name)
    first = records(out)
    damage(index_path(out))
    capfd.readouterr()
    again = records(out)
    assert [r["run_id"] for r in again] == [r["run_id"] for r in first] == ["a", "b"]
    assert [r["best"] for r in again] == [r["best"] for r in first]
    err = _lines(capfd.readouterr().err)
    assert len(err) == 1 and "rebuilding it from the run folders" in err[0], err  # said once, not silently
    result = CliRunner().invoke(main, ["report", "--out", str(out)])
    assert "Traceback" not in result.output and result.exit_code == 0, result.output


def test_hand_edited_index_row_is_not_trusted(runs, tmp_path, capfd):
    out = tmp_path / "out"
    _copy_run(runs["straight"], out, "a")
    (true,) = records(out)
    with sqlite3.connect(index_path(out)) as conn:
        record = json.loads(conn.execute("SELECT record FROM runs").fetchone()[0])
        record["best"]["value"] = 0.5
        conn.execute("UPDATE runs SET record = ?, best_value = 0.5", (json.dumps(record),))
    capfd.readouterr()
    (seen,) = records(out)
    assert seen["best"] == true["best"] and seen["best"]["value"] != 0.5
    assert "does not match its record" in capfd.readouterr().err


def test_a_full_disk_under_the_index_is_one_line_not_a_damaged_index(runs, tmp_path):
    """`report` on a results folder whose file system is full: the index cannot be written, which is said in one
    line with its path (exit 74), not taken for damage and rebuilt; with room again the report is whole."""
    from disks import fill, mount_tmpfs, unmount

    out = tmp_path / "out"
    mount_tmpfs(out, "16m")
    try:
        _copy_run(runs["straight"], out, "a")
        filler = fill(out)
        result = subprocess.run([sys.executable, "-m", "protobench.cli", "report", "--out", str(out)],
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 74, result.stderr[-2000:]
        assert _lines(result.stderr) == [f"error: no space left writing {index_path(out)} (0 B free there); make "
                                         "room, then run it again"], result.stderr[-2000:]
        filler.unlink()
        again = subprocess.run([sys.executable, "-m", "protobench.cli", "report", "--out", str(out), "--json"],
                               capture_output=True, text=True, timeout=300)
        assert again.returncode == 0 and "damaged" not in again.stderr, again.stderr[-2000:]
        assert [row["conditioner"] for row in json.loads(again.stdout)] == ["random"]
    finally:
        unmount(out)


# ---------------------------------------------------------------------------------------------
# the caches: one scheme, damage named and rebuilt to the same contents


@pytest.fixture(scope="module")
def tiny(protobench_registry):
    source = protobench_registry.build("dataset", "digits", {}, {})
    ds = TinyDataset(source, train_per_class=20, test_per_class=10)
    ds.evaluator_options = {"width": 8, "epochs": 2, "batch_size": 64, "lr": 1e-3}
    return ds


def _entry(root: Path, kind: str) -> Path:
    (entry,) = [p for p in (root / kind).iterdir() if not p.name.startswith(".")]
    return entry


CACHE_DAMAGE = {
    "flipped payload": lambda e: _flip_tensor_bytes(next(p for p in e.iterdir() if p.suffix == ".safetensors")),
    "truncated payload": lambda e: _truncate(next(p for p in e.iterdir() if p.suffix == ".safetensors")),
    "garbage manifest": lambda e: (e / cache.MANIFEST).write_bytes(b"\x00garbage"),
    "missing manifest": lambda e: (e / cache.MANIFEST).unlink(),
}


def _evaluator(tiny, root):
    from protobench_metrics.evaluator import load_or_train

    _net, meta = load_or_train(tiny, root)
    return meta["weights_sha256"]


def _real(tiny, root):
    from protobench_metrics import extractors

    from protobench.interfaces import Reference

    extractors.clear_memos()
    ref = Reference(tiny, root, torch.device("cpu"))
    feats = extractors.real_features(ref, extractors.resolve(ref), "train")
    extractors.clear_memos()
    return feats["fid.mu"].clone()


def _stage1(tiny, root):
    from protobench_conditioners.stage1 import Stage1Options, prototypes_for

    from protobench.interfaces import PrepareContext

    train, test = tiny.load()
    ctx = PrepareContext(train=train, test=test, num_classes=10, image_shape=(1, 8, 8), dataset_checksum=tiny.checksum(),
                         seed=0, device=torch.device("cpu"), cache_dir=root)
    return prototypes_for(ctx, Stage1Options(dim=8, epochs=1, batch_size=64)).prototypes.clone()


def _aux(tiny, root):
    from protobench.interfaces import PrepareContext
    from protobench.plugins import get_registry

    train, test = tiny.load()
    cond = get_registry().build("conditioner", "aux-classifier", {"classifier_width": 8, "classifier_epochs": 1},
                                {"num_classes": 10, "image_shape": (1, 8, 8)})
    ctx = PrepareContext(train=train, test=test, num_classes=10, image_shape=(1, 8, 8), dataset_checksum=tiny.checksum(),
                         seed=0, device=torch.device("cpu"), cache_dir=root)
    cond.prepare(ctx)
    return torch.cat([v.flatten().float() for v in cond.classifier.state_dict().values()])


CACHES = {"evaluators": _evaluator, "metrics": _real, "prototypes": _stage1, "aux-classifiers": _aux}


@pytest.mark.parametrize("damage", list(CACHE_DAMAGE))
@pytest.mark.parametrize("kind", list(CACHES))
def test_damaged_cache_entry_is_named_and_rebuilt_to_the_same_contents(tiny, tmp_path, capfd, kind, damage):
    root = tmp_path / "cache"
    build = CACHES[kind]
    first = build(tiny, root)
    entry = _entry(root, kind)
    assert (entry / cache.MANIFEST).is_file()
    CACHE_DAMAGE[damage](entry)
    capfd.readouterr()
    again = build(tiny, root)
    err = _lines(capfd.readouterr().err)
    assert any(str(entry) in line and "damaged" in line and "rebuilding" in line for line in err), err
    assert (torch.equal(first, again) if isinstance(first, torch.Tensor) else first == again)
    assert cache.lookup(root, kind, entry.name) is not None  # the rebuilt entry verifies


def test_processes_building_one_cache_entry_at_once_leave_one_good_entry(tmp_path):
    code = ("import sys, torch\nfrom protobench import cache\n"
            "for i in range(20):\n"
            "    cache.save_tensors(sys.argv[1], 'k', 'same', {'x': torch.arange(100000.0)}, {'by': 'any'})\n"
            "    assert cache.load_tensors(sys.argv[1], 'k', 'same') is not None\n")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stderr=subprocess.PIPE, text=True)
             for _ in range(3)]
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], errors
    assert not any("damaged" in e for e in errors), errors
    tensors, meta, path = cache.load_tensors(tmp_path, "k", "same")
    assert torch.equal(tensors["x"], torch.arange(100000.0)) and meta == {"by": "any"}
    assert sorted(p.name for p in (tmp_path / "k").iterdir()) == ["same"]  # no temporary folders left


def test_evaluator_training_is_deterministic_and_draws_nothing_from_the_global_rng(tiny, tmp_path):
    from protobench_metrics.evaluator import train_evaluator, weights_digest

    opts = dict(tiny.evaluator_options)
    torch.manual_seed(1)
    state = torch.get_rng_state()
    a = weights_digest(train_evaluator(tiny, opts))
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(2)
    b = weights_digest(train_evaluator(tiny, opts))
    assert a == b and len(a) == 64


def test_metric_setup_on_a_cold_cache_draws_nothing_from_the_global_rng(tiny, tmp_path):
    from protobench_metrics.extractors import instruments

    from protobench.interfaces import Reference

    fid = _fid_metric()
    ref = Reference(tiny, tmp_path / "cold", torch.device("cpu"))
    torch.manual_seed(0)
    state = torch.get_rng_state()
    fid.prepare(ref)  # trains the evaluator and extracts the real features
    _train, test = tiny.load()
    fid.compute(test.images, test.labels, ref)  # sample features too
    assert torch.equal(torch.get_rng_state(), state)
    assert instruments(ref) == {"tiny-digits-evaluator": _evaluator(tiny, tmp_path / "cold")}


def _fid_metric():
    from protobench.plugins import get_registry

    return get_registry().build("metric", "fid", {}, {"num_classes": 10, "image_shape": (1, 8, 8)})


@pytest.mark.slow
def test_a_run_with_a_cold_cache_equals_one_with_a_warm_cache(protobench_registry, tmp_path, monkeypatch):
    monkeypatch.setenv("PROTOBENCH_CACHE", str(tmp_path / "fresh-cache"))
    from protobench_metrics import extractors

    extractors.clear_memos()
    cfg = tiny_config(protobench_registry, budget=128, eval_every=128, conditioner="random")
    cold = Run(cfg, protobench_registry, tmp_path / "cold", show_progress=False).execute()
    extractors.clear_memos()  # the second run reads the disk cache, as a new process would
    warm = Run(cfg, protobench_registry, tmp_path / "warm", show_progress=False).execute()
    a, b = (load_latest(Path(r["path"]) / "checkpoints") for r in (cold, warm))
    for key, value in a["tensors"].items():
        if key.startswith(("model.", "ema.")):
            assert torch.equal(value, b["tensors"][key]), key
    assert cold["evals"][0]["metrics"] == warm["evals"][0]["metrics"]


# ---------------------------------------------------------------------------------------------
# concurrent processes: the per-run lock


def test_a_run_held_by_another_process_is_refused_and_released_on_kill_9(tmp_path):
    run_dir = tmp_path / "out" / "runs" / "r"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom protobench.locks import RunLock\n"
         "lock = RunLock(sys.argv[1]); assert lock.acquire(); print('held', flush=True); time.sleep(600)", str(run_dir)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        lock = RunLock(run_dir)
        assert lock.acquire() is False
        assert lock.acquire(wait=True, timeout=0.3) is False
        with run_lock(run_dir) as held:
            assert held is False
        with pytest.raises(RunLocked, match=f"process {holder.pid} on "):
            with RunLock(run_dir):
                pass
    finally:
        holder.kill()
        holder.wait()
    with RunLock(run_dir) as mine:  # kill -9 left no stale lock
        assert mine.held
    assert RunLock(run_dir).acquire()  # and it was released on leaving the block


@pytest.mark.slow
def test_a_second_process_on_the_same_run_is_refused_in_one_line(tmp_path, protobench_cache_dir):
    """Two `protobench run` on one --out: the second does not train the run the first one holds."""
    out = tmp_path / "out"
    env = {**os.environ, "PROTOBENCH_CACHE": str(protobench_cache_dir), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    argv = [sys.executable, "-m", "protobench", "run", "--budget", "1000000", "--eval-every", "500000",
            "--eval-samples", "20", "-o", "batch_size=32", "-o", "denoiser.base_channels=8", "-o", "sampler.steps=3",
            "--quiet", "--out", str(out)]
    first = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 600
        while time.time() < deadline and first.poll() is None and not any(
                e.get("event") == "start" for f in out.glob("runs/*/events.jsonl") for e in read_events(f)):
            time.sleep(0.1)
        assert first.poll() is None, "the first run stopped before it started training"
        second = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
        assert second.returncode == 2, second.stderr
        lines = _lines(second.stderr)
        assert len(lines) == 1 and f"is being run by process {first.pid} on " in lines[0], lines
        (run_dir,) = (out / "runs").iterdir()
        assert [e["event"] for e in read_events(run_dir / "events.jsonl")].count("start") == 1
    finally:
        first.kill()
        first.wait()
    assert RunLock(run_dir).acquire()  # the killed holder left no stale lock


# ---------------------------------------------------------------------------------------------
# writes outside the output folder


def test_writes_refuse_symbolic_links_inside_a_run_folder(tmp_path):
    run_dir = tmp_path / "out" / "runs" / "r"
    run_dir.mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    victim = outside / "victim.txt"
    victim.write_text("keep me")
    (run_dir / "samples.png").symlink_to(victim)
    (run_dir / "samples").symlink_to(outside, target_is_directory=True)
    (run_dir / "checkpoints").symlink_to(outside, target_is_directory=True)
    src = tmp_path / "src.png"
    src.write_bytes(b"png")
    before = _files(outside)
    with pytest.raises(UsageError, match="symbolic link"):
        copy_file(src, run_dir / "samples.png")
    samples = torch.zeros((20, 1, 8, 8), dtype=torch.uint8)
    with pytest.raises(UsageError, match="symbolic link"):
        save_grid(samples, torch.arange(20) % 10, 10, run_dir / "samples" / "000000064.png")
    with pytest.raises(UsageError, match="symbolic link"):
        save_checkpoint(run_dir / "checkpoints", 1, {"x": torch.zeros(1)}, {})
    (run_dir / "deep").mkdir()
    (run_dir / "deep" / "link").symlink_to(outside, target_is_directory=True)
    with pytest.raises(UsageError, match="symbolic link"):
        atomic_write_json(run_dir / "deep" / "link" / "sub" / "x.json", {}, within=run_dir)
    assert victim.read_text() == "keep me" and _files(outside) == before


def test_a_resumed_run_does_not_write_through_a_planted_link(runs, tmp_path, protobench_cache):
    run_dir = _copy_run(runs["stopped"], tmp_path / "out")
    outside = tmp_path / "outside"
    outside.mkdir()
    victim = outside / "victim.png"
    victim.write_bytes(b"not a png")
    (run_dir / "samples.png").unlink()
    (run_dir / "samples.png").symlink_to(victim)
    shutil.rmtree(run_dir / "samples")
    (run_dir / "samples").symlink_to(outside, target_is_directory=True)
    with pytest.raises(UsageError, match="symbolic link"):
        Run(runs["cfg"], runs["registry"], tmp_path / "out", show_progress=False).execute()
    assert victim.read_bytes() == b"not a png" and sorted(p.name for p in outside.iterdir()) == ["victim.png"]
    assert read_events(run_dir / "events.jsonl")[-1]["event"] == "failed"


@pytest.mark.parametrize("bad", ["/etc", "../../etc", "..", ".", "a/b", "", ".hidden", "a\\b", "x\0y"])
def test_a_run_id_is_a_name_not_a_path(tmp_path, bad):
    with pytest.raises(UsageError, match="not a run id"):
        validate_run_id(bad)
    with pytest.raises(UsageError):
        RunFolder(tmp_path, bad)
    assert not _files(tmp_path)


def test_a_real_run_id_is_accepted(runs, tmp_path):
    name = runs["straight"].name
    assert RunFolder(tmp_path, name).path == tmp_path / "runs" / name


#: faults injected above (each handled): checkpoints 1 + 7 + 1 + 2, events 1, unreadable runs 3, index 3 + 1 + 1,
#: caches 4 kinds × 4 damages + concurrent builders 1, RNG coupling 3, concurrent processes 2, symlinks 5 + 1, bad run ids 9
FAULTS = 1 + len(DAMAGE) + 1 + 2 + 1 + 3 + 3 + 1 + 1 + len(CACHES) * len(CACHE_DAMAGE) + 1 + 3 + 2 + 5 + 1 + 9

