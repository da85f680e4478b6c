"""Checkpoints: `<run>/checkpoints/step-XXXXXXXX.safetensors` (weights, optimizer state, generator states) and
`latest.json` (step, ledger, evaluations so far, optimizer metadata) naming the newest one."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file
from torch import Tensor

from protobench.io import atomic_write_json

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
    """Write the tensors, then latest.json pointing at them; keep the newest KEEP. Returns the file's name."""
    ckpt_dir = Path(ckpt_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    name = f"step-{step:08d}.safetensors"
    tmp = ckpt_dir / f".{name}.tmp"
    save_file(tensors, str(tmp))
    os.replace(tmp, ckpt_dir / name)
    atomic_write_json(ckpt_dir / "latest.json", {**meta, "file": name, "step": step})
    for old in sorted(ckpt_dir.glob("step-*.safetensors"))[:-KEEP]:
        old.unlink()
    for old in sorted((ckpt_dir / "deepspeed").glob("step-*"))[:-KEEP]:
        shutil.rmtree(old, ignore_errors=True)
    return name


def load_latest(ckpt_dir: Path) -> dict[str, Any] | None:
    """latest.json's metadata with its tensors under "tensors"; None when there is no checkpoint."""
    latest = Path(ckpt_dir) / "latest.json"
    if not latest.exists():
        return None
    meta = json.loads(latest.read_text())
    meta["tensors"] = load_file(str(Path(ckpt_dir) / meta["file"]))
    return meta
