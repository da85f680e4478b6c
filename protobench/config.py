"""Run configuration: a frozen dataclass, defaults < dataset presets < user (flags, TOML, `-o key=value`)."""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from protobench.errors import UsageError
from protobench.io import json_digest
from protobench.plugins import CONTEXT_KEYS, Registry, plugin_options
from protobench.vocabulary import AXES, KINDS, flatten_options, unflatten_options


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
    #: torch.compile the step and the sampler: auto (on a GPU only), on, off (protobench/compiled.py)
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


def parse_size(text: str) -> int:
    """'30000', '30k', '1.5M' -> images."""
    s = str(text).strip().lower().replace("_", "")
    mult = 1
    if s.endswith("k"):
        mult, s = 1_000, s[:-1]
    elif s.endswith("m"):
        mult, s = 1_000_000, s[:-1]
    try:
        value = float(s) * mult
    except ValueError:
        raise UsageError(f"not a number of images: {text!r}") from None
    if not math.isfinite(value) or value != int(value) or value < 0:
        raise UsageError(f"not a whole number of images: {text!r}")
    return int(value)


def coerce(value: Any, like: Any, key: str) -> Any:
    """Convert a string (from `-o`) or a TOML value to the type of the default `like`.

    A TOML value of the wrong type (`seed = 1.5`, `lr = [1, 2]`, `budget = true`) is refused, not passed on."""
    if not isinstance(value, str):
        return _coerce_typed(value, like, key)
    try:
        if isinstance(like, bool):
            low = value.lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if isinstance(like, int):
            return parse_size(value) if key in SIZE_KEYS else int(value)
        if isinstance(like, float):
            return float(value)
        if isinstance(like, tuple):
            items = [v.strip() for v in value.split(",") if v.strip()]
            inner = like[0] if like else ""
            return tuple(coerce(v, inner, key) for v in items)
        if like is None:
            for cast in (int, float):
                try:
                    return cast(value)
                except ValueError:
                    pass
            return None if value.lower() in ("none", "null") else value
        return value
    except (ValueError, UsageError):
        raise UsageError(f"bad value for {key}: {value!r} (expected {_type_name(like)})") from None


#: sizes in images: also written 30k, 1.5M or (in TOML) 3e4
SIZE_KEYS = ("budget", "eval_every")


def _type_name(like: Any) -> str:
    if isinstance(like, tuple):
        return f"a list of {_type_name(like[0]) if like else 'values'}"
    return {bool: "true or false", int: "a whole number", float: "a number", str: "a string"}.get(
        type(like), type(like).__name__)


