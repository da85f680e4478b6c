"""The one entrypoint of a process that runs a run for another: a sweep's job, or one DeepSpeed rank.

    python -m protobench.worker --config-json FILE --out DIR [--threads N] [--device GPU] [--events FILE]
    python -m protobench.worker --config-json FILE --out DIR --deepspeed     (what the launcher starts)

Its exit code is an `ExitCode`. A job refused before its run held a record (a plugin option, another process
holding the run) says why as one `refused` event in the `--events` file its parent reads; job.log keeps the
same line for humans.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path

from protobench.errors import ExitCode
from protobench.events import REFUSED


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="protobench.worker")
    p.add_argument("--config-json", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default=None, help="the GPU this job may see")
    p.add_argument("--hostfile", type=Path, default=None)
    p.add_argument("--events", type=Path, default=None, help="where a refusal is reported")
    p.add_argument("--deepspeed", action="store_true", help="one rank of a run under the DeepSpeed launcher")
    p.add_argument("--local_rank", type=int, default=None)  # in case a launcher passes it
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.deepspeed:
        return run_rank(args.config_json, args.out)
    return run_job(args.config_json, args.out, args.threads, args.device, args.hostfile, args.events)


def refuse(events: Path | None, code: ExitCode, message: str) -> ExitCode:
    """Report a refusal: one `error:` line in the log, one `refused` event for the parent (if there is room to
    write them: the exit code says what happened either way)."""
    try:
        print(f"error: {message}", file=sys.stderr, flush=True)
        if events is not None:
            from protobench.events import append_event, make_event

            append_event(events, make_event(REFUSED, exit_code=int(code), error=message))
    except OSError:
        pass
    return code


def run_job(cfg_json: Path, out: Path, threads: int | None, device: str | None, hostfile: Path | None,
            events: Path | None) -> ExitCode:
    """One combination of a sweep, with no display: as `protobench run` would run it."""
    import faulthandler

    faulthandler.enable()  # a crash (SIGSEGV, SIGBUS) leaves its stack in job.log, and the parent names the signal
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # kill / a scheduler's preemption: as Ctrl-C
    if device is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = device
    from protobench.config import RunConfig
    from protobench.errors import UsageError
    from protobench.launch import execute
    from protobench.locks import RunLocked
    from protobench.plugins import get_registry

    cfg = RunConfig.from_dict(json.loads(cfg_json.read_text()))
    try:
        record = execute(cfg, get_registry(), out, show_progress=False, hostfile=hostfile, threads=threads)
    except KeyboardInterrupt as exc:
        if getattr(exc, "reason", None):  # a full disk: said if there is room; the exit code says it anyway
            return refuse(events, ExitCode.NO_SPACE, exc.reason)
        return ExitCode.INTERRUPTED
    except RunLocked as exc:  # another process holds the run: the parent records it as skipped
        return refuse(events, ExitCode.HELD, str(exc))
    except UsageError as exc:  # refused before the run held a record
        return refuse(events, ExitCode.USAGE, str(exc))
    except Exception as exc:  # recorded in the run's events; the parent reads the record
        from protobench.diskspace import no_space_in

        # a full disk before the run could record it (its config.json) stops resumably all the same
        return ExitCode.NO_SPACE if no_space_in(exc) else ExitCode.FAILED
    return ExitCode.OK if record["status"] == "completed" else ExitCode.FAILED


def run_rank(cfg_json: Path, out: Path) -> ExitCode:
    """One rank of a data-parallel run: join the process group, run, leave once rank 0 has the record."""
    from protobench.data_parallel import init_process_group, quiet_deepspeed

    quiet_deepspeed()
    import torch.distributed as tdist

    from protobench.config import RunConfig
    from protobench.errors import Interrupted
    from protobench.plugins import get_registry
    from protobench.training.run import Run

    cfg = RunConfig.from_dict(json.loads(cfg_json.read_text()))
    init_process_group()
    try:
        record = Run(cfg, get_registry(), out, show_progress=False).execute()
    except Interrupted:  # every rank agreed to stop (--stop-after) and rank 0 recorded it: resumable
        tdist.destroy_process_group()
        return ExitCode.INTERRUPTED
    tdist.barrier()  # rank 0 writes the record; nobody leaves before it has
    tdist.destroy_process_group()
    return ExitCode.OK if record["status"] == "completed" else ExitCode.FAILED


if __name__ == "__main__":
    sys.exit(main())
