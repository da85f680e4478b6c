"""Should `report` read an SQLite index or the run folders directly? Both ways on the same N copies of one
completed run, in one process, alternating rounds, so machine load falls on both alike.

    python -m benchmarks.index_vs_folders --run OUT/runs/<run_id> [--copies 1000] [--rounds 7]

`index` is `store.records(out)` with the index warm (every folder stat'ed, unchanged rows read back);
`folders` is `records.load_record` on every run folder (config.json and events.jsonl parsed, events
replayed). The ratio folders/index is the median over rounds; each way's peak Python allocation is
measured once with tracemalloc. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

from benchmarks.report_scale import copies
from protobench import store
from protobench.runfolder import run_folders


def by_index(out: Path) -> list:
    return store.records(out)


def by_folders(out: Path) -> list:
    return [folder.record() for folder in run_folders(out)]


def peak_mb(fn, out: Path) -> float:
    tracemalloc.start()
    fn(out)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="a completed run folder")
    parser.add_argument("--copies", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="index-vs-folders-") as scratch:
        out = Path(scratch)
        copies(args.run, out, args.copies)
        start = time.perf_counter()
        a = by_index(out)  # builds the index
        cold = time.perf_counter() - start
        b = by_folders(out)
        assert [r["run_id"] for r in a] == [r["run_id"] for r in b] and a == b, "the two ways disagree"
        times: dict[str, list[float]] = {"index": [], "folders": []}
        for i in range(args.rounds):
            for name, fn in (("index", by_index), ("folders", by_folders))[:: 1 if i % 2 == 0 else -1]:
                start = time.perf_counter()
                fn(out)
                times[name].append(time.perf_counter() - start)
        ratio = statistics.median(f / i for f, i in zip(times["folders"], times["index"], strict=True))
        result = {"benchmark": "index_vs_folders", "runs": args.copies, "rounds": args.rounds,
                  "index_cold_s": cold, "index_warm_s": statistics.median(times["index"]),
                  "folders_s": statistics.median(times["folders"]), "folders_over_index": ratio,
                  "index_peak_mb": peak_mb(by_index, out), "folders_peak_mb": peak_mb(by_folders, out)}
    print(f"{args.copies} runs: index warm {result['index_warm_s']:.3f} s (cold {cold:.2f} s), folders "
          f"{result['folders_s']:.3f} s, folders/index {ratio:.2f}x (median of {args.rounds} alternating rounds); "
          f"peak {result['index_peak_mb']:.0f} MB vs {result['folders_peak_mb']:.0f} MB", file=sys.stderr)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
