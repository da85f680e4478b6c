"""Checkpoints: `<run>/checkpoints/step-XXXXXXXX.safetensors` (weights, optimizer state, generator states),
its manifest `step-XXXXXXXX.json` (step, ledger, evaluations so far, optimizer metadata, and the sha256 of
the tensor file), and `latest.json`, a copy of the newest manifest. Loading checks the checksum and falls
back to the previous checkpoint when the newest is damaged."""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file
from torch import Tensor

from protobench.cache import sha256_file
from protobench.diskspace import is_no_space
from protobench.io import atomic_write_json, check_no_symlinks, warn

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
