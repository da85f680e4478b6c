"""One run, orchestrated: its folder and lock, its config and provenance, the parts built, Stage I, training,
and the final record. A run is a pure function of its config, and resumes from its last checkpoint."""

from __future__ import annotations

import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from protobench.config import RunConfig
from protobench.device import device_info
from protobench.diskspace import is_no_space, no_space_reason
from protobench.errors import Interrupted, NoSpace, TrainingDiverged, UsageError
from protobench.io import atomic_write_json
from protobench.ledger import Ledger
from protobench.locks import RunLock, RunLocked
from protobench.loggers import RunLoggers
from protobench.plugins import Registry
from protobench.records import load_record
from protobench.training.checkpoints import load_latest
from protobench.training.context import RunContext
from protobench.training.evaluation import Evaluator
from protobench.training.loop import train
from protobench.training.objective import DiffusionModel
from protobench.training.parts import Data, Parts, build_parts, load_data, prepare_context
from protobench.training.state import TrainState
from protobench.vocabulary import AXES


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
        prior = self._completed()
        if prior is not None:
            if ctx.dist.main and not (ctx.dir / "record.json").exists():
                atomic_write_json(ctx.dir / "record.json", prior, within=ctx.dir)
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
            self._write_config(data, {})
            ctx.event("failed", error=f"{type(exc).__name__}: {exc}")
            raise
        ctx.dir.mkdir(parents=True, exist_ok=True)
        lock = RunLock(ctx.dir)
        if ctx.dist.main and not lock.acquire():  # one process per run: a second sweep skips it
            raise RunLocked(f"run {ctx.dir.name} is being run by {lock.describe_holder()}")
        try:
            return self._completed() or self._record_outcome(parts, evaluator)
        finally:
            if ctx.dist.main:
                lock.release()

    def _completed(self) -> dict[str, Any] | None:
        """The record of this run if it completed (perhaps by another process while this one waited)."""
        folder = self.ctx.folder
        if folder.started() and (prior := folder.record())["status"] == "completed":
            return prior
        return None

    def _record_outcome(self, parts: Parts, evaluator: Evaluator) -> dict[str, Any]:
        """Train, and record how it ended: completed, failed, or interrupted (resumable)."""
        ctx = self.ctx
        if ctx.dist.main:
            evaluator.prepare_instruments()
        ledger = Ledger(devices=ctx.dist.world)
        self._write_config(parts.data, evaluator.instruments)
        if ctx.dist.main and self.cfg.loggers:
            ctx.loggers = RunLoggers(self.cfg, ctx.registry, ctx.dir)
        try:
            return self._train(parts, evaluator, ledger)
        except TrainingDiverged as exc:
            ctx.event("failed", error=str(exc), step=exc.step)
            raise
        except Interrupted as exc:
            ctx.event("interrupted", images_seen=exc.images_seen, checkpoint=exc.checkpoint)
            raise
        except OSError as exc:  # a full disk or quota stops the run like Ctrl-C: resumable, not failed
            if not is_no_space(exc):
                ctx.event("failed", error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc())
                raise
            raise self._no_space(exc) from None
        except KeyboardInterrupt:
            images_seen = self.state.images_seen if self.state is not None else 0
            ctx.event("interrupted", images_seen=images_seen, checkpoint=None)
            raise Interrupted(self.cfg.run_id(), images_seen, None) from None
        except UsageError as exc:
            ctx.event("failed", error=str(exc))
            raise
        except Exception as exc:
            ctx.event("failed", error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc())
            raise
        finally:
            if ctx.loggers is not None:
                ctx.loggers.close()
                ctx.loggers = None

    def _train(self, parts: Parts, evaluator: Evaluator, ledger: Ledger) -> dict[str, Any]:
        ctx, cfg = self.ctx, self.cfg
        model = DiffusionModel(parts.conditioner, parts.denoiser, parts.schedule).to(ctx.device)
        checkpoint = load_latest(ctx.dir / "checkpoints")
        prepare_work = {"images": 0.0, "flops": 0.0}
        if checkpoint is None:
            ctx.event("start", device=device_info(ctx.device, ctx.dist.world))
            self._prepare_conditioner(model, parts, ledger, prepare_work)
        self.state = state = TrainState(cfg, ctx, parts, model, ledger, prepare_work, checkpoint)
        if checkpoint is not None:
            ctx.event("resume", images_seen=state.images_seen, step=state.step, checkpoint=checkpoint.get("file"))
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

    def _prepare_conditioner(self, model: DiffusionModel, parts: Parts, ledger: Ledger,
                             prepare_work: dict[str, float]) -> None:
        """Stage I (or whatever a conditioner prepares before training); one without a prepare step is charged 0."""
        ctx = self.ctx
        pctx = prepare_context(parts, ctx.show_progress and ctx.dist.main)
        if model.conditioner.prepares:
            ctx.event("stage", name=model.conditioner.prepare_stage)
            ctx.say(f"{self.cfg.conditioner}: prepare (e.g. Stage I) ...")
            with ledger.phase("prepare", ctx.sync):
                model.conditioner.prepare(pctx)
        ctx.charge_prepare(ledger, prepare_work, pctx)
        model.to(ctx.device)
        ctx.event("prepare", component="conditioner", device_seconds=ledger.device_seconds["prepare"],
                  results=pctx.results, work=dict(prepare_work))

    def _finish(self, state: TrainState) -> dict[str, Any]:
        """The `end` event, and the record every rank returns once rank 0 has completed it."""
        ctx = self.ctx
        extra = {"param_digests": state.param_digests()} if ctx.dist.world > 1 else {}
        ctx.event("end", status="completed", images_seen=state.images_seen, device_seconds=state.ledger.snapshot(),
                  **extra)
        if ctx.dist.world > 1:
            import torch.distributed as tdist

            tdist.barrier()
        record = load_record(ctx.dir)
        if ctx.dist.main:
            atomic_write_json(ctx.dir / "record.json", record, within=ctx.dir)
        return record

    def _no_space(self, exc: OSError) -> NoSpace:
        """The interruption a full disk makes: what it kept (the last good checkpoint), recorded if there is room."""
        path, reason = no_space_reason(exc, self.ctx.dir)
        latest = load_latest(self.ctx.dir / "checkpoints", quiet=True) or {}
        stop = NoSpace(self.cfg.run_id(), int(latest.get("images_seen", 0)), latest.get("file"), path, reason)
        try:
            self.ctx.event("interrupted", images_seen=stop.images_seen, checkpoint=stop.checkpoint, reason=reason)
        except OSError:  # no room for the event either: the next start finds the same checkpoint
            pass
        return stop

    def _write_config(self, data: Data | None, instruments: dict[str, str]) -> None:
        """config.json: the resolved config, its hash, the plugins' versions, the data and the machine."""
        ctx, cfg = self.ctx, self.cfg
        if not ctx.dist.main:
            return
        from protobench import __version__

        atomic_write_json(ctx.folder.config_path, {
            "run_id": cfg.run_id(), "config": cfg.to_dict(), "config_hash": cfg.hash(),
            "combination": cfg.combination(), "plugins": self._plugin_versions(),
            "dataset_checksum": data.checksum if data else None, "protobench_version": __version__,
            "device": device_info(ctx.device, ctx.dist.world), "instruments": instruments,
            "target": data.dataset.target if data else None,  # a preset's declared target, for the report
        }, within=ctx.dir)

    def _plugin_versions(self) -> dict[str, dict[str, str]]:
        cfg = self.cfg
        chosen = [(axis, getattr(cfg, axis)) for axis in AXES] + [("metric", m) for m in cfg.metrics]
        out: dict[str, dict[str, str]] = {}
        for kind, name in chosen:
            entry = self.ctx.registry.get(kind, name)
            out[f"{kind}:{name}"] = {"plugin": entry.plugin, "version": entry.version}
        return out
