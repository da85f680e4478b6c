"""A run stopped part-way resumes from its checkpoint to completion (the GPU check's DeepSpeed stage).

    python -m benchmarks.resume_check --out DIR --stop-after IMAGES [--name NAME] -- <protobench run options>

Runs `protobench run <options> --stop-after IMAGES --out DIR --json --quiet` (it checkpoints and stops there,
exit 130), then the same command without --stop-after: the second run must say it resumed and end
`completed`. Last line on stdout: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from benchmarks._common import emit, progress


def command(options: list[str], out: Path) -> list[str]:
    return [sys.executable, "-m", "protobench", "run", *options, "--out", str(out), "--json", "--quiet"]


def run_folder(out: Path) -> Path | None:
    found = sorted((out / "runs").glob("*/config.json"))
    return found[0].parent if found else None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.resume_check", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--stop-after", required=True, help="images after which the first invocation stops")
    parser.add_argument("--name", default="resume")
    parser.add_argument("options", nargs=argparse.REMAINDER, help="-- then protobench run options")
    args = parser.parse_args(argv)
    options = [o for o in args.options if o != "--"]
    cmd = command(options, args.out)
    result: dict = {"stage": args.name, "command": " ".join(cmd[1:]), "stop_after": args.stop_after}
    start = time.monotonic()
    first = subprocess.run([*cmd, "--stop-after", args.stop_after], stdout=subprocess.PIPE, stderr=sys.stderr,
                           text=True, timeout=600)
    result["first_exit"] = first.returncode  # 130: stopped at --stop-after, checkpointed, resumable
    result["first_seconds"] = round(time.monotonic() - start, 1)
    progress(f"{args.name}: first invocation exited {first.returncode}; running it again to resume")
    second = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=sys.stderr, text=True, timeout=600)
    result["second_exit"] = second.returncode
    try:
        record = json.loads(second.stdout)
    except json.JSONDecodeError:
        record = {}
    run_dir = run_folder(args.out)
    events = []
    if run_dir is not None and (run_dir / "events.jsonl").is_file():
        events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines() if line.strip()]
    resumes = [e for e in events if e.get("event") == "resume"]
    result.update({
        "run_id": record.get("run_id"), "status": record.get("status"),
        "resumed_at_images": resumes[0]["images_seen"] if resumes else None,
        "images_seen": (record.get("evals") or [{}])[-1].get("images_seen"),
        "device": record.get("device"), "device_seconds": record.get("device_seconds"), "best": record.get("best"),
        "deepspeed_optimizer_state": bool(run_dir and any(
            '"consolidated": "deepspeed"' in p.read_text() for p in (run_dir / "checkpoints").glob("step-*.json"))),
    })
    result["ok"] = bool(resumes) and record.get("status") == "completed" and second.returncode == 0
    emit(result)
    sys.exit(0 if result["ok"] else 1)


if __name__ == "__main__":
    main()
