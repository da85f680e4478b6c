"""The run configuration's schema: a frozen dataclass, its identity (hash, run id, combination), the keys it
knows and the checks a resolved config must pass. Resolved by `build_config`: defaults < dataset presets < user
(flags, TOML, `-o key=value`)."""

from __future__ import annotations

import dataclasses
import json
import math
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from protobench.config.resolve import resolve
from protobench.errors import UsageError
from protobench.io import json_digest
from protobench.plugins import Registry
from protobench.vocabulary import KINDS, flatten_options


@dataclass(frozen=True)
class RunConfig:
    dataset: str = "digits"
    conditioner: str = "random"
    denoiser: str = "unet"
    guidance: str = "cfg"
    sampler: str = "dpm-solver++"  # 10 steps: DDIM-50's FID at 4.2x its speed (benchmarks/sampling.py)
    metrics: tuple[str, ...] = ("intra-fid", "fid", "class-accuracy")
    #: the headline the report ranks by: intra-class FID sees labels (FID does not); computed in `metrics`
    primary_metric: str = "intra-fid"
    seed: int = 0
    budget: int = 100_000  # images seen
    eval_every: int = 25_000  # images seen between evaluations (and checkpoints)
    eval_samples: int = 500
    #: samples of the last evaluation (0: eval_samples, raised to what per-class metrics need: as many per class
    #: as the evaluator's feature dimension); its metrics on all of them go to the eval event's `final`, while
    #: the curve and the crossings keep its first eval_samples (one sample count throughout)
    final_eval_samples: int = 0
    #: allow a final evaluation with fewer samples per class than the evaluator's feature dimension
    few_final_samples: bool = False
    batch_size: int = 128  # global batch, kept whatever the number of processes
    lr: float = 2e-4  # AdamW, paper A.2
    weight_decay: float = 0.0
    ema_decay: float = 0.999
    label_dropout: float = 0.1  # p(label -> NULL_LABEL), classifier-free guidance training
    schedule: str = "linear"
    timesteps: int = 1000
    grad_clip: float = 1.0
    log_every: int = 10  # steps between loss events
    gpus: int = 1  # processes; >1 launches under DeepSpeed
    zero_stage: int = 0
    precision: str = "fp32"  # fp32 | bf16 | fp16 (the last two on GPUs)
    #: torch.compile the step and the sampler: auto (on a GPU only), on, off (protobench/training/compiled.py)
    compile: str = "auto"
    data_root: str | None = None
    #: live loggers (`--logger tensorboard`): they observe the run, so they are no part of its identity (hash)
    loggers: tuple[str, ...] = ()
    #: the official ProtoDiffusion training, on request (docs/deviations.md); the defaults are the paper's text
    lr_schedule: str = "constant"  # or "warmup-cosine": linear warm-up to lr × warmup_multiplier, then cosine
    warmup_multiplier: float = 2.5  # train.py --multiplier
    warmup_share: float = 0.05  # of all steps (train.py: epoch // 20)
    small_t_share: float = 0.0  # share of each batch drawn at t < small_t (diffusion.py trainloss: 1/10, t < 50)
    small_t: int = 50
    #: per-kind plugin options, fully resolved: {"denoiser": {"base_channels": 32, ...}, ...}
    options: dict[str, dict[str, Any]] = field(default_factory=lambda: {k: {} for k in KINDS})

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["metrics"] = list(self.metrics)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        d = dict(d)
        d["metrics"] = tuple(d.get("metrics", ("fid",)))
        d["loggers"] = tuple(d.get("loggers", ()))
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    @classmethod
    def from_saved(cls, cfg_path: Path, run_id: str, registry: Registry) -> RunConfig:
        """A run's saved config.json, checked like a new one: a tampered file is refused before anything is written."""
        try:
            saved = json.loads(cfg_path.read_text())["config"]
            cfg = build_config({k: v for k, v in saved.items() if k != "options" and v is not None} | {
                **flatten_options(saved.get("options") or {})},
                registry)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise UsageError(f"{cfg_path}: not a readable run config ({type(exc).__name__}: {exc})") from None
        if cfg.run_id() != run_id:
            raise UsageError(f"{cfg_path}: its config no longer matches run {run_id} (edited?); not resumed")
        return cfg

    def hash(self) -> str:
        """Identity of what the run computes (not where its data lives)."""
        d = _identity(_without_later_defaults(self.to_dict()))
        return json_digest(d, 12)

    def run_id(self) -> str:
        return f"{self.dataset}-{self.conditioner}-{self.guidance}-s{self.seed}-{self.hash()[:8]}"

    def combination(self) -> str:
        """What a report row groups by: everything but the seed."""
        d = _identity(_without_later_defaults(self.to_dict()))
        d.pop("seed")
        return json_digest(d, 12)


