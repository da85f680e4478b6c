"""Checkpoints: `<run>/checkpoints/step-XXXXXXXX.safetensors` (weights, optimizer state, generator states),
its manifest `step-XXXXXXXX.json` (step, ledger, evaluations so far, optimizer metadata, and the sha256 of
the tensor file), and `latest.json`, a copy of the newest manifest. Loading checks the checksum and falls
back to the previous checkpoint when the newest is damaged. A train state is saved and restored here, ZeRO's
sharded optimizer state included (gathered into whole fp32 tensors, so any number of processes resumes it)."""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from protobench.cache import sha256_file
from protobench.diskspace import is_no_space, no_space_reason
from protobench.errors import NoSpace, UsageError
from protobench.io import atomic_write_json, check_no_symlinks, warn
from protobench.ledger import Ledger

KEEP = 2  # checkpoints kept: the newest and the one before it


def flatten_optimizer(state: dict) -> tuple[dict[str, Tensor], dict]:
    """An optimizer state_dict as safetensors tensors plus JSON metadata."""
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


def unflatten_optimizer(tensors: dict[str, Tensor], meta: dict) -> dict:
    state = {}
    for pid, pstate in meta["state"].items():
        state[int(pid)] = {k: (tensors[f"optim.{pid}.{k}"] if v == "__tensor__" else v) for k, v in pstate.items()}
    return {"state": state, "param_groups": meta["param_groups"]}


def prefixed(prefix: str, sd: dict[str, Tensor]) -> dict[str, Tensor]:
    return {f"{prefix}.{k}": v.detach().cpu().contiguous() for k, v in sd.items()}


