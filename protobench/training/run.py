"""One run, orchestrated: its folder and lock, its config and provenance, the parts built, Stage I, training,
and the final record. A run is a pure function of its config, and resumes from its last checkpoint."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from protobench.config import RunConfig
from protobench.device import device_info
from protobench.errors import UsageError
from protobench.events import END, FAILED, RESUME, START
from protobench.ledger import Ledger
from protobench.locks import RunLock, RunLocked
from protobench.loggers import RunLoggers
from protobench.plugins import Registry
from protobench.training.checkpoints import load_latest
from protobench.training.context import RunContext
from protobench.training.evaluation import Evaluator
from protobench.training.loop import train
from protobench.training.objective import DiffusionModel
from protobench.training.outcome import outcome_recorded
from protobench.training.parts import Data, Parts, build_parts, load_data
from protobench.training.prepare import prepare_conditioner
from protobench.training.provenance import write_config
from protobench.training.state import TrainState


def train_state(ctx: RunContext, parts: Parts, ledger: Ledger, checkpoint: dict[str, Any] | None) -> TrainState:
    """The state a run trains: restored from `checkpoint`, or fresh (its `start` event, then the conditioner's
    prepare step, Stage I, booked on `ledger`)."""
    model = DiffusionModel(parts.conditioner, parts.denoiser, parts.schedule).to(ctx.device)
    prepare_work = {"images": 0.0, "flops": 0.0}
    if checkpoint is None:
        ctx.event(START, device=device_info(ctx.device, ctx.dist.world))
        prepare_conditioner(ctx, model, parts, ledger, prepare_work)
    return TrainState(ctx.cfg, ctx, parts, model, ledger, prepare_work, checkpoint)


class Run:
    """`Run(cfg, registry, out).execute()`: one run to its record (completed, or resumed to completion); a
    failure or an interruption is recorded in its events and raised."""

    def __init__(self, cfg: RunConfig, registry: Registry, out: Path, show_progress: bool = True,
                 progress: Callable[[int, int, float], None] | None = None):
        self.cfg = cfg
        self.ctx = RunContext(cfg, registry, out, show_progress, progress)
        self.state: TrainState | None = None

    @property
    def dir(self) -> Path:
        """The run's folder, `<out>/runs/<run_id>/`."""
        return self.ctx.dir

    def execute(self) -> dict[str, Any]:
        ctx = self.ctx
        prior = ctx.folder.completed(strict=True)
        if prior is not None:
            if ctx.dist.main and not ctx.folder.record_path.exists():
                ctx.folder.write_record(prior)
            return prior
        # the same seed on every rank, so that every process builds the same initial weights
        torch.manual_seed(self.cfg.seed * 1000)  # dropout etc.; data randomness uses its own generator
        data: Data | None = None
        try:  # before the run folder exists: an option or --data-root refused writes nothing
            data = load_data(self.cfg, ctx.registry)
            parts = build_parts(self.cfg, ctx.registry, data, ctx.out, ctx.device)
            evaluator = Evaluator(ctx, parts)
        except UsageError:
            raise
        except Exception as exc:  # a plugin that cannot be built: recorded as a failed run, so a sweep shows it
            ctx.dir.mkdir(parents=True, exist_ok=True)
            write_config(ctx, data, {})
            ctx.event(FAILED, error=f"{type(exc).__name__}: {exc}")
            raise
        ctx.dir.mkdir(parents=True, exist_ok=True)
        lock = RunLock(ctx.dir)
        if ctx.dist.main and not lock.acquire():  # one process per run: a second sweep skips it
            raise RunLocked(f"run {ctx.dir.name} is being run by {lock.describe_holder()}")
        try:
            # completed by another process while this one waited for the lock?
            return ctx.folder.completed(strict=True) or self._record_outcome(parts, evaluator)
        finally:
            if ctx.dist.main:
                lock.release()

    def _record_outcome(self, parts: Parts, evaluator: Evaluator) -> dict[str, Any]:
        """Train, and record how it ended: completed, failed, or interrupted (resumable)."""
        ctx = self.ctx
        if ctx.dist.main:
            evaluator.prepare_instruments()
        ledger = Ledger(devices=ctx.dist.world)
        write_config(ctx, parts.data, evaluator.instruments)
        if ctx.dist.main and self.cfg.loggers:
            ctx.loggers = RunLoggers(self.cfg, ctx.registry, ctx.dir)
        with outcome_recorded(ctx, lambda: self.state.images_seen if self.state is not None else 0):
            return self._train(parts, evaluator, ledger)

    def _train(self, parts: Parts, evaluator: Evaluator, ledger: Ledger) -> dict[str, Any]:
        ctx, cfg = self.ctx, self.cfg
        checkpoint = load_latest(ctx.dir / "checkpoints")
        self.state = state = train_state(ctx, parts, ledger, checkpoint)
        if checkpoint is not None:
            ctx.event(RESUME, images_seen=state.images_seen, step=state.step, checkpoint=checkpoint.get("file"))
            ctx.say(f"resuming {cfg.run_id()} from its checkpoint at {state.images_seen:,} of {cfg.budget:,} images "
                    f"(step {state.step})")
        else:
            steps = -(-cfg.budget // cfg.batch_size)
            rounded = "" if steps * cfg.batch_size == cfg.budget else \
                f" (the budget of {cfg.budget:,} rounded up to whole batches)"
            where = f"{torch.get_num_threads()} CPU thread(s)" if ctx.device.type == "cpu" else str(ctx.device)
            ctx.say(f"run {cfg.run_id()}: {steps:,} steps of {cfg.batch_size} = {steps * cfg.batch_size:,} images"
                    f"{rounded}, evaluated every {cfg.eval_every:,} with {cfg.eval_samples} samples; {where}")
        train(ctx, parts, state, evaluator)
        return self._finish(state)

    def _finish(self, state: TrainState) -> dict[str, Any]:
        """The `end` event, and the record every rank returns once rank 0 has completed it."""
        ctx = self.ctx
        extra = {"param_digests": state.param_digests()} if ctx.dist.world > 1 else {}
        ctx.event(END, status="completed", images_seen=state.images_seen, device_seconds=state.ledger.snapshot(),
                  **extra)
        if ctx.dist.world > 1:
            import torch.distributed as tdist

            tdist.barrier()
        record = ctx.folder.record()
        if ctx.dist.main:
            ctx.folder.write_record(record)
        return record
