"""Are two sweeps' results identical bit for bit, apart from the clock? For every run folder in both:
every event with its time and device-seconds removed at any depth (losses, evaluations with every metric and
its standard error, checkpoints, prepare work and Stage I's results) and the results folder's own path written
as <out>, the final checkpoint's bytes and the sample grids' bytes.

    python -m benchmarks.same_metrics OUT_BEFORE OUT_AFTER

Prints one line per difference and a summary; exits 1 if anything differs.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

CLOCK = {"time", "device_seconds"}


def without_clock(value, root: str):
    """`value` with every CLOCK key removed at any depth, and `root` (the results folder) written as <out>."""
    if isinstance(value, dict):
        return {k: without_clock(v, root) for k, v in value.items() if k not in CLOCK}
    if isinstance(value, list):
        return [without_clock(v, root) for v in value]
    if isinstance(value, str) and (value == root or value.startswith(root + os.sep)):
        return "<out>" + value[len(root):]  # a path under the results folder, not any text that contains it
    return value


def events(run: Path) -> list[dict]:
    out = []
    root = str(run.parent.parent.resolve())  # paths in events are written resolved
    for line in (run / "events.jsonl").read_text().splitlines():
        ev = json.loads(line)
        if ev.get("event") == "start":
            ev.pop("device", None)  # the processor's name, not a result
        out.append(without_clock(ev, root))
    return out


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def files(run: Path) -> dict[str, str]:
    found = {}
    ckpts = sorted((run / "checkpoints").glob("*.safetensors"))
    if ckpts:
        found["checkpoints/" + ckpts[-1].name] = digest(ckpts[-1])
    for png in sorted((run / "samples").glob("*.png")):
        found["samples/" + png.name] = digest(png)
    return found


def main(before: Path, after: Path) -> int:
    a = {p.name: p for p in (before / "runs").iterdir()}
    b = {p.name: p for p in (after / "runs").iterdir()}
    problems = [f"only in {before}: {n}" for n in sorted(set(a) - set(b))]
    problems += [f"only in {after}: {n}" for n in sorted(set(b) - set(a))]
    n_events = 0
    for name in sorted(set(a) & set(b)):
        ea, eb = events(a[name]), events(b[name])
        n_events += len(ea)
        if len(ea) != len(eb):
            problems.append(f"{name}: {len(ea)} events vs {len(eb)}")
        for i, (x, y) in enumerate(zip(ea, eb, strict=False)):
            if x != y:
                keys = sorted(k for k in set(x) | set(y) if x.get(k) != y.get(k))
                problems.append(f"{name}: event {i} ({x.get('event')}) differs in {', '.join(keys)}")
        if files(a[name]) != files(b[name]):
            problems.append(f"{name}: checkpoint or sample grid bytes differ")
    for line in problems:
        print(line)
    print(f"{len(set(a) & set(b))} runs, {n_events} events compared (time and device-seconds aside, at any depth), "
          f"final checkpoints and sample grids by sha256: {'IDENTICAL' if not problems else f'{len(problems)} differences'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2])))