def strip(prefix: str, tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    n = len(prefix) + 1
    return {k[n:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}


def save_checkpoint(ckpt_dir: Path, step: int, tensors: dict[str, Tensor], meta: dict[str, Any]) -> str:
    """Write the tensors, then their manifest `step-XXXXXXXX.json` (metadata + the file's sha256), then
    latest.json (the same manifest); keep the newest KEEP. Returns the tensor file's name."""
    ckpt_dir = Path(ckpt_dir)
    check_no_symlinks(ckpt_dir / "latest.json", ckpt_dir.parent)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    name = f"step-{step:08d}.safetensors"
    tmp = ckpt_dir / f".{name}.tmp"
    new_files = [p for p in (ckpt_dir / name, ckpt_dir / f"step-{step:08d}.json") if not p.exists()]
    try:
        save_file(tensors, str(tmp))
        digest = sha256_file(tmp)
        os.replace(tmp, ckpt_dir / name)
        manifest = {**meta, "file": name, "step": step, "sha256": digest}
        atomic_write_json(ckpt_dir / f"step-{step:08d}.json", manifest, within=ckpt_dir.parent)
        atomic_write_json(ckpt_dir / "latest.json", manifest, within=ckpt_dir.parent)
    except BaseException as exc:  # latest.json still names the previous good checkpoint: drop the half-made one
        for leftover in (tmp, *new_files):
            leftover.unlink(missing_ok=True)
        if is_no_space(exc) and not isinstance(exc, OSError):  # safetensors wraps the OSError in its own type
            raise OSError(errno.ENOSPC, "No space left on device", str(ckpt_dir / name)) from exc
        raise
    for old in sorted(ckpt_dir.glob("step-*.safetensors"))[:-KEEP]:
        old.unlink()
        old.with_suffix(".json").unlink(missing_ok=True)
    for old in sorted((ckpt_dir / "deepspeed").glob("step-*"))[:-KEEP]:
        shutil.rmtree(old, ignore_errors=True)
    return name


def full_disk_stop(run_id: str, run_dir: Path, exc: BaseException | None = None) -> NoSpace:
    """The stop a full disk makes a run take: what it kept (the last good checkpoint), and the path `exc` could not
    write (the run folder when unknown: a job that had no room to say which)."""
    path, reason = no_space_reason(exc, run_dir)
    latest = load_latest(Path(run_dir) / "checkpoints", quiet=True) or {}
    return NoSpace(run_id, int(latest.get("images_seen", 0)), latest.get("file"), path, reason)


class BadCheckpoint(Exception):
    """A checkpoint file or manifest that does not check out (the message says why)."""


def _read_manifest(path: Path) -> dict[str, Any]:
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BadCheckpoint(f"{path.name} is unreadable ({type(exc).__name__})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("file"), str) or "/" in meta["file"]:
        raise BadCheckpoint(f"{path.name} does not name a checkpoint file")
    return meta


def _load_verified(ckpt_dir: Path, meta: dict[str, Any]) -> dict[str, Tensor]:
    path = ckpt_dir / meta["file"]
    if not path.is_file():
        raise BadCheckpoint(f"{meta['file']} is missing")
    if sha256_file(path) != meta.get("sha256"):  # a manifest without its checksum is damaged too
        raise BadCheckpoint(f"{meta['file']} does not match its checksum")
    try:
        return load_file(str(path))
    except Exception as exc:  # safetensors raises its own error type for a damaged header
        raise BadCheckpoint(f"{meta['file']} does not load ({type(exc).__name__})") from None


def load_latest(ckpt_dir: Path, quiet: bool = False) -> dict[str, Any] | None:
    """The newest checkpoint that checks out: its metadata, with its tensors under "tensors".

    latest.json first, then the manifests of older checkpoints, newest first; each damaged one is named in
    one line on stderr. None when there is no checkpoint at all, or none that loads (also said)."""
    ckpt_dir = Path(ckpt_dir)
    latest = ckpt_dir / "latest.json"
    manifests = sorted(ckpt_dir.glob("step-*.json"), reverse=True)
    candidates = ([latest] if latest.exists() else []) + manifests
    if not candidates:
        return None
    tried: set[str] = set()
    failed = False
    for path in candidates:
        try:
            meta = _read_manifest(path)
            if meta["file"] in tried:
                continue
            tried.add(meta["file"])
            meta["tensors"] = _load_verified(ckpt_dir, meta)
        except BadCheckpoint as exc:
            failed = True
            if not quiet:
                warn(f"damaged checkpoint in {ckpt_dir}: {exc}; trying the one before")
            continue
        if failed and not quiet:
            warn(f"using checkpoint {meta['file']} (step {meta.get('step')}) instead")
        return meta
    if not quiet:
        warn(f"no checkpoint in {ckpt_dir} loads")
    return None


# ---------------------------------------------------------------------------------------------
# a train state (training.state.TrainState), saved and restored


def save_state(ctx, state) -> str | None:
    """Save the train state (atomic, checksummed) under the run's checkpoints; the file's name on the main
    process. A collective under DeepSpeed: every rank calls it."""
    opt_tensors: dict[str, Tensor] = {}
    opt_meta: dict[str, Any] = {}
    if state.deepspeed_owns_optimizer:
        # ZeRO shards or DeepSpeed's bf16/fp16 optimizer: gathered into whole fp32 tensors (a collective, every
        # rank), saved in the one safetensors file like any other state; nothing pickled
        opt_tensors, opt_meta = consolidated_optimizer_state(state.engine)
    if not ctx.dist.main:
        return None
    tensors = {**prefixed("model", state.module.state_dict()), **prefixed("ema", state.ema.model.state_dict())}
    if not state.deepspeed_owns_optimizer:
        opt_tensors, opt_meta = flatten_optimizer(state.optimizer.state_dict())
    tensors.update(opt_tensors)
    tensors["rng.train"] = state.train_gen.get_state()
    tensors["rng.torch"] = torch.get_rng_state()
    name = save_checkpoint(ctx.dir / "checkpoints", state.step, tensors, {
        "images_seen": state.images_seen, "ledger": state.ledger.snapshot(), "ema_updates": state.ema.updates,
        "optimizer": opt_meta, "evals": state.evals, "prepare_work": state.prepare_work,
        "precision": state.precision.state_dict(),
    })
    ctx.event("checkpoint", file=name, step=state.step, images_seen=state.images_seen)
    return name


def restore_state(state, checkpoint: dict[str, Any]) -> None:
    """Set a freshly built train state to what `checkpoint` (from `load_latest`) holds."""
    tensors = checkpoint["tensors"]
    state.module.load_state_dict(strip("model", tensors))
    state.ema.model.load_state_dict(strip("ema", tensors))
    state.ema.updates = checkpoint["ema_updates"]
    if checkpoint["optimizer"].get("consolidated") == "deepspeed":
        if not state.deepspeed_owns_optimizer:
            raise UsageError("this checkpoint's optimizer state is DeepSpeed's (ZeRO or bf16/fp16); resume it "
                             "under DeepSpeed (--gpus > 1, or zero_stage 1/2) with the same precision (any number of processes)")
        load_consolidated_optimizer_state(state.engine, {k: v for k, v in tensors.items() if k.startswith("optim.")},
                                          checkpoint["optimizer"])
    else:
        state.optimizer.load_state_dict(unflatten_optimizer(tensors, checkpoint["optimizer"]))
    state.train_gen.set_state(tensors["rng.train"])
    if state.world == 1:
        torch.set_rng_state(tensors["rng.torch"])
    state.step = checkpoint["step"]
    state.images_seen = checkpoint["images_seen"]
    state.ledger = Ledger(state.world, checkpoint["ledger"])
    state.evals = list(checkpoint["evals"])
    state.prepare_work = dict(checkpoint.get("prepare_work") or state.prepare_work)
    state.precision.load_state_dict(checkpoint.get("precision") or {})


# ---------------------------------------------------------------------------------------------
# ZeRO-1/2 (and DeepSpeed's bf16/fp16 optimizers): one consolidated safetensors checkpoint, nothing pickled

ADAM_STATE = ("exp_avg", "exp_avg_sq")


def _trainable(engine) -> list:
    return [p for p in engine.module.parameters() if p.requires_grad]


def _json_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str)) or (
        isinstance(value, (list, tuple)) and all(isinstance(v, (int, float)) for v in value))


def consolidated_optimizer_state(engine) -> tuple[dict[str, Any], dict[str, Any]]:
    """The whole optimizer state of a DeepSpeed engine that shards (ZeRO-1/2) or wraps (bf16/fp16) its
    optimizer, gathered from every rank: per trainable parameter i (in `module.parameters()` order) its fp32
    master weights `optim.<i>.master` and Adam moments `optim.<i>.exp_avg`, `optim.<i>.exp_avg_sq`, on the
    CPU, plus JSON metadata (step count, hyper-parameters, loss scale). A collective: every rank calls it;
    rank 0 writes the tensors with safetensors. Independent of the number of processes that saved it."""
    from deepspeed.utils import safe_get_full_fp32_param, safe_get_full_optimizer_state

    tensors: dict[str, Any] = {}
    for i, p in enumerate(_trainable(engine)):
        master = safe_get_full_fp32_param(p)
        if master is None:
            raise UsageError("this DeepSpeed optimizer keeps no per-parameter fp32 state to gather "
                             "(fp16 without ZeRO): use zero_stage=1 or 2 with fp16")
        tensors[f"optim.{i}.master"] = master.detach().float().cpu()
        for key in ADAM_STATE:
            tensors[f"optim.{i}.{key}"] = safe_get_full_optimizer_state(p, key).detach().float().cpu()
    inner = engine.optimizer.optimizer  # the torch AdamW over this rank's flat fp32 partitions
    steps = [float(s["step"]) for s in inner.state.values() if "step" in s]
    meta: dict[str, Any] = {
        "consolidated": "deepspeed", "step": max(steps, default=0.0),
        "param_groups": [{k: v for k, v in g.items() if k != "params" and _json_scalar(v)} for g in inner.param_groups],
    }
    scaler = getattr(engine.optimizer, "loss_scaler", None)
    if scaler is not None and hasattr(scaler, "cur_scale"):
        meta["loss_scale"] = float(scaler.cur_scale)
    return tensors, meta


def _ensure_optimizer_state(engine) -> None:
    """A fresh engine's AdamW has no state until its first step, and DeepSpeed links each parameter to its
    slice of that state only then: create the (zero) state as AdamW would, and let DeepSpeed link it."""
    inner = engine.optimizer.optimizer
    if inner.state or not hasattr(engine.optimizer, "_lazy_init_hp_params_optimizer_state"):
        return
    for group in inner.param_groups:
        on_device = group.get("fused") or group.get("capturable")
        for flat in group["params"]:
            inner.state[flat] = {"step": torch.zeros((), dtype=torch.float32, device=flat.device if on_device else "cpu"),
                                 "exp_avg": torch.zeros_like(flat), "exp_avg_sq": torch.zeros_like(flat)}
    engine.optimizer._hp_optimizer_states_linked = False
    engine.optimizer._lazy_init_hp_params_optimizer_state()


def load_consolidated_optimizer_state(engine, tensors: dict[str, Any], meta: dict[str, Any]) -> None:
    """Restore what `consolidated_optimizer_state` saved, into an engine with any number of processes: each
    rank takes its shard of the master weights and moments; the module's own (possibly bf16) weights are
    set from the fp32 masters."""
    from deepspeed.utils import safe_set_full_fp32_param, safe_set_full_optimizer_state

    _ensure_optimizer_state(engine)
    params = _trainable(engine)
    if f"optim.{len(params) - 1}.master" not in tensors or f"optim.{len(params)}.master" in tensors:
        raise UsageError("this checkpoint's optimizer state was saved for a different model")
    for i, p in enumerate(params):
        master = tensors[f"optim.{i}.master"].to(p.device)
        safe_set_full_fp32_param(p, master)
        for key in ADAM_STATE:
            safe_set_full_optimizer_state(p, tensors[f"optim.{i}.{key}"].to(p.device), key)
        with torch.no_grad():
            p.data.copy_(master.view_as(p.data))
    inner = engine.optimizer.optimizer
    for state in inner.state.values():
        if "step" in state:
            step = state["step"]
            state["step"] = torch.full_like(step, meta["step"]) if torch.is_tensor(step) else type(step)(meta["step"])
    for group, saved in zip(inner.param_groups, meta["param_groups"], strict=True):
        group.update({k: (tuple(v) if isinstance(group.get(k), tuple) else v) for k, v in saved.items()})
    if "loss_scale" in meta:
        engine.optimizer.loss_scaler.cur_scale = meta["loss_scale"]