def _coerce_typed(value: Any, like: Any, key: str) -> Any:
    """A value that is already typed (TOML, Python callers): check it against the default's type."""
    def bad() -> UsageError:
        return UsageError(f"bad value for {key}: {value!r} (expected {_type_name(like)})")

    if like is None:  # no typed default (e.g. data_root, an option without default): any scalar
        if isinstance(value, dict):
            raise bad()
        return tuple(value) if isinstance(value, list) else value
    if isinstance(like, bool):
        if not isinstance(value, bool):
            raise bad()
        return value
    if isinstance(like, int):
        if isinstance(value, bool):
            raise bad()
        if isinstance(value, float) and key in SIZE_KEYS and math.isfinite(value) and value == int(value):
            return int(value)
        if not isinstance(value, int):
            raise bad()
        return value
    if isinstance(like, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad()
        return float(value)
    if isinstance(like, tuple):
        if isinstance(value, (list, tuple)):
            inner = like[0] if like else None
            return tuple(v if inner is None else coerce(v, inner, key) for v in value)
        if isinstance(value, (dict, bool)):
            raise bad()
        return coerce(str(value), like, key)
    if isinstance(like, str):
        if not isinstance(value, str):
            raise bad()
        return value
    return value


def parse_overrides(pairs: tuple[str, ...] | list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise UsageError(f"-o expects key=value, got {pair!r}")
        key, value = pair.split("=", 1)
        out[key.strip()] = value.strip()
    return out


def read_toml(path: str | Path) -> dict[str, Any]:
    """Parse a TOML file; a missing or invalid file is one clear line."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"config file not found: {path}")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path}: not UTF-8 text (byte {exc.start}): a TOML file must be UTF-8") from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path}: not valid TOML: {exc}") from None
    except RecursionError:  # tomllib parses nested arrays and tables recursively
        raise UsageError(f"{path}: nested too deeply to be a config (arrays or tables inside each other)") from None


def load_toml(path: str | Path) -> dict[str, Any]:
    """A run TOML: top-level keys, plus `[options.<kind>]` tables. Returns flat overrides."""
    return flatten_toml(read_toml(path), str(path))


def flatten_toml(data: dict[str, Any], where: str) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if key == "options":
            if not isinstance(value, dict):
                raise UsageError(f"{where}: [options] must be a table of [options.<kind>] tables")
            for kind, opts in value.items():
                if not isinstance(opts, dict):
                    raise UsageError(f"{where}: options.{kind} must be a table")
                plain = {k: v for k, v in opts.items() if not isinstance(v, dict)}
                flat.update(flatten_options({kind: plain}))
                for name, table in opts.items():  # [options.conditioner.proto-unfrozen]: only when that plugin runs
                    if isinstance(table, dict):
                        flat.update({f"{kind}:{name}.{k}": v for k, v in table.items()})
        elif key in ("sweep", "slurm", "description", "name"):
            continue
        else:
            flat[key] = value
    return flat


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
    top: dict[str, Any] = {}
    for key in AXES:
        top[key] = str(user.get(key, getattr(base, key)))
    user = for_chosen_plugins(user, top)
    dataset_cls = registry.get("dataset", top["dataset"]).cls
    presets = dict(getattr(dataset_cls, "presets", {}))
    classes = {kind: registry.get(kind, top[kind]).cls for kind in AXES}
    # top-level keys: default < preset < user
    for key in TOP_LEVEL:
        if key in top:
            continue
        default = getattr(base, key)
        value = default
        if key in presets:
            value = coerce(presets[key], default, key)
        if key in user:
            value = coerce(user[key], default if default is not None else "", key)
        top[key] = value
    if isinstance(top["metrics"], str):
        top["metrics"] = tuple(m.strip() for m in top["metrics"].split(",") if m.strip())
    if top["metrics"] == ("none",):
        top["metrics"] = ()  # asked for explicitly: train without evaluating
    elif not top["metrics"]:
        raise UsageError("metrics is empty: name at least one metric (e.g. fid), or metrics=none to train "
                         "without evaluating")
    for m in top["metrics"]:
        registry.get("metric", m)
    if isinstance(top["loggers"], str):
        top["loggers"] = tuple(n.strip() for n in top["loggers"].split(",") if n.strip())
    top["loggers"] = tuple(n for n in top["loggers"] if n != "none")
    for name in top["loggers"]:
        registry.get("logger", name)
    if top["metrics"] and top["primary_metric"] not in top["metrics"]:
        if "primary_metric" in user:
            raise UsageError(f"primary_metric {top['primary_metric']} is not among the metrics computed "
                             f"({', '.join(top['metrics'])}); add it with --metric {top['primary_metric']}")
        # the default headline was not asked for: rank by FID if computed, else by the first metric
        top["primary_metric"] = "fid" if "fid" in top["metrics"] else top["metrics"][0]
    options: dict[str, dict[str, Any]] = {}
    for kind in KINDS:
        if kind == "metric":
            # metric options apply to every selected metric that accepts them
            merged: dict[str, Any] = {}
            for m in top["metrics"]:
                merged.update(plugin_options(registry.get("metric", m).cls, CONTEXT_KEYS))
            defaults = merged
        elif kind == "logger":  # like metrics: each selected logger takes the `logger.*` options it accepts
            defaults = {}
            for name in top["loggers"]:
                defaults.update(plugin_options(registry.get("logger", name).cls, CONTEXT_KEYS))
        else:
            defaults = plugin_options(classes[kind], CONTEXT_KEYS)
        resolved = dict(defaults)
        for opt, value in unflatten_options(presets).get(kind, {}).items():
            if opt in defaults:
                resolved[opt] = coerce(value, defaults[opt], f"{kind}.{opt}")
        for opt, value in unflatten_options(user).get(kind, {}).items():
            key = f"{kind}.{opt}"
            if opt not in defaults:
                name = ", ".join(top["metrics"]) if kind == "metric" else \
                    ", ".join(top["loggers"]) or "(none: --logger NAME)" if kind == "logger" else top[kind]
                listed = ", ".join(sorted(defaults)) or "(none)"
                raise UsageError(f"unknown option {key} for {kind} {name}; known options: {listed}")
            resolved[opt] = coerce(value, defaults[opt], key)
        options[kind] = dict(sorted(resolved.items()))
    cfg = RunConfig(**top, options=options)
    validate(cfg)
    return cfg


def for_chosen_plugins(user: dict[str, Any], chosen: dict[str, str]) -> dict[str, Any]:
    """Keys `<kind>:<plugin>.<option>` apply as `<kind>.<option>` when that plugin is the chosen one and are
    dropped otherwise (a sweep TOML can set Stage-I options for the proto arms beside `random`)."""
    out = {k: v for k, v in user.items() if ":" not in k.split(".", 1)[0]}
    for key, value in user.items():
        head, _, option = key.partition(".")
        if ":" in head and head.split(":", 1)[1] == chosen.get(head.split(":", 1)[0]):
            out.setdefault(f"{head.split(':', 1)[0]}.{option}", value)
    return out


def build_metrics(cfg: RunConfig, registry: Registry, context: dict[str, Any]) -> list[Any]:
    """The config's metrics, each given the merged `metric.*` options it accepts."""
    metrics = []
    for name in cfg.metrics:
        accepted = plugin_options(registry.get("metric", name).cls, CONTEXT_KEYS)
        options = {k: v for k, v in cfg.options["metric"].items() if k in accepted}
        metrics.append(registry.build("metric", name, options, context))
    return metrics


def check_out(out: str | Path, write: bool = True) -> None:
    """`--out` must be a folder, or a path where one can be made (with `write`, by this user, on a writable
    disk: tried, then undone). Checked after the config and before anything is written."""
    import os
    import tempfile

    path = Path(out)
    if path.exists() and not path.is_dir():
        raise UsageError(f"--out {out}: is a file, not a folder")
    missing = []
    ancestor = path
    while not ancestor.exists() and ancestor != ancestor.parent:
        missing.append(ancestor)
        ancestor = ancestor.parent
    if ancestor.exists() and not ancestor.is_dir():
        raise UsageError(f"--out {out}: {ancestor} is a file, so no folder can be made below it")
    if not write:
        return
    made: list[Path] = []
    try:
        for folder in reversed(missing):
            folder.mkdir()
            made.append(folder)
        if not os.access(path, os.W_OK | os.X_OK):
            raise PermissionError(13, "Permission denied")
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise UsageError(f"--out {out}: cannot write there: {exc.strerror or exc}") from None
    finally:
        for folder in reversed(made):
            folder.rmdir()


#: past this a run would not end: 1e12 images is ~30 years at 1,000 images/s
MAX_IMAGES = 10**12
MAX_SEED = 2**32 - 1  # seeds are scaled (seed * 1000, seed * 7919) and must stay inside torch's 64 bits


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
        from protobench.diffusion import make_betas

        betas = make_betas(cfg.schedule, cfg.timesteps)
        return bool(((betas > 0) & (betas < 1)).all())

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
