"""ZeRO-1/2 optimizer state as one consolidated checkpoint, whatever the number of processes that saved it."""

from __future__ import annotations

from typing import Any

from protobench.errors import UsageError

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
    import torch

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
    import torch
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