def _identity(d: dict[str, Any]) -> dict[str, Any]:
    """What a run computes: not where its data lives, nor who watches it (loggers)."""
    d.pop("data_root", None)
    d.pop("loggers", None)
    d["options"] = {k: v for k, v in d.get("options", {}).items() if k != "logger"}
    return d


#: keys added after runs were first recorded: left out of the hash at their defaults, so run ids stay the same
LATER_KEYS = ("lr_schedule", "warmup_multiplier", "warmup_share", "small_t_share", "small_t", "compile")


def _without_later_defaults(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if not (k in LATER_KEYS and v == getattr(RunConfig, k))}


def lr_at(cfg: RunConfig, step: int) -> float:
    """The learning rate at `step` (0-based). warmup-cosine is the official scheduler.py + train.py: linear
    from lr to lr × multiplier over the warm-up, then CosineAnnealingLR(T_max = all steps, eta_min = 0)."""
    if cfg.lr_schedule == "constant":
        return cfg.lr
    total = max(1, -(-cfg.budget // cfg.batch_size))
    warm = max(1, round(cfg.warmup_share * total))
    peak = cfg.lr * cfg.warmup_multiplier
    if step < warm:
        return cfg.lr * (1 + (cfg.warmup_multiplier - 1) * step / warm)
    return peak * 0.5 * (1 + math.cos(math.pi * (step - warm) / total))


TOP_LEVEL = {f.name: f for f in fields(RunConfig) if f.name != "options"}


def check_key(key: str) -> None:
    if key in TOP_LEVEL:
        return
    kind = key.split(".", 1)[0].split(":", 1)[0]  # conditioner:proto-unfrozen.dim: for one plugin only
    if "." in key and kind in KINDS:
        return
    known = ", ".join(sorted(TOP_LEVEL)) + ", " + ", ".join(f"{k}.<option>" for k in KINDS)
    raise UsageError(f"unknown config key {key!r}; known keys: {known}")


def build_config(user: dict[str, Any], registry: Registry) -> RunConfig:
    """Resolve a full RunConfig from user overrides, applying the dataset's presets underneath them."""
    for key in user:
        check_key(key)
    base = RunConfig()
    annotations = typing.get_type_hints(RunConfig)
    cfg = RunConfig(**resolve(user, registry, {key: getattr(base, key) for key in TOP_LEVEL}, annotations))
    validate(cfg)
    return cfg


#: past this a run would not end: 1e12 images is ~30 years at 1,000 images/s
MAX_IMAGES = 10**12
MAX_SEED = 2**32 - 1  # seeds are scaled (seed * 1000, seed * 7919) and must stay inside torch's 64 bits


def betas_in_range(schedule: str, timesteps: int) -> bool:
    """Whether every β_t of diffusion.make_betas(schedule, timesteps) is in (0, 1), from its extremes: the
    linear betas run from the first to the last, the cosine ones grow from β_0 and are clipped at 0.999."""
    if schedule == "linear":
        scale = 1000.0 / timesteps
        return scale * 1e-4 > 0 and (timesteps == 1 or scale * 0.02 < 1)
    s = 0.008

    def alpha_bar(step: int) -> float:
        return math.cos((step / timesteps + s) / (1 + s) * math.pi / 2) ** 2

    return 1 - alpha_bar(1) / alpha_bar(0) > 0


def validate(cfg: RunConfig) -> None:
    """Refuse a config that cannot run, in one line. Checks run in order, each only once the ones it
    depends on have passed (batch_size % gpus needs gpus >= 1)."""
    for f in fields(RunConfig):
        value = getattr(cfg, f.name)
        if f.name == "options":
            ok = isinstance(value, dict) and all(isinstance(v, dict) for v in value.values())
        elif f.name in ("metrics", "loggers"):
            ok = isinstance(value, tuple) and all(isinstance(m, str) for m in value)
        elif f.name == "data_root":
            ok = value is None or isinstance(value, str)
        else:
            like = f.default
            ok = (isinstance(value, bool) if isinstance(like, bool)
                  else isinstance(value, type(like)) and not isinstance(value, bool) if isinstance(like, int)
                  else isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
                  if isinstance(like, float) else isinstance(value, type(like)))
        if not ok:
            raise UsageError(f"bad value for {f.name}: {value!r}")

    def schedule_ok() -> bool:
        return betas_in_range(cfg.schedule, cfg.timesteps)

    checks = [
        (lambda: 0 <= cfg.seed <= MAX_SEED, f"seed must be in [0, {MAX_SEED}], got {cfg.seed}"),
        (lambda: cfg.budget > 0, "budget must be > 0 images"),
        (lambda: cfg.budget <= MAX_IMAGES, f"budget {cfg.budget:.3g} images would not finish; at most {MAX_IMAGES:.0e}"),
        (lambda: cfg.eval_every > 0, "eval_every must be > 0 images"),
        (lambda: cfg.eval_every <= MAX_IMAGES, f"eval_every must be at most {MAX_IMAGES:.0e} images"),
        (lambda: cfg.eval_samples > 0, "eval_samples must be > 0"),
        (lambda: cfg.eval_samples <= 10**7, f"eval_samples must be at most 10000000, got {cfg.eval_samples}"),
        (lambda: cfg.final_eval_samples == 0 or cfg.eval_samples <= cfg.final_eval_samples <= 10**7,
         f"final_eval_samples must be 0 or in [eval_samples, 10000000], got {cfg.final_eval_samples}"),
        (lambda: cfg.batch_size > 0, "batch_size must be > 0"),
        (lambda: cfg.batch_size <= 10**6, f"batch_size must be at most 1000000, got {cfg.batch_size}"),
        (lambda: cfg.log_every > 0, "log_every must be > 0 steps"),
        (lambda: cfg.gpus >= 1, f"gpus must be >= 1, got {cfg.gpus}"),
        (lambda: cfg.gpus <= 4096, f"gpus must be at most 4096, got {cfg.gpus}"),
        (lambda: cfg.batch_size % cfg.gpus == 0,
         f"batch_size {cfg.batch_size} must divide evenly over {cfg.gpus} processes"),
        (lambda: cfg.zero_stage in (0, 1, 2, 3), f"zero_stage must be 0, 1, 2 or 3, got {cfg.zero_stage}"),
        (lambda: cfg.lr > 0, f"lr must be > 0, got {cfg.lr}"),
        (lambda: cfg.weight_decay >= 0, f"weight_decay must be >= 0, got {cfg.weight_decay}"),
        (lambda: cfg.grad_clip >= 0, f"grad_clip must be >= 0 (0: no clipping), got {cfg.grad_clip}"),
        (lambda: 0.0 <= cfg.label_dropout < 1.0, "label_dropout must be in [0, 1)"),
        (lambda: 0.0 <= cfg.ema_decay < 1.0, "ema_decay must be in [0, 1)"),
        (lambda: cfg.schedule in ("linear", "cosine"), f"schedule must be linear or cosine, got {cfg.schedule!r}"),
        (lambda: 1 <= cfg.timesteps <= 10**6, f"timesteps must be in [1, 1000000], got {cfg.timesteps}"),
        (schedule_ok, f"timesteps={cfg.timesteps} is too few for the {cfg.schedule} schedule: some β_t is not in (0, 1)"),
        (lambda: cfg.lr_schedule in ("constant", "warmup-cosine"),
         f"lr_schedule must be constant or warmup-cosine, got {cfg.lr_schedule!r}"),
        (lambda: cfg.warmup_multiplier > 0, f"warmup_multiplier must be > 0, got {cfg.warmup_multiplier}"),
        (lambda: 0.0 <= cfg.warmup_share < 1.0, f"warmup_share must be in [0, 1), got {cfg.warmup_share}"),
        (lambda: 0.0 <= cfg.small_t_share <= 1.0, f"small_t_share must be in [0, 1], got {cfg.small_t_share}"),
        (lambda: 1 <= cfg.small_t <= cfg.timesteps, f"small_t must be in [1, timesteps], got {cfg.small_t}"),
        (lambda: cfg.precision in ("fp32", "bf16", "fp16"), f"precision must be fp32, bf16 or fp16, got {cfg.precision!r}"),
        (lambda: cfg.compile in ("auto", "on", "off"), f"compile must be auto, on or off, got {cfg.compile!r}"),
    ]
    for ok, message in checks:
        if not ok():
            raise UsageError(message)
