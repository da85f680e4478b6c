"""Errors a user causes: one clear line on stderr, exit code 2, no traceback (unless --debug)."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """What a protobench process's exit status means: the command line, a sweep's jobs, DeepSpeed ranks."""

    OK = 0
    FAILED = 1  # a run (or a sweep's combination) failed; the record says why
    USAGE = 2  # the user's input was refused: one line on stderr
    DIVERGED = 3  # the loss became NaN/inf
    NO_SPACE = 74  # a full disk: a sweep job stopped resumably (which may have had no room to say so), or a command
    HELD = 75  # another process holds the run (a second sweep on the same folder)
    INTERRUPTED = 130  # stopped on request (Ctrl-C, SIGTERM, --stop-after) with a checkpoint: resumable
    REQUEUED = -1  # a Slurm job that put itself back in the queue and leaves without a result (submitit's protocol)


class UsageError(Exception):
    """A mistake in the user's input: bad name, bad option, missing path, malformed file."""

    exit_code = ExitCode.USAGE


class PluginError(UsageError):
    """A plugin is misregistered (duplicate names) or misbehaves at construction."""


class TrainingDiverged(RuntimeError):
    """The loss became NaN/inf; the run stops and keeps its checkpoints."""

    exit_code = ExitCode.DIVERGED

    def __init__(self, step: int, loss: float):
        super().__init__(f"loss became {loss} at step {step}; run stopped, checkpoints kept")
        self.step = step
        self.loss = loss


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) stopped a run; `checkpoint` names what was saved (None: only earlier checkpoints)."""

    def __init__(self, run_id: str, images_seen: int, checkpoint: str | None):
        super().__init__(run_id)
        self.run_id = run_id
        self.images_seen = images_seen
        self.checkpoint = checkpoint


class NoSpace(Interrupted):
    """A write failed for lack of space or quota: the run stops like Ctrl-C, its last good checkpoint kept as the
    latest; `reason` is one line naming the path and the free space."""

    def __init__(self, run_id: str, images_seen: int, checkpoint: str | None, path: str, reason: str):
        super().__init__(run_id, images_seen, checkpoint)
        self.path = path
        self.reason = reason
