"""The training loop: one process with plain torch, or N data-parallel processes under DeepSpeed.

A run is a pure function of its config: batches, timesteps, noise and label dropout are drawn for the
whole global batch from one seeded generator, and each process takes its slice, so N processes see
exactly what one process would. Checkpoints hold the generator states, so a resumed run continues
to the result it would have reached unstopped.
"""

from __future__ import annotations

import copy
import json
import math
import os
import platform
import shutil
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from protobench.config import RunConfig, build_metrics
from protobench.diffusion import NoiseSchedule
from protobench.errors import TrainingDiverged, UsageError
from protobench.interfaces import NULL_LABEL, ConditionedNet, LossContext, PrepareContext, Reference
from protobench.io import append_event, atomic_write_json, read_events
from protobench.ledger import Ledger
from protobench.plugins import Registry

CACHE_ENV = "PROTOBENCH_CACHE"


def default_out() -> Path:
    return Path(os.environ.get("PROTOBENCH_OUT", "protobench-runs"))


def cache_dir(out: Path) -> Path:
    return Path(os.environ.get(CACHE_ENV, out / "cache"))


# ---------------------------------------------------------------------------------------------
# distributed helpers


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def current_dist() -> Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    return Dist(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))


def pick_device(dist: Dist) -> torch.device:
    if os.environ.get("PROTOBENCH_DEVICE"):
        return torch.device(os.environ["PROTOBENCH_DEVICE"])
    if torch.cuda.is_available():
        return torch.device("cuda", dist.local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def device_info(device: torch.device, count: int) -> dict[str, Any]:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = platform.processor() or platform.machine() or "cpu"
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
        except OSError:
            pass
    return {"type": device.type, "name": name, "count": count}


def gather_to_main(tensor: Tensor, dist: Dist) -> Tensor:
    """Concatenate equally shaped shards from every rank (in rank order) on every rank."""
    if dist.world == 1:
        return tensor
    import torch.distributed as tdist

    parts = [torch.empty_like(tensor) for _ in range(dist.world)]
    tdist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)


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
        for ema_p, p in zip(self.model.parameters(), model.parameters(), strict=True):
            ema_p.lerp_(p.detach().to(ema_p.dtype), 1 - decay)
        for ema_b, b in zip(self.model.buffers(), model.buffers(), strict=True):
            ema_b.copy_(b)


# ---------------------------------------------------------------------------------------------
# checkpoints


def _flatten_optimizer(state: dict) -> tuple[dict[str, Tensor], dict]:
    tensors: dict[str, Tensor] = {}
    meta: dict[str, Any] = {"param_groups": state["param_groups"], "state": {}}
    for pid, pstate in state["state"].items():
        meta["state"][str(pid)] = {}
        for k, v in pstate.items():
            if isinstance(v, Tensor):
                tensors[f"optim.{pid}.{k}"] = v.detach().cpu().contiguous()
                meta["state"][str(pid)][k] = "__tensor__"
            else:
                meta["state"][str(pid)][k] = v
    return tensors, meta


def _unflatten_optimizer(tensors: dict[str, Tensor], meta: dict) -> dict:
    state = {}
    for pid, pstate in meta["state"].items():
        state[int(pid)] = {k: (tensors[f"optim.{pid}.{k}"] if v == "__tensor__" else v) for k, v in pstate.items()}
    return {"state": state, "param_groups": meta["param_groups"]}


def _prefixed(prefix: str, sd: dict[str, Tensor]) -> dict[str, Tensor]:
    return {f"{prefix}.{k}": v.detach().cpu().contiguous() for k, v in sd.items()}


