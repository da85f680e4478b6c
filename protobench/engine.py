"""The training loop: one process with plain torch, or N data-parallel processes under DeepSpeed.

A run is a pure function of its config: batches, timesteps, noise and label dropout are drawn for the
whole global batch from one seeded generator, and each process takes its slice, so N processes see
exactly what one process would. Checkpoints hold the generator states, so a resumed run continues
to the result it would have reached unstopped.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from protobench import compiled
from protobench.checkpoints import (
    flatten_optimizer,
    load_latest,
    prefixed,
    save_checkpoint,
    strip,
    unflatten_optimizer,
)
from protobench.compiled import CompileClock
from protobench.config import RunConfig, lr_at
from protobench.data_parallel import initialize_engine
from protobench.device import device_info, pick_device
from protobench.diffusion import NoiseSchedule
from protobench.diskspace import is_no_space, no_space_reason
from protobench.errors import Interrupted, NoSpace, TrainingDiverged, UsageError
from protobench.events import append_event
from protobench.generation import generate, save_grid
from protobench.interfaces import (
    NULL_LABEL,
    ConditionedNet,
    Conditioner,
    LossContext,
    PrepareContext,
    Reference,
)
from protobench.io import atomic_write_json, copy_file
from protobench.ledger import Ledger
from protobench.locks import RunLock, RunLocked
from protobench.loggers import RunLoggers
from protobench.parts import build_parts, inception_weights, prepare_context
from protobench.paths import cache_dir
from protobench.plugins import Registry
from protobench.precision import Precision
from protobench.progress import stage
from protobench.rank import current_dist
from protobench.records import load_record
from protobench.runfolder import run_path
from protobench.vocabulary import AXES

# ---------------------------------------------------------------------------------------------
# the model being trained


class DiffusionModel(nn.Module):
    """Conditioner + denoiser; forward returns the training loss (what DeepSpeed wraps)."""

    def __init__(self, conditioner: nn.Module, denoiser: nn.Module, schedule: NoiseSchedule):
        super().__init__()
        self.conditioner = conditioner
        self.denoiser = denoiser
        self.schedule = schedule

    def forward(self, x0: Tensor, labels: Tensor, t: Tensor, noise: Tensor) -> tuple[Tensor, Tensor]:
        x_t = self.schedule.q_sample(x0, t, noise)
        eps_pred = self.denoiser(x_t, t, self.conditioner(labels))
        mse = F.mse_loss(eps_pred.float(), noise.float())  # ε-prediction objective (eq. 5, Ho et al. 2020)
        loss = mse
        x0_pred = self.schedule.x0_from_eps(x_t, t, eps_pred)
        extra = self.conditioner.extra_loss(LossContext(x0, x_t, t, labels, noise, eps_pred, x0_pred))
        if extra is not None:
            loss = loss + extra
        return loss, mse


class EMA:
    """Exponential moving average of the trained weights, used for evaluation."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        # warm-up so that short runs are not dominated by the initial weights
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        ema_params = list(self.model.parameters())
        params = [p.detach().to(e.dtype) for e, p in zip(ema_params, model.parameters(), strict=True)]
        torch._foreach_lerp_(ema_params, params, 1 - decay)  # one multi-tensor update
        ema_buffers = list(self.model.buffers())
        if ema_buffers:
            torch._foreach_copy_(ema_buffers, [b.detach() for b in model.buffers()])


# ---------------------------------------------------------------------------------------------
# the run


