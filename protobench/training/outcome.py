"""How a run that started training ended, written to its events: failed (diverged, a plugin's error, a refused
option), or interrupted and resumable (Ctrl-C, SIGTERM, a full disk)."""

from __future__ import annotations

import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from protobench.diskspace import no_space_in
from protobench.errors import Interrupted, NoSpace, TrainingDiverged, UsageError
from protobench.events import FAILED, INTERRUPTED
from protobench.training.checkpoints import full_disk_stop
from protobench.training.context import RunContext


@contextmanager
def outcome_recorded(ctx: RunContext, images_seen: Callable[[], int]) -> Iterator[None]:
    """Record the exception that ends the block as the run's `failed` or `interrupted` event, and re-raise it
    (a bare Ctrl-C becomes Interrupted at `images_seen()`, a full disk NoSpace); the loggers close either way."""
    try:
        yield
    except TrainingDiverged as exc:
        ctx.event(FAILED, error=str(exc), step=exc.step)
        raise
    except Interrupted as exc:
        ctx.event(INTERRUPTED, images_seen=exc.images_seen, checkpoint=exc.checkpoint)
        raise
    except KeyboardInterrupt:
        seen = images_seen()
        ctx.event(INTERRUPTED, images_seen=seen, checkpoint=None)
        raise Interrupted(ctx.cfg.run_id(), seen, None) from None
    except UsageError as exc:
        ctx.event(FAILED, error=str(exc))
        raise
    except Exception as exc:
        full = no_space_in(exc)
        if full is not None:  # a full disk or quota (under a library's error too) stops it like Ctrl-C: resumable
            raise no_space(ctx, full) from None
        ctx.event(FAILED, error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc())
        raise
    finally:
        if ctx.loggers is not None:
            ctx.loggers.close()
            ctx.loggers = None


def no_space(ctx: RunContext, exc: BaseException) -> NoSpace:
    """The interruption a full disk makes (what it kept), recorded if there is room."""
    stop = full_disk_stop(ctx.cfg.run_id(), ctx.dir, exc)
    try:
        ctx.event(INTERRUPTED, images_seen=stop.images_seen, checkpoint=stop.checkpoint, reason=stop.reason)
    except OSError:  # no room for the event either: the next start finds the same checkpoint
        pass
    return stop