def _strip(prefix: str, tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    n = len(prefix) + 1
    return {k[n:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}


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
        self.dir = self.out / "runs" / cfg.run_id()
        self.show_progress = show_progress
        self.dist = current_dist()
        self.device = pick_device(self.dist)
        self._epoch_perm: tuple[int | None, Tensor | None] = (None, None)  # the data order of the current epoch

    # -- bookkeeping ------------------------------------------------------------------------
    @property
    def events_path(self) -> Path:
        return self.dir / "events.jsonl"

    def event(self, kind: str, **fields: Any) -> None:
        if self.dist.main:
            append_event(self.events_path, {"event": kind, "time": time.time(), **fields})

    def plugin_versions(self) -> dict[str, dict[str, str]]:
        cfg = self.cfg
        chosen = [("dataset", cfg.dataset), ("conditioner", cfg.conditioner), ("denoiser", cfg.denoiser),
                  ("guidance", cfg.guidance), ("sampler", cfg.sampler)] + [("metric", m) for m in cfg.metrics]
        out: dict[str, dict[str, str]] = {}
        for kind, name in chosen:
            entry = self.registry.get(kind, name)
            out[f"{kind}:{name}"] = {"plugin": entry.plugin, "version": entry.version}
        return out

    # -- building ---------------------------------------------------------------------------
    def build(self) -> None:
        cfg, reg = self.cfg, self.registry
        opts = cfg.options
        self.dataset = reg.build("dataset", cfg.dataset, opts["dataset"], {"data_root": cfg.data_root})
        self.train_split, self.test_split = self.dataset.load()
        self.checksum = self.dataset.checksum()
        ctx = {"num_classes": self.dataset.num_classes, "image_shape": tuple(self.dataset.image_shape),
               "class_names": tuple(self.dataset.class_names)}
        self.conditioner = reg.build("conditioner", cfg.conditioner, opts["conditioner"], ctx)
        self.denoiser = reg.build("denoiser", cfg.denoiser, opts["denoiser"], {**ctx, "cond": self.conditioner.spec})
        self.guidance = reg.build("guidance", cfg.guidance, opts["guidance"], ctx)
        self.sampler = reg.build("sampler", cfg.sampler, opts["sampler"], ctx)
        self.metrics = build_metrics(cfg, reg, ctx)
        self.schedule = NoiseSchedule(cfg.schedule, cfg.timesteps)

    def reference(self) -> Reference:
        return Reference(self.dataset, cache_dir(self.out), self.device, seed=0, show_progress=False,
                         inception_weights=inception_weights(self.cfg))

    def prepare_context(self, **extra: Any) -> PrepareContext:
        return PrepareContext(
            train=self.train_split, test=self.test_split, num_classes=self.dataset.num_classes,
            image_shape=tuple(self.dataset.image_shape), dataset_checksum=self.checksum, seed=self.cfg.seed,
            device=self.device, cache_dir=cache_dir(self.out), show_progress=self.show_progress and self.dist.main,
            **extra,
        )

    # -- main entry -------------------------------------------------------------------------
    def execute(self) -> dict[str, Any]:
        cfg = self.cfg
        existing = self.dir / "config.json"
        if existing.exists():
            prior = load_record(self.dir)
            if prior["status"] == "completed":
                return prior
        self.dir.mkdir(parents=True, exist_ok=True)
        # the same seed on every rank, so that every process builds the same initial weights
        torch.manual_seed(cfg.seed * 1000)  # dropout etc.; data randomness uses its own generator
        try:
            self.build()
        except Exception as exc:  # a plugin that cannot be built: recorded as a failed run, so a sweep shows it
            self.checksum = getattr(self, "checksum", None)
            self._write_config()
            self.event("failed", error=str(exc) if isinstance(exc, UsageError) else f"{type(exc).__name__}: {exc}")
            raise
        if self.dist.main:
            for metric in self.metrics:  # the measuring instrument (evaluator, real statistics): cached, not charged
                metric.prepare(self.reference())
        self.ledger = Ledger(devices=self.dist.world)
        self._write_config()
        try:
            return self._execute()
        except TrainingDiverged as exc:
            self.event("failed", error=str(exc), step=exc.step)
            raise
        except KeyboardInterrupt:
            self.event("interrupted", images_seen=getattr(self, "images_seen", 0))
            raise
        except UsageError as exc:
            self.event("failed", error=str(exc))
            raise
        except Exception as exc:
            self.event("failed", error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc())
            raise

    def _write_config(self) -> None:
        if not self.dist.main:
            return
        cfg = self.cfg
        atomic_write_json(self.dir / "config.json", {
            "run_id": cfg.run_id(), "config": cfg.to_dict(), "config_hash": cfg.hash(),
            "combination": cfg.combination(), "plugins": self.plugin_versions(),
            "dataset_checksum": self.checksum, "protobench_version": _version(),
            "device": device_info(self.device, self.dist.world),
        })

    def _execute(self) -> dict[str, Any]:
        cfg = self.cfg
        model = DiffusionModel(self.conditioner, self.denoiser, self.schedule).to(self.device)
        self.model = model
        state = self._latest_state()
        if state is None:
            self.event("start", device=device_info(self.device, self.dist.world))
            pctx = self.prepare_context()
            with self.ledger.phase("prepare", self._sync):
                model.conditioner.prepare(pctx)
            self.ledger.add("prepare", pctx.cached_device_seconds)
            model.to(self.device)
            self.event("prepare", component="conditioner", device_seconds=self.ledger.device_seconds["prepare"],
                       results=pctx.results)
        trainable = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.optimizer = optimizer
        self.engine = None
        if self.dist.world > 1:
            # DeepSpeed broadcasts rank 0's weights; the EMA is taken after, so it starts equal on every rank
            self.engine = _deepspeed_engine(model, optimizer, cfg, self.dist)
            torch.manual_seed(cfg.seed * 1000 + self.dist.rank)  # dropout differs per rank, as its slice does
        self.ema = EMA(model, cfg.ema_decay)
        self.train_gen = torch.Generator().manual_seed(cfg.seed)
        self.images_seen = 0
        self.step = 0
        self.evals: list[dict[str, Any]] = []
        if state is not None:
            self._restore(state)
            self.event("resume", images_seen=self.images_seen, step=self.step)
        return self._train_loop()

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
        noise = torch.randn((bs, *x_all.shape[1:]), generator=self.train_gen)
        drop = torch.rand(bs, generator=self.train_gen) < cfg.label_dropout
        labels = torch.where(drop, torch.full_like(y_all[idx], NULL_LABEL), y_all[idx])
        mine = slice(self.dist.rank, bs, self.dist.world)
        # images stay uint8 in memory and become [-1, 1] floats per batch (a float copy of a large split is 4x)
        x0 = x_all[idx][mine].float().div(127.5).sub(1.0)
        return x0, labels[mine], t[mine], noise[mine]

    def _train_loop(self) -> dict[str, Any]:
        cfg = self.cfg
        x_all = self.train_split.images
        y_all = self.train_split.labels.long()
        autocast = self._autocast()
        progress = self._progress()
        task = None
        if progress is not None:
            progress.start()
            task = progress.add_task(f"{cfg.conditioner} s{cfg.seed}", total=cfg.budget, completed=self.images_seen)
        try:
            while self.images_seen < cfg.budget:
                next_eval = (self.images_seen // cfg.eval_every + 1) * cfg.eval_every
                with self.ledger.phase("train", self._sync):
                    while self.images_seen < min(next_eval, cfg.budget):
                        loss, mse = self._train_step(x_all, y_all, autocast)
                        if progress is not None:
                            progress.update(task, completed=self.images_seen, description=f"{cfg.conditioner} s{cfg.seed} loss {mse:.4f}")
                        if self.progress_callback is not None and self.dist.main:
                            self.progress_callback(self.images_seen, cfg.budget, mse)
                self._evaluate()
                self._checkpoint()
        finally:
            if progress is not None:
                progress.stop()
        extra = {"param_digests": self._param_digests()} if self.dist.world > 1 else {}
        self.event("end", status="completed", images_seen=self.images_seen, device_seconds=self.ledger.snapshot(),
                   **extra)
        if self.dist.world > 1:  # every rank returns the record rank 0 has just completed
            import torch.distributed as tdist

            tdist.barrier()
        record = load_record(self.dir)
        if self.dist.main:
            atomic_write_json(self.dir / "record.json", record)
        return record

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
        self.model.train()
        if self.engine is not None:
            with autocast:
                loss, mse = self.engine(x0, labels, t, noise)
            self.engine.backward(loss)
            self.engine.step()
        else:
            with autocast:
                loss, mse = self.model(x0, labels, t, noise)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
            self.optimizer.step()
        value = float(loss.detach())
        mse_value = float(mse.detach())
        if self.dist.world > 1:  # mean over ranks so every rank (and the log) sees the global loss
            import torch.distributed as tdist

            both = torch.tensor([value, mse_value], device=self.device if self.device.type == "cuda" else "cpu")
            tdist.all_reduce(both)
            value, mse_value = (both / self.dist.world).tolist()
        self.step += 1
        self.images_seen += cfg.batch_size
        if not math.isfinite(value):
            raise TrainingDiverged(self.step, value)
        self.ema.update(self.model)
        if self.step % cfg.log_every == 0 or self.step == 1:
            self.event("loss", step=self.step, images_seen=self.images_seen, loss=value, mse=mse_value)
        return value, mse_value

    def _autocast(self):
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.cfg.precision)
        if dtype is None or self.device.type != "cuda":
            return torch.autocast(self.device.type, enabled=False)
        return torch.autocast("cuda", dtype=dtype)

    def _progress(self):
        if not (self.show_progress and self.dist.main):
            return None
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("images"),
                        TimeElapsedColumn(), TimeRemainingColumn(), console=Console(stderr=True), transient=True)

    # -- evaluation -------------------------------------------------------------------------
    def _evaluate(self) -> None:
        cfg = self.cfg
        net = ConditionedNet(self.ema.model.conditioner, self.ema.model.denoiser, self.dataset.num_classes)
        if guidance_prepares(self.guidance):
            pctx = self.prepare_context(net=net, schedule=self.schedule)
            with self.ledger.phase("prepare", self._sync):
                self.guidance.prepare(pctx)
            self.ledger.add("prepare", pctx.cached_device_seconds)
            self.event("prepare", component="guidance", images_seen=self.images_seen, results=pctx.results,
                       device_seconds=self.ledger.device_seconds["prepare"])
        with self.ledger.phase("eval", self._sync):
            samples, labels, acceptance = generate(net, self.guidance, self.sampler, self.schedule, cfg.eval_samples,
                                                   self.dataset.num_classes, tuple(self.dataset.image_shape),
                                                   seed=cfg.seed + 12345, device=self.device, dist=self.dist)
            metrics: dict[str, float] = {}
            if self.dist.main:
                ref = self.reference()
                for metric in self.metrics:
                    metrics.update(metric.compute(samples, labels, ref))
                if acceptance is not None:
                    metrics["acceptance_rate"] = acceptance
                save_grid(samples, labels, self.dataset.num_classes, self.dir / "samples" / f"{self.images_seen:09d}.png")
                shutil.copyfile(self.dir / "samples" / f"{self.images_seen:09d}.png", self.dir / "samples.png")
        ev = {"images_seen": self.images_seen, "step": self.step, "device_seconds": self.ledger.snapshot(),
              "metrics": metrics}
        self.evals.append(ev)
        self.event("eval", **ev)

    # -- checkpoints ------------------------------------------------------------------------
    def _deepspeed_owns_optimizer(self) -> bool:
        """ZeRO or mixed precision: DeepSpeed wraps (and may shard) the optimizer, so it saves its state itself."""
        return self.engine is not None and self.engine.optimizer is not self.optimizer

    def _checkpoint(self) -> None:
        ckpt_dir = self.dir / "checkpoints"
        tag = f"step-{self.step:08d}"
        if self._deepspeed_owns_optimizer():  # a collective: every rank writes its shard
            self.engine.save_checkpoint(str(ckpt_dir / "deepspeed"), tag=tag, save_latest=False)
        if not self.dist.main:
            return
        ckpt_dir.mkdir(exist_ok=True)
        model = self.engine.module if self.engine is not None else self.model
        tensors = {**_prefixed("model", model.state_dict()), **_prefixed("ema", self.ema.model.state_dict())}
        opt_meta: dict[str, Any] = {"deepspeed_tag": tag}
        if not self._deepspeed_owns_optimizer():
            opt_tensors, opt_meta = _flatten_optimizer(self.optimizer.state_dict())
            tensors.update(opt_tensors)
        tensors["rng.train"] = self.train_gen.get_state()
        tensors["rng.torch"] = torch.get_rng_state()
        name = f"step-{self.step:08d}.safetensors"
        tmp = ckpt_dir / f".{name}.tmp"
        save_file(tensors, str(tmp))
        os.replace(tmp, ckpt_dir / name)
        atomic_write_json(ckpt_dir / "latest.json", {
            "file": name, "step": self.step, "images_seen": self.images_seen, "ledger": self.ledger.snapshot(),
            "ema_updates": self.ema.updates, "optimizer": opt_meta, "evals": self.evals,
        })
        for old in sorted(ckpt_dir.glob("step-*.safetensors"))[:-2]:  # keep the last two
            old.unlink()
        for old in sorted((ckpt_dir / "deepspeed").glob("step-*"))[:-2]:
            shutil.rmtree(old, ignore_errors=True)
        self.event("checkpoint", file=name, step=self.step, images_seen=self.images_seen)

    def _latest_state(self) -> dict[str, Any] | None:
        latest = self.dir / "checkpoints" / "latest.json"
        if not latest.exists():
            return None
        meta = json.loads(latest.read_text())
        meta["tensors"] = load_file(str(self.dir / "checkpoints" / meta["file"]))
        return meta

    def _restore(self, state: dict[str, Any]) -> None:
        tensors = state["tensors"]
        model = self.engine.module if self.engine is not None else self.model
        model.load_state_dict(_strip("model", tensors))
        self.ema.model.load_state_dict(_strip("ema", tensors))
        self.ema.updates = state["ema_updates"]
        if "deepspeed_tag" in state["optimizer"]:
            if not self._deepspeed_owns_optimizer():
                raise UsageError("this checkpoint's optimizer state was saved by DeepSpeed (ZeRO or bf16/fp16); "
                                 "resume it with the same --gpus, zero_stage and precision")
            self.engine.load_checkpoint(str(self.dir / "checkpoints" / "deepspeed"), tag=state["optimizer"]["deepspeed_tag"],
                                        load_optimizer_states=True, load_lr_scheduler_states=False)
            model.load_state_dict(_strip("model", tensors))
        else:
            self.optimizer.load_state_dict(_unflatten_optimizer(tensors, state["optimizer"]))
        self.train_gen.set_state(tensors["rng.train"])
        if self.dist.world == 1:
            torch.set_rng_state(tensors["rng.torch"])
        self.step = state["step"]
        self.images_seen = state["images_seen"]
        self.ledger = Ledger(self.dist.world, state["ledger"])
        self.evals = list(state["evals"])


def guidance_prepares(guidance) -> bool:
    """Whether a guidance has a `prepare` step of its own (e.g. fitting a classifier on the trained net)."""
    from protobench.interfaces import Guidance

    return type(guidance).prepare is not Guidance.prepare


def load_trained(run_dir: Path, registry: Registry) -> tuple[Run, ConditionedNet, dict[str, Any]]:
    """A run's parts rebuilt from its config.json, with the EMA weights of its latest checkpoint and its
    guidance prepared as it was for evaluation: (run, net, latest checkpoint's metadata)."""
    run_dir = Path(run_dir)
    cfg = RunConfig.from_dict(json.loads((run_dir / "config.json").read_text())["config"])
    run = Run(cfg, registry, run_dir.parent.parent, show_progress=False)
    run.dir = run_dir
    latest = run_dir / "checkpoints" / "latest.json"
    if not latest.is_file():
        raise UsageError(f"run {run_dir.name!r} has no checkpoint yet (missing {latest})")
    run.build()
    model = DiffusionModel(run.conditioner, run.denoiser, run.schedule)
    try:
        state = run._latest_state()
        model.load_state_dict(_strip("ema", state["tensors"]))
    except (OSError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise UsageError(f"run {run_dir.name!r}: its latest checkpoint does not load: {first}") from None
    model.to(run.device).eval()
    net = ConditionedNet(model.conditioner, model.denoiser, run.dataset.num_classes)
    if guidance_prepares(run.guidance):
        run.guidance.prepare(run.prepare_context(net=net, schedule=run.schedule))
    del state["tensors"]
    return run, net, state


def inception_weights(cfg: RunConfig) -> Path | None:
    """The Inception weights file from the metric option or $PROTOBENCH_INCEPTION_WEIGHTS (None: domain evaluator)."""
    path = cfg.options.get("metric", {}).get("inception_weights") or os.environ.get("PROTOBENCH_INCEPTION_WEIGHTS")
    return Path(path) if path else None


def _version() -> str:
    from protobench import __version__

    return __version__


def _deepspeed_engine(model: nn.Module, optimizer, cfg: RunConfig, dist: Dist):
    from protobench.distributed import initialize_engine

    return initialize_engine(model, optimizer, cfg, dist)


# ---------------------------------------------------------------------------------------------
# sampling


def to_uint8(x: Tensor) -> Tensor:
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


@torch.no_grad()
def _sample_batch(net, guidance, sampler, schedule, labels: Tensor, image_shape, generator, device) -> Tensor:
    def eps_fn(x_t: Tensor, t: Tensor) -> Tensor:
        return guidance.eps(net, x_t, t, labels)

    return sampler.sample(eps_fn, schedule, (labels.shape[0], *image_shape), generator).to(device)


def generate(net, guidance, sampler, schedule, n: int, num_classes: int, image_shape, seed: int,
             device: torch.device, dist: Dist = Dist(), batch_size: int = 500, labels: Tensor | None = None,
             max_rounds: int = 10) -> tuple[Tensor, Tensor, float | None]:
    """n uint8 samples with balanced labels (i mod C), sharded over ranks, gathered on every rank.

    With rejection sampling (guidance.accept), rejected samples are redrawn (up to `max_rounds`).
    """
    if labels is None:
        labels = torch.arange(n) % num_classes
    per_rank = math.ceil(n / dist.world)
    padded = torch.cat([labels, labels[: per_rank * dist.world - n]]) if per_rank * dist.world > n else labels
    mine = padded[dist.rank * per_rank:(dist.rank + 1) * per_rank].to(device)
    generator = torch.Generator(device=device if device.type == "cuda" else "cpu").manual_seed(seed * 7919 + dist.rank)
    out = torch.empty((per_rank, *image_shape), dtype=torch.uint8, device=device)
    drawn = accepted = 0
    rejecting = False  # set when the guidance actually judged samples (accept returned a mask)
    for start in range(0, per_rank, batch_size):
        want = mine[start:start + batch_size]
        pending = torch.arange(want.shape[0], device=device)
        for round_ in range(max_rounds):
            x0 = _sample_batch(net, guidance, sampler, schedule, want[pending], image_shape, generator, device)
            keep = guidance.accept(net, x0, want[pending])
            rejecting = rejecting or keep is not None
            if keep is None:
                keep = torch.ones(pending.numel(), dtype=torch.bool, device=device)
            drawn += pending.numel()
            accepted += int(keep.sum())
            # out of rounds: keep the last draw anyway (it was counted as rejected)
            store = torch.ones_like(keep) if round_ == max_rounds - 1 else keep
            out[start + pending[store]] = to_uint8(x0[store])
            pending = pending[~store]
            if pending.numel() == 0:
                break
    samples = gather_to_main(out, dist)[:n].cpu()
    all_labels = gather_to_main(mine, dist)[:n].cpu()
    rate = None
    if rejecting:
        counts = torch.tensor([float(accepted), float(drawn)], device=device if device.type == "cuda" else "cpu")
        if dist.world > 1:
            import torch.distributed as tdist

            tdist.all_reduce(counts)
        rate = float(counts[0] / counts[1].clamp(min=1))
    return samples, all_labels, rate


def save_grid(samples: Tensor, labels: Tensor, num_classes: int, path: Path, per_class: int = 10) -> None:
    """A PNG grid, one row per class (up to 10 classes shown)."""
    from PIL import Image

    rows = []
    c, h, w = samples.shape[1:]
    for k in range(min(num_classes, 10)):
        picks = samples[labels == k][:per_class]
        if picks.shape[0] < per_class:
            picks = torch.cat([picks, torch.zeros((per_class - picks.shape[0], c, h, w), dtype=torch.uint8)])
        rows.append(torch.cat(list(picks), dim=2))
    grid = torch.cat(rows, dim=1)
    scale = max(1, 64 // h)
    grid = grid.repeat_interleave(scale, 1).repeat_interleave(scale, 2)
    arr = grid.permute(1, 2, 0).numpy()
    image = Image.fromarray(arr[:, :, 0] if c == 1 else arr)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    image.save(tmp)
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------
# the run record


def best_of(evals: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The evaluation with the lowest FID (first metric whose key starts with 'fid[')."""
    candidates = [(k, e) for e in evals for k in e.get("metrics", {}) if k.startswith("fid[")]
    if not candidates:
        return None
    key = candidates[0][0]
    scored = [e for e in evals if isinstance(e["metrics"].get(key), (int, float)) and math.isfinite(e["metrics"][key])]
    if not scored:
        return None
    best = min(scored, key=lambda e: e["metrics"][key])
    ds = best["device_seconds"]
    return {"metric": key, "value": best["metrics"][key], "images_seen": best["images_seen"],
            "device_hours": (ds["prepare"] + ds["train"]) / 3600.0,
            "prepare_hours": ds["prepare"] / 3600.0}


def load_record(run_dir: Path) -> dict[str, Any]:
    """The run record, rebuilt from config.json and events.jsonl (so it is right even after kill -9)."""
    run_dir = Path(run_dir)
    meta = json.loads((run_dir / "config.json").read_text())
    events = read_events(run_dir / "events.jsonl")
    status = "running"
    error = None
    evals: list[dict[str, Any]] = []
    seconds = {"prepare": 0.0, "train": 0.0, "eval": 0.0}
    prepare_results: dict[str, Any] = {}
    for ev in events:
        kind = ev.get("event")
        if kind == "start":
            status, error, evals = "running", None, []
        elif kind == "resume":
            status, error = "running", None
            evals = [e for e in evals if e["images_seen"] <= ev["images_seen"]]
        elif kind == "eval":
            evals.append({k: ev[k] for k in ("images_seen", "step", "device_seconds", "metrics")})
            seconds = dict(ev["device_seconds"])
        elif kind == "prepare":
            prepare_results.update(ev.get("results") or {})
            seconds["prepare"] = ev.get("device_seconds", seconds["prepare"])
        elif kind == "end":
            status = ev["status"]
            seconds = dict(ev["device_seconds"])
        elif kind == "failed":
            status, error = "failed", ev.get("error")
    return {
        "run_id": meta["run_id"], "status": status, "error": error, "config": meta["config"],
        "config_hash": meta["config_hash"], "combination": meta["combination"], "plugins": meta["plugins"],
        "dataset_checksum": meta["dataset_checksum"], "device": meta["device"], "device_seconds": seconds,
        "prepare": prepare_results, "evals": evals, "best": best_of(evals), "path": str(run_dir),
    }