class Run:
    def __init__(self, cfg: RunConfig, registry: Registry, out: Path, show_progress: bool = True,
                 progress: Callable[[int, int, float], None] | None = None):
        self.cfg = cfg
        #: called on the main process after each step with (images_seen, budget, mse): how a sweep shows progress
        self.progress_callback = progress
        self.registry = registry
        self.out = Path(out)
        self.dir = run_path(self.out, cfg.run_id())  # a name, never a path (a tampered config.json)
        self.show_progress = show_progress
        self.dist = current_dist()
        self.device = pick_device(self.dist)
        self._epoch_perm: tuple[int | None, Tensor | None] = (None, None)  # the data order of the current epoch
        #: seconds of training between checkpoints besides those at evaluations: an interruption loses less
        self.checkpoint_seconds = float(os.environ.get("PROTOBENCH_CHECKPOINT_SECONDS", CHECKPOINT_SECONDS))
        #: work in machine-independent units done before training (Stage I, guidance fitting)
        self.prepare_work = {"images": 0.0, "flops": 0.0}
        self.flops_per_image = 0.0
        self._stop = StopRequest()
        #: stop this invocation (checkpoint, "interrupted", resumable) once this many images are seen: --stop-after
        self.stop_after = int(os.environ.get("PROTOBENCH_STOP_AFTER") or 0) or math.inf
        self._last_loss = (math.nan, math.nan)  # (loss, mse) last read from the device
        self.loggers: RunLoggers | None = None  # live loggers (main process), fed every event

    def say(self, text: str) -> None:
        """One line for the person at the terminal (stderr; the main process only)."""
        if self.dist.main and self.show_progress:
            print(text, file=sys.stderr, flush=True)

    # -- bookkeeping ------------------------------------------------------------------------
    @property
    def events_path(self) -> Path:
        return self.dir / "events.jsonl"

    def event(self, kind: str, **fields: Any) -> None:
        if self.dist.main:
            record = {"event": kind, "time": time.time(), **fields}
            append_event(self.events_path, record)
            if self.loggers is not None:
                self.loggers.log(record)

    def plugin_versions(self) -> dict[str, dict[str, str]]:
        cfg = self.cfg
        chosen = [(axis, getattr(cfg, axis)) for axis in AXES] + [("metric", m) for m in cfg.metrics]
        out: dict[str, dict[str, str]] = {}
        for kind, name in chosen:
            entry = self.registry.get(kind, name)
            out[f"{kind}:{name}"] = {"plugin": entry.plugin, "version": entry.version}
        return out

    # -- building ---------------------------------------------------------------------------
    def build(self) -> None:
        build_parts(self.cfg, self.registry, self)
        classes = self.dataset.num_classes
        for metric in self.metrics:  # refused now, not after training
            need = metric.min_samples_per_class * classes
            if self.cfg.eval_samples < need:
                raise UsageError(f"metric {metric.name} needs at least {metric.min_samples_per_class} samples per "
                                 f"class: eval_samples >= {need} for {self.cfg.dataset}'s {classes} classes "
                                 f"(got {self.cfg.eval_samples})")
        # a per-class covariance from fewer samples than feature dimensions is rank-deficient (and biased):
        # final_eval_samples=0 draws what the metrics need; fewer, asked for explicitly, is refused unless allowed
        need = max([metric.per_class_dimension(self.reference()) for metric in self.metrics] or [0])
        self.final_samples = self.cfg.final_eval_samples or max(self.cfg.eval_samples, need * classes)
        if self.final_samples // classes < need and not self.cfg.few_final_samples:
            raise UsageError(f"final_eval_samples {self.final_samples} is {self.final_samples // classes} samples per "
                             f"class, fewer than the evaluator's {need} feature dimensions that per-class metrics "
                             f"need: final_eval_samples >= {need * classes}, or -o few_final_samples=true")

    def reference(self) -> Reference:
        return Reference(self.dataset, cache_dir(self.out), self.device, seed=0, show_progress=False,
                         inception_weights=inception_weights(self.cfg))

    def prepare_instruments(self) -> None:
        """The measuring instruments (evaluator, real statistics): cached, not charged, and drawing no random
        numbers from the training stream, so a cold cache and a warm one give the same run."""
        self.instruments = {}
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            for metric in self.metrics:
                metric.prepare(self.reference())
                self.instruments.update(metric.instruments(self.reference()))

    def prepare_context(self, **extra: Any) -> PrepareContext:
        return prepare_context(self, self.show_progress and self.dist.main, **extra)

    # -- main entry -------------------------------------------------------------------------
    def execute(self) -> dict[str, Any]:
        cfg = self.cfg
        existing = self.dir / "config.json"
        if existing.exists():
            prior = load_record(self.dir)
            if prior["status"] == "completed":
                if self.dist.main and not (self.dir / "record.json").exists():
                    atomic_write_json(self.dir / "record.json", prior, within=self.dir)
                return prior
        # the same seed on every rank, so that every process builds the same initial weights
        torch.manual_seed(cfg.seed * 1000)  # dropout etc.; data randomness uses its own generator
        try:
            self.build()  # before the run folder exists: an option or --data-root refused writes nothing
        except UsageError:
            raise
        except Exception as exc:  # a plugin that cannot be built: recorded as a failed run, so a sweep shows it
            self.dir.mkdir(parents=True, exist_ok=True)
            self.checksum = getattr(self, "checksum", None)
            self._write_config()
            self.event("failed", error=f"{type(exc).__name__}: {exc}")
            raise
        self.dir.mkdir(parents=True, exist_ok=True)
        lock = RunLock(self.dir)
        if self.dist.main and not lock.acquire():  # one process per run: a second sweep skips it
            raise RunLocked(f"run {self.dir.name} is being run by {lock.describe_holder()}")
        try:
            return self._execute_locked()
        finally:
            if self.dist.main:
                lock.release()

    def _execute_locked(self) -> dict[str, Any]:
        if (self.dir / "config.json").exists():  # finished by another process while this one waited
            prior = load_record(self.dir)
            if prior["status"] == "completed":
                return prior
        self.instruments: dict[str, str] = {}
        if self.dist.main:
            self.prepare_instruments()
        self.ledger = Ledger(devices=self.dist.world)
        self._write_config()
        if self.dist.main and self.cfg.loggers:
            self.loggers = RunLoggers(self.cfg, self.registry, self.dir)
        try:
            return self._execute()
        except TrainingDiverged as exc:
            self.event("failed", error=str(exc), step=exc.step)
            raise
        except Interrupted as exc:
            self.event("interrupted", images_seen=exc.images_seen, checkpoint=exc.checkpoint)
            raise
        except OSError as exc:  # a full disk or quota stops the run like Ctrl-C: resumable, not failed
            if not is_no_space(exc):
                self.event("failed", error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc())
                raise
            raise self._no_space(exc) from None
        except KeyboardInterrupt:
            self.event("interrupted", images_seen=getattr(self, "images_seen", 0), checkpoint=None)
            raise Interrupted(self.cfg.run_id(), getattr(self, "images_seen", 0), None) from None
        except UsageError as exc:
            self.event("failed", error=str(exc))
            raise
        except Exception as exc:
            self.event("failed", error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc())
            raise
        finally:
            if self.loggers is not None:
                self.loggers.close()
                self.loggers = None

    def _no_space(self, exc: OSError) -> NoSpace:
        """The interruption a full disk makes: what it kept (the last good checkpoint), recorded if there is room."""
        path, reason = no_space_reason(exc, self.dir)
        latest = load_latest(self.dir / "checkpoints", quiet=True) or {}
        stop = NoSpace(self.cfg.run_id(), int(latest.get("images_seen", 0)), latest.get("file"), path, reason)
        try:
            self.event("interrupted", images_seen=stop.images_seen, checkpoint=stop.checkpoint, reason=reason)
        except OSError:  # no room for the event either: the next start finds the same checkpoint
            pass
        return stop

    def _write_config(self) -> None:
        if not self.dist.main:
            return
        cfg = self.cfg
        atomic_write_json(self.dir / "config.json", {
            "run_id": cfg.run_id(), "config": cfg.to_dict(), "config_hash": cfg.hash(),
            "combination": cfg.combination(), "plugins": self.plugin_versions(),
            "dataset_checksum": self.checksum, "protobench_version": _version(),
            "device": device_info(self.device, self.dist.world), "instruments": getattr(self, "instruments", {}),
            "target": getattr(self.dataset, "target", None),  # the preset's declared target, for the report
        }, within=self.dir)

    def _execute(self) -> dict[str, Any]:
        cfg = self.cfg
        model = DiffusionModel(self.conditioner, self.denoiser, self.schedule).to(self.device)
        self.model = model
        state = self._latest_state()
        if state is None:
            self.event("start", device=device_info(self.device, self.dist.world))
            pctx = self.prepare_context()
            if type(model.conditioner).prepare is not Conditioner.prepare:  # a conditioner without one is charged 0
                self.event("stage", name=model.conditioner.prepare_stage)
                self.say(f"{self.cfg.conditioner}: prepare (e.g. Stage I) ...")
                with self.ledger.phase("prepare", self._sync):
                    model.conditioner.prepare(pctx)
            self.ledger.add("prepare", pctx.cached_device_seconds)
            self._add_prepare_work(pctx)
            model.to(self.device)
            self.event("prepare", component="conditioner", device_seconds=self.ledger.device_seconds["prepare"],
                       results=pctx.results, work=dict(self.prepare_work))
        trainable = [p for p in model.parameters() if p.requires_grad]
        # the fused kernel: one call per step instead of ~12 per parameter tensor (the per-step fixed cost)
        fused = all(p.device.type in ("cpu", "cuda") for p in trainable) or None
        optimizer = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused)
        self.optimizer = optimizer
        self.precision = Precision(cfg.precision, self.device)
        self.engine = None
        if self.dist.world > 1 or cfg.zero_stage > 0:  # ZeRO asked for on one process too: DeepSpeed's engine
            # DeepSpeed broadcasts rank 0's weights; the EMA is taken after, so it starts equal on every rank
            self.engine = initialize_engine(model, optimizer, cfg, self.dist)
            torch.manual_seed(cfg.seed * 1000 + self.dist.rank)  # dropout differs per rank, as its slice does
        self.ema = EMA(model, cfg.ema_decay)
        self.train_gen = torch.Generator().manual_seed(cfg.seed)
        self.images_seen = 0
        self.step = 0
        self.evals: list[dict[str, Any]] = []
        if state is not None:
            self._restore(state)
            self.event("resume", images_seen=self.images_seen, step=self.step, checkpoint=state.get("file"))
            self.say(f"resuming {cfg.run_id()} from its checkpoint at {self.images_seen:,} of {cfg.budget:,} images "
                     f"(step {self.step})")
        else:
            steps = -(-cfg.budget // cfg.batch_size)
            rounded = "" if steps * cfg.batch_size == cfg.budget else \
                f" (the budget of {cfg.budget:,} rounded up to whole batches)"
            where = f"{torch.get_num_threads()} CPU thread(s)" if self.device.type == "cpu" else str(self.device)
            self.say(f"run {cfg.run_id()}: {steps:,} steps of {cfg.batch_size} = {steps * cfg.batch_size:,} images"
                     f"{rounded}, evaluated every {cfg.eval_every:,} with {cfg.eval_samples} samples; {where}")
        self.flops_per_image = self._count_flops_per_image()
        self.compile_clock = self._compile()  # after counting: FLOPs are counted on the eager graph
        return self._train_loop()

    def _compile(self) -> CompileClock | None:
        """The compiled step (`-o compile`), or None for the eager one; DeepSpeed's engine stays eager."""
        if not compiled.enabled(self.cfg.compile, self.device):
            return None
        if self.engine is not None:
            self.say("compile: a DeepSpeed run stays eager")
            return None
        self.event("stage", name=f"compile ({compiled.mode_for(self.device)})")
        return compiled.compile_model(self.model, self.device, self.ema.model)

    def _add_prepare_work(self, pctx: PrepareContext) -> None:
        self.prepare_work["images"] += pctx.work_images
        self.prepare_work["flops"] += pctx.work_flops

    def _count_flops_per_image(self) -> float:
        """Training FLOPs (forward + backward) per image, counted once on a small batch of this config."""
        from protobench.flops import count_flops

        n = 4
        gen = torch.Generator().manual_seed(0)
        shape = tuple(self.dataset.image_shape)
        x0 = torch.randn((n, *shape), generator=gen).to(self.device)
        labels = torch.arange(n).remainder(self.dataset.num_classes).to(self.device)
        t = torch.randint(0, self.cfg.timesteps, (n,), generator=gen).to(self.device)
        noise = torch.randn((n, *shape), generator=gen).to(self.device)
        model = self.engine.module if self.engine is not None else self.model
        was_training = model.training
        model.train()

        def fwd_bwd() -> None:
            loss, _ = model(x0, labels, t, noise)
            # gradients returned, not accumulated: ZeRO's reduce hooks on .grad must not see this backward
            torch.autograd.grad(loss, [p for p in model.parameters() if p.requires_grad], allow_unused=True)

        # its own RNG stream (dropout) and no gradients left behind: the run continues as if never counted
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            flops = count_flops(fwd_bwd)
        for p in model.parameters():
            p.grad = None
        model.train(was_training)
        return flops / n

    def work(self) -> dict[str, dict[str, float]]:
        """Machine-independent work so far: images through the networks and training FLOPs, prepare apart."""
        return {"images": {"prepare": self.prepare_work["images"], "train": float(self.images_seen)},
                "flops": {"prepare": self.prepare_work["flops"], "train": self.images_seen * self.flops_per_image}}

    # -- training ---------------------------------------------------------------------------
    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _batch(self, x_all: Tensor, y_all: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The global batch for this step (deterministic in the step number), sliced for this rank."""
        cfg, n = self.cfg, x_all.shape[0]
        bs = cfg.batch_size
        per_epoch = max(1, n // bs)
        epoch, pos = divmod(self.step, per_epoch)
        if self._epoch_perm[0] != epoch:  # one permutation per epoch, not per step
            self._epoch_perm = (epoch, torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)))
        perm = self._epoch_perm[1]
        idx = perm[pos * bs:(pos + 1) * bs]
        if idx.numel() < bs:  # a dataset smaller than one batch: sample with replacement
            idx = perm[torch.randint(n, (bs,), generator=self.train_gen)]
        t = torch.randint(0, cfg.timesteps, (bs,), generator=self.train_gen)
        if cfg.small_t_share > 0:  # the official trainloss: the batch's last tenth at t < 50
            k = int(bs * cfg.small_t_share)
            t[bs - k:] = torch.randint(0, cfg.small_t, (k,), generator=self.train_gen)
        noise = torch.randn((bs, *x_all.shape[1:]), generator=self.train_gen)
        drop = torch.rand(bs, generator=self.train_gen) < cfg.label_dropout
        labels = torch.where(drop, torch.full_like(y_all[idx], NULL_LABEL), y_all[idx])
        mine = slice(self.dist.rank, bs, self.dist.world)
        # images stay uint8 in memory and become [-1, 1] floats per batch (a float copy of a large split is 4x)
        return x_all[idx][mine], labels[mine], t[mine], noise[mine]

    def _stop_here(self) -> bool:
        """Ctrl-C asked to stop, or this invocation reached its --stop-after images."""
        return self._stop.requested or self.images_seen >= self.stop_after

    def _train_loop(self) -> dict[str, Any]:
        cfg = self.cfg
        x_all = self.train_split.images
        y_all = self.train_split.labels.long()
        autocast = self._autocast()
        label = f"{cfg.conditioner} s{cfg.seed}"
        display = stage(f"{label} training", total=cfg.budget, unit="images",
                        show=self.show_progress and self.dist.main, completed=self.images_seen)
        bar = display.__enter__()
        last_checkpoint = time.monotonic()
        try:
            with self._stop:
                while self.images_seen < cfg.budget:
                    next_eval = (self.images_seen // cfg.eval_every + 1) * cfg.eval_every
                    with self.ledger.phase("train", self._sync):
                        while self.images_seen < min(next_eval, cfg.budget):
                            with self.compile_clock.call() if self.compile_clock else contextlib.nullcontext():
                                loss, mse = self._train_step(x_all, y_all, autocast)
                            bar.update(completed=self.images_seen, note=f"training, loss {mse:.4f}")
                            if self.progress_callback is not None and self.dist.main:
                                self.progress_callback(self.images_seen, cfg.budget, mse)
                            if self.step % cfg.log_every == 0 and self._agree(
                                    self._stop_here() or time.monotonic() - last_checkpoint > self.checkpoint_seconds):
                                break  # checkpoint now (by time, or asked to stop)
                    compiled.move_to_compile(self.ledger, self.compile_clock, "train")
                    if self.images_seen >= min(next_eval, cfg.budget):
                        bar.update(note=f"evaluating: sampling {cfg.eval_samples} images")
                        self._evaluate()
                    name = self._checkpoint()
                    last_checkpoint = time.monotonic()
                    if self._agree(self._stop_here()):
                        raise Interrupted(cfg.run_id(), self.images_seen, name)
        finally:
            display.__exit__(None, None, None)
        extra = {"param_digests": self._param_digests()} if self.dist.world > 1 else {}
        self.event("end", status="completed", images_seen=self.images_seen, device_seconds=self.ledger.snapshot(),
                   **extra)
        if self.dist.world > 1:  # every rank returns the record rank 0 has just completed
            import torch.distributed as tdist

            tdist.barrier()
        record = load_record(self.dir)
        if self.dist.main:
            atomic_write_json(self.dir / "record.json", record, within=self.dir)
        return record

    def _agree(self, flag: bool) -> bool:
        """A decision every rank takes together (a checkpoint is a collective under ZeRO)."""
        if self.dist.world == 1:
            return flag
        import torch.distributed as tdist

        t = torch.tensor([1.0 if flag else 0.0], device=self.device if self.device.type == "cuda" else "cpu")
        tdist.all_reduce(t, op=tdist.ReduceOp.MAX)
        return bool(t.item())

    def _param_digests(self) -> list[str]:
        """A hash of the trained and EMA weights from every rank, in rank order: data parallel keeps them equal."""
        import hashlib

        import torch.distributed as tdist

        h = hashlib.sha256()
        for prefix, module in (("model", self.model), ("ema", self.ema.model)):
            for key, value in sorted(module.state_dict().items()):
                h.update(f"{prefix}.{key}".encode())
                h.update(value.detach().float().cpu().contiguous().numpy().tobytes())
        digests: list[Any] = [None] * self.dist.world
        tdist.all_gather_object(digests, h.hexdigest())
        return digests

    def _train_step(self, x_all: Tensor, y_all: Tensor, autocast) -> tuple[float, float]:
        cfg = self.cfg
        x0, labels, t, noise = self._batch(x_all, y_all)
        x0, labels, t, noise = (v.to(self.device, non_blocking=True) for v in (x0, labels, t, noise))
        x0 = x0.float().mul_(1 / 127.5).sub_(1.0)  # uint8 travels (4x fewer bytes), converted in place there
        self.model.train()
        if cfg.lr_schedule != "constant":
            for group in self.optimizer.param_groups:
                group["lr"] = lr_at(cfg, self.step)
        if self.engine is not None:
            with autocast:
                loss, mse = self.engine(x0, labels, t, noise)
            self.engine.backward(loss)
            self.engine.step()
        else:
            with self.precision.autocast():
                loss, mse = self.model(x0, labels, t, noise)
            self.optimizer.zero_grad(set_to_none=True)
            self.precision.backward(loss)
            self.precision.step(self.optimizer, self.model.parameters(), max_norm=cfg.grad_clip)
        self.step += 1
        self.images_seen += cfg.batch_size
        logged = self.step % cfg.log_every == 0 or self.step == 1
        # on one GPU the values stay on the device between logged steps (no host synchronisation per step)
        if logged or not (self.device.type == "cuda" and self.dist.world == 1):
            value, mse_value = float(loss.detach()), float(mse.detach())
            if self.dist.world > 1:  # mean over ranks so every rank (and the log) sees the global loss
                import torch.distributed as tdist

                both = torch.tensor([value, mse_value], device=self.device if self.device.type == "cuda" else "cpu")
                tdist.all_reduce(both)
                value, mse_value = (both / self.dist.world).tolist()
            if not math.isfinite(value):
                raise TrainingDiverged(self.step, value)
            self._last_loss = (value, mse_value)
        self.ema.update(self.model)
        if logged:
            self.event("loss", step=self.step, images_seen=self.images_seen, loss=self._last_loss[0],
                       mse=self._last_loss[1])
        return self._last_loss

    def _autocast(self):
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.cfg.precision)
        if dtype is None or self.device.type != "cuda":
            return torch.autocast(self.device.type, enabled=False)
        return torch.autocast("cuda", dtype=dtype)

    # -- evaluation -------------------------------------------------------------------------
    def _evaluate(self) -> None:
        cfg = self.cfg
        net = ConditionedNet(self.ema.model.conditioner, self.ema.model.denoiser, self.dataset.num_classes)
        if compiled.enabled(cfg.compile, self.device):  # one compiled sampler per run: later evaluations reuse it
            self._eval_net = getattr(self, "_eval_net", None) or compiled.CompiledNet(net, self.device)
            net = self._eval_net
        if self.guidance.prepares:
            pctx = self.prepare_context(net=net, schedule=self.schedule)
            with self.ledger.phase("prepare", self._sync):
                self.guidance.prepare(pctx)
            self.ledger.add("prepare", pctx.cached_device_seconds)
            self._add_prepare_work(pctx)
            self.event("prepare", component="guidance", images_seen=self.images_seen, results=pctx.results,
                       device_seconds=self.ledger.device_seconds["prepare"], work=dict(self.prepare_work))
        # the last evaluation may draw more samples (final_eval_samples): per-class metrics scored on all of them
        # go to `final`; `metrics` keep the first eval_samples, so the curve has one sample count throughout
        count = getattr(self, "final_samples", cfg.eval_samples) if self.images_seen >= cfg.budget else cfg.eval_samples
        self.event("stage", name=f"evaluating: sampling {count} images", images_seen=self.images_seen)
        rng = torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else [])
        final: dict[str, Any] = {}
        with rng, self.ledger.phase("eval", self._sync):
            samples, labels, acceptance = generate(net, self.guidance, self.sampler, self.schedule, count,
                                                   self.dataset.num_classes, tuple(self.dataset.image_shape),
                                                   seed=cfg.seed + 12345, device=self.device, dist=self.dist)
            metrics: dict[str, float] = {}
            metrics_se: dict[str, float] = {}
            unscored: dict[str, str] = {}
            if self.dist.main and len(samples):  # rejection may have dropped every sample: nothing to score
                ref = self.reference()
                n = cfg.eval_samples
                for metric in self.metrics:
                    try:
                        metrics.update(metric.compute(samples[:n], labels[:n], ref))
                        metrics_se.update(metric.standard_errors(samples[:n], labels[:n], ref))
                    except UsageError as exc:  # too few accepted samples (of some class) for this metric
                        if len(samples) == count:
                            raise
                        unscored[metric.name] = str(exc)
                if len(samples) > n:
                    final = {"samples": len(samples), "metrics": {}, "metrics_se": {}}
                    for metric in self.metrics:
                        if metric.name in unscored:
                            continue
                        try:
                            final["metrics"].update(metric.compute(samples, labels, ref))
                            final["metrics_se"].update(metric.standard_errors(samples, labels, ref))
                        except UsageError as exc:  # as above: too few accepted samples
                            if len(samples) == count:
                                raise
                            unscored[metric.name] = str(exc)
                grid = self.dir / "samples" / f"{self.images_seen:09d}.png"
                save_grid(samples, labels, self.dataset.num_classes, grid, class_names=self.dataset.class_names)
                copy_file(grid, self.dir / "samples.png", within=self.dir)
        compiled.move_to_compile(self.ledger, getattr(net, "clock", None), "eval")
        ev = {"images_seen": self.images_seen, "step": self.step, "device_seconds": self.ledger.snapshot(),
              "work": self.work(), "metrics": metrics, "metrics_se": metrics_se,
              "samples": min(cfg.eval_samples, len(samples)), "instruments": self.instruments,
              # rejection sampling: the share of draws accepted (None: nothing rejects) and the samples dropped
              "acceptance_rate": acceptance, "samples_dropped": count - len(samples),
              "metrics_unscored": unscored,
              "conditioner": self.model.conditioner.diagnostics(),
              "grid": f"samples/{self.images_seen:09d}.png",  # the grid saved above: what loggers show
              **({"final": final} if final else {})}
        self.evals.append(ev)
        self.event("eval", **ev)

    # -- checkpoints ------------------------------------------------------------------------
    def _deepspeed_owns_optimizer(self) -> bool:
        """ZeRO or mixed precision: DeepSpeed wraps (and may shard) the optimizer, so it saves its state itself."""
        return self.engine is not None and self.engine.optimizer is not self.optimizer

    def _checkpoint(self) -> str | None:
        """Save the training state (atomic, checksummed); the file's name on the main process."""
        ckpt_dir = self.dir / "checkpoints"
        opt_tensors: dict[str, Tensor] = {}
        opt_meta: dict[str, Any] = {}
        if self._deepspeed_owns_optimizer():
            # ZeRO shards or DeepSpeed's bf16/fp16 optimizer: gathered into whole fp32 tensors (a collective, every
            # rank), saved in the one safetensors file like any other state; nothing pickled
            from protobench.dist import consolidated_optimizer_state

            opt_tensors, opt_meta = consolidated_optimizer_state(self.engine)
        if not self.dist.main:
            return None
        model = self.engine.module if self.engine is not None else self.model
        tensors = {**prefixed("model", model.state_dict()), **prefixed("ema", self.ema.model.state_dict())}
        if not self._deepspeed_owns_optimizer():
            opt_tensors, opt_meta = flatten_optimizer(self.optimizer.state_dict())
        tensors.update(opt_tensors)
        tensors["rng.train"] = self.train_gen.get_state()
        tensors["rng.torch"] = torch.get_rng_state()
        name = save_checkpoint(ckpt_dir, self.step, tensors, {
            "images_seen": self.images_seen, "ledger": self.ledger.snapshot(), "ema_updates": self.ema.updates,
            "optimizer": opt_meta, "evals": self.evals, "prepare_work": self.prepare_work,
            "precision": self.precision.state_dict(),
        })
        self.event("checkpoint", file=name, step=self.step, images_seen=self.images_seen)
        return name

    def _latest_state(self) -> dict[str, Any] | None:
        return load_latest(self.dir / "checkpoints")

    def _restore(self, state: dict[str, Any]) -> None:
        tensors = state["tensors"]
        model = self.engine.module if self.engine is not None else self.model
        model.load_state_dict(strip("model", tensors))
        self.ema.model.load_state_dict(strip("ema", tensors))
        self.ema.updates = state["ema_updates"]
        if state["optimizer"].get("consolidated") == "deepspeed":
            if not self._deepspeed_owns_optimizer():
                raise UsageError("this checkpoint's optimizer state is DeepSpeed's (ZeRO or bf16/fp16); resume it "
                                 "under DeepSpeed (--gpus > 1, or zero_stage 1/2) with the same precision (any number of processes)")
            from protobench.dist import load_consolidated_optimizer_state

            load_consolidated_optimizer_state(self.engine, {k: v for k, v in tensors.items() if k.startswith("optim.")},
                                              state["optimizer"])
        else:
            self.optimizer.load_state_dict(unflatten_optimizer(tensors, state["optimizer"]))
        self.train_gen.set_state(tensors["rng.train"])
        if self.dist.world == 1:
            torch.set_rng_state(tensors["rng.torch"])
        self.step = state["step"]
        self.images_seen = state["images_seen"]
        self.ledger = Ledger(self.dist.world, state["ledger"])
        self.evals = list(state["evals"])
        self.prepare_work = dict(state.get("prepare_work") or self.prepare_work)
        self.precision.load_state_dict(state.get("precision") or {})


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


def _version() -> str:
    from protobench import __version__

    return __version__
