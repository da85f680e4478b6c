"""`protobench report` over many run folders: wall seconds and peak memory of the command, cold (the first call
builds the index) and warm (the index is current), and whether it imported torch.

    python -m benchmarks.report_scale --run OUT/runs/<run_id> [--copies 1,100,1000] [--repeats 3]

The run folder (a completed run) is copied N times under a scratch results directory, each copy a different
seed of the same combination (config.json rewritten so its run id matches its folder). Without `--run`, a
hand-made completed run (three evaluations, the way the engine writes them) is used. Each figure is the median
of `--repeats` fresh processes with its spread (min-max); run it alone on a quiet machine. The last line is one
JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from protobench.config import RunConfig
from protobench.events import append_event
from protobench.io import atomic_write_json

PROBE = ("import sys; from protobench.cli import main\n"
         "try: main(sys.argv[1:], standalone_mode=False)\n"
         "finally: print('TORCH', 'torch' in sys.modules, file=sys.stderr)\n")


def handmade_run(out: Path) -> Path:
    """A completed run folder written the way the engine writes one (no training: reading is what is timed)."""
    cfg = RunConfig(budget=3000, eval_every=1000)
    run_dir = out / "runs" / cfg.run_id()
    run_dir.mkdir(parents=True)
    atomic_write_json(run_dir / "config.json", {
        "run_id": cfg.run_id(), "config": cfg.to_dict(), "config_hash": cfg.hash(), "combination": cfg.combination(),
        "plugins": {}, "dataset_checksum": "x", "device": {"type": "cpu", "name": "bench", "count": 1}})
    events = run_dir / "events.jsonl"
    append_event(events, {"event": "start"})
    seconds: dict[str, float] = {}
    for i, fid in enumerate([40.0, 25.0, 22.0]):
        seconds = {"prepare": 0.0, "train": 600.0 * (i + 1), "eval": 10.0 * (i + 1)}
        append_event(events, {"event": "eval", "images_seen": 1000 * (i + 1), "step": i + 1,
                              "device_seconds": seconds, "metrics": {"intra-fid[digits-evaluator]": fid}})
    append_event(events, {"event": "end", "status": "completed", "device_seconds": seconds})
    return run_dir


def copies(source: Path, out: Path, n: int) -> None:
    """`n` copies of `source` under `out/runs/`, seeds 0..n-1 of one combination."""
    meta = json.loads((source / "config.json").read_text())
    for seed in range(n):
        cfg = RunConfig.from_dict({**meta["config"], "seed": seed})
        folder = out / "runs" / cfg.run_id()
        if folder.exists():
            continue
        shutil.copytree(source, folder, ignore=shutil.ignore_patterns("*.safetensors", "*.png", "*.lock"))
        atomic_write_json(folder / "config.json", {**meta, "run_id": cfg.run_id(), "config": cfg.to_dict(),
                                                    "config_hash": cfg.hash()})


def timed_report(out: Path) -> tuple[float, float, bool]:
    """(seconds, peak resident MB, imported torch) of one `protobench report --json` in a fresh process."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", PROBE, "report", "--out", str(out), "--json"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    err = proc.stderr.read() if proc.stderr else ""
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"report failed on {out}: {err.strip()[-300:]}")
    return seconds, usage.ru_maxrss / 1024, "TORCH True" in err


def spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="a completed run folder (default: a hand-made one)")
    parser.add_argument("--copies", default="1,100,1000")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    results = []
    with tempfile.TemporaryDirectory(prefix="report-scale-") as scratch:
        source = args.run or handmade_run(Path(scratch) / "source")
        for n in (int(c) for c in args.copies.split(",")):
            out = Path(scratch) / f"n{n}"
            copies(source, out, n)
            cold = []
            for _ in range(args.repeats):
                (out / "index.sqlite").unlink(missing_ok=True)
                for extra in ("index.sqlite-wal", "index.sqlite-shm"):
                    (out / extra).unlink(missing_ok=True)
                cold.append(timed_report(out))
            warm = [timed_report(out) for _ in range(args.repeats)]
            row = {"runs": n, "cold_s": spread([c[0] for c in cold]), "warm_s": spread([w[0] for w in warm]),
                   "warm_peak_mb": spread([w[1] for w in warm]), "imported_torch": any(w[2] for w in cold + warm)}
            print(f"{n:>6} runs: warm {row['warm_s']['median']:.2f} s ({row['warm_s']['min']:.2f}-"
                  f"{row['warm_s']['max']:.2f}), cold {row['cold_s']['median']:.2f} s, peak "
                  f"{row['warm_peak_mb']['median']:.0f} MB, torch {'imported' if row['imported_torch'] else 'not imported'}",
                  file=sys.stderr)
            results.append(row)
    print(json.dumps({"benchmark": "report_scale", "repeats": args.repeats, "results": results}))


if __name__ == "__main__":
    main()
