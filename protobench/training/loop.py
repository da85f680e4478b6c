"""The training loop: steps to the budget, an evaluation every `eval_every` images, checkpoints, and stopping
cleanly (Ctrl-C, SIGTERM, Slurm's SIGUSR2, `--stop-after`) with a checkpoint a rerun resumes from."""

from __future__ import annotations

import contextlib
import math
import os
import signal
import sys
import threading
import time
from typing import Any

import torch
from torch import Tensor

from protobench.config import lr_at
from protobench.errors import Interrupted, TrainingDiverged
from protobench.progress import stage
from protobench.training import compiled
from protobench.training.batches import Batches
from protobench.training.checkpoints import save_state
from protobench.training.compiled import CompileClock
from protobench.training.context import RunContext
from protobench.training.evaluation import Evaluator
from protobench.training.parts import Parts
from protobench.training.state import TrainState

#: training seconds between checkpoints (besides one at every evaluation); $PROTOBENCH_CHECKPOINT_SECONDS
CHECKPOINT_SECONDS = 120.0

#: signals that stop a run cleanly: Ctrl-C, SIGTERM (kill, a scheduler's preemption) and SIGUSR2 (what submitit asks
#: Slurm to send before a job's time limit, `--signal=USR2@90`)
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGUSR2") if hasattr(signal, name))


class StopRequest:
    """Ctrl-C (or SIGTERM, SIGUSR2) during training: finish the step (or the evaluation), checkpoint, then stop.

    A second Ctrl-C stops at once (the last checkpoint is kept). Only the main thread can take signals."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def _handle(self, signum, frame) -> None:
        if self.requested:
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            return  # a scheduler repeating its signal must not cut the checkpoint being written
        self.requested = True
        print(f"stopping ({signal.Signals(signum).name}): saving a checkpoint after this step "
              "(Ctrl-C again to stop at once)", file=sys.stderr, flush=True)

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous.clear()


def compile_step(ctx: RunContext, state: TrainState) -> CompileClock | None:
    """The compiled step (`-o compile`), or None for the eager one; DeepSpeed's engine stays eager."""
    if not compiled.enabled(ctx.cfg.compile, ctx.device):
        return None
    if state.engine is not None:
        ctx.say("compile: a DeepSpeed run stays eager")
        return None
    ctx.event("stage", name=f"compile ({compiled.mode_for(ctx.device)})")
    return compiled.compile_model(state.model, ctx.device, state.ema.model)


def train(ctx: RunContext, parts: Parts, state: TrainState, evaluator: Evaluator) -> None:
    """Train `state` to the budget (compiled with `-o compile`). Raises Interrupted after the checkpoint a
    stop asked for."""
    cfg = ctx.cfg
    clock = compile_step(ctx, state)  # after the state counted its FLOPs: they are counted on the eager graph
    batches = Batches(cfg, parts.data.train_split, ctx.dist, state.train_gen)
    #: stop this invocation (checkpoint, "interrupted", resumable) once this many images are seen: --stop-after
    stop_after = int(os.environ.get("PROTOBENCH_STOP_AFTER") or 0) or math.inf
    #: seconds of training between checkpoints besides those at evaluations: an interruption loses less
    checkpoint_seconds = float(os.environ.get("PROTOBENCH_CHECKPOINT_SECONDS", CHECKPOINT_SECONDS))
    stop = StopRequest()

    def stop_here() -> bool:
        """Ctrl-C asked to stop, or this invocation reached its --stop-after images."""
        return stop.requested or state.images_seen >= stop_after

    last_checkpoint = time.monotonic()
    with stage(f"{cfg.conditioner} s{cfg.seed} training", total=cfg.budget, unit="images",
               show=ctx.show_progress and ctx.dist.main, completed=state.images_seen) as bar, stop:
        while state.images_seen < cfg.budget:
            next_eval = (state.images_seen // cfg.eval_every + 1) * cfg.eval_every
            with state.ledger.phase("train", ctx.sync):
                while state.images_seen < min(next_eval, cfg.budget):
                    with clock.call() if clock else contextlib.nullcontext():
                        _loss, mse = train_step(ctx, state, batches(state.step))
                    bar.update(completed=state.images_seen, note=f"training, loss {mse:.4f}")
                    if ctx.progress is not None and ctx.dist.main:
                        ctx.progress(state.images_seen, cfg.budget, mse)
                    if state.step % cfg.log_every == 0 and ctx.agree(
                            stop_here() or time.monotonic() - last_checkpoint > checkpoint_seconds):
                        break  # checkpoint now (by time, or asked to stop)
            compiled.move_to_compile(state.ledger, clock, "train")
            if state.images_seen >= min(next_eval, cfg.budget):
                bar.update(note=f"evaluating: sampling {evaluator.sample_count(state.images_seen)} images")
                evaluator.evaluate(state)
            name = save_state(ctx, state)
            last_checkpoint = time.monotonic()
            if ctx.agree(stop_here()):
                raise Interrupted(cfg.run_id(), state.images_seen, name)


def train_step(ctx: RunContext, state: TrainState, batch: tuple[Tensor, ...]) -> tuple[float, float]:
    """One optimizer step on this rank's slice of the global batch; (loss, mse) as last read from the device."""
    cfg = state.cfg
    x0, labels, t, noise = (v.to(ctx.device, non_blocking=True) for v in batch)
    x0 = x0.float().mul_(1 / 127.5).sub_(1.0)  # uint8 travels (4x fewer bytes), converted in place there
    state.model.train()
    if cfg.lr_schedule != "constant":
        for group in state.optimizer.param_groups:
            group["lr"] = lr_at(cfg, state.step)
    if state.engine is not None:
        with state.precision.autocast():
            total, mse = state.engine(x0, labels, t, noise)
        state.engine.backward(total)
        state.engine.step()
    else:
        with state.precision.autocast():
            total, mse = state.model(x0, labels, t, noise)
        state.optimizer.zero_grad(set_to_none=True)
        state.precision.backward(total)
        state.precision.step(state.optimizer, state.model.parameters(), max_norm=cfg.grad_clip)
    state.step += 1
    state.images_seen += cfg.batch_size
    logged = state.step % cfg.log_every == 0 or state.step == 1
    # on one GPU the values stay on the device between logged steps (no host synchronisation per step)
    if logged or not (ctx.device.type == "cuda" and ctx.dist.world == 1):
        state.last_loss = _global_loss(ctx, state.step, total, mse)
    state.ema.update(state.model)
    if logged:
        ctx.event("loss", step=state.step, images_seen=state.images_seen, loss=state.last_loss[0],
                  mse=state.last_loss[1])
    return state.last_loss


def _global_loss(ctx: RunContext, step: int, total: Tensor, mse: Tensor) -> tuple[float, float]:
    """The step's (loss, mse) averaged over ranks, so every rank (and the log) sees the global loss."""
    value, mse_value = float(total.detach()), float(mse.detach())
    if ctx.dist.world > 1:
        import torch.distributed as tdist

        both = torch.tensor([value, mse_value], device=ctx.device if ctx.device.type == "cuda" else "cpu")
        tdist.all_reduce(both)
        value, mse_value = (both / ctx.dist.world).tolist()
    if not math.isfinite(value):
        raise TrainingDiverged(step, value)
    return value, mse_value
