"""The one on-disk cache: Stage-I prototypes, domain evaluators, real-data features, auxiliary classifiers.

An entry is a folder `<cache>/<kind>/<key>/`, the key naming everything its contents depend on. It holds
payload files and `manifest.json` with the sha256 of each payload and the entry's metadata. The entry is
built in a temporary folder, the manifest written last, and the folder renamed into place, so an entry
is complete or absent. Every load checks every payload against the manifest; a damaged entry is named in
one line on stderr, removed, and the caller builds it again.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from protobench.io import warn

MANIFEST = "manifest.json"
TENSORS = "tensors.safetensors"
SCHEME = 1  # bump when the manifest's format changes


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def entry_path(root: str | os.PathLike, kind: str, key: str) -> Path:
    if not key or "/" in key or "\\" in key or key.startswith("."):
        raise ValueError(f"a cache key is a plain name, got {key!r}")
    return Path(root) / kind / key


class Damaged(Exception):
    """An entry whose manifest or payload does not check out."""


def _verify(path: Path) -> dict[str, Any]:
    try:
        manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise Damaged("no manifest") from None
    except (OSError, ValueError) as exc:
        raise Damaged(f"unreadable manifest ({type(exc).__name__})") from None
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if manifest.get("scheme") != SCHEME or not isinstance(files, dict) or not isinstance(manifest.get("meta"), dict):
        raise Damaged("manifest of another format")
    for name, digest in files.items():
        payload = path / name
        if not payload.is_file() or payload.is_symlink():
            raise Damaged(f"{name} is missing")
        if sha256_file(payload) != digest:
            raise Damaged(f"{name} does not match its checksum")
    return manifest


def lookup(root: str | os.PathLike, kind: str, key: str) -> tuple[Path, dict[str, Any]] | None:
    """(entry folder, metadata) of a verified entry; None if absent. A damaged entry is reported and removed."""
    path = entry_path(root, kind, key)
    if not path.exists():
        return None
    try:
        manifest = _verify(path)
    except Damaged as exc:
        warn(f"cache entry {path} is damaged ({exc}); rebuilding it")
        discard(path)
        return None
    return path, manifest["meta"]


def discard(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path, ignore_errors=True)


def store(root: str | os.PathLike, kind: str, key: str, writers: dict[str, Callable[[Path], None]],
          meta: dict[str, Any]) -> Path:
    """Build an entry: each writer writes its payload file, then the manifest, then the folder moves into place.

    If another process finished the same entry first, its entry is kept (same key, same contents)."""
    final = entry_path(root, kind, key)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{key}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    tmp.mkdir()
    try:
        files = {}
        for name, write in writers.items():
            if name == MANIFEST or "/" in name:
                raise ValueError(f"bad payload name {name!r}")
            write(tmp / name)
            files[name] = sha256_file(tmp / name)
        manifest = {"scheme": SCHEME, "kind": kind, "key": key, "files": files, "meta": meta}
        with open(tmp / MANIFEST, "w", encoding="utf-8") as fh:
            json.dump(manifest, fh, indent=2, sort_keys=True, default=str)
            fh.flush()
            os.fsync(fh.fileno())
        if final.exists() or final.is_symlink():
            try:
                _verify(final)
                return final  # a concurrent builder got there first
            except Damaged:
                discard(final)
        try:
            os.rename(tmp, final)
        except OSError:  # a concurrent builder renamed its complete entry in between
            if not final.is_dir():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


# ---------------------------------------------------------------------------------------------
# the common case: one safetensors payload plus metadata


def load_tensors(root: str | os.PathLike, kind: str, key: str, name: str = TENSORS):
    """(tensors, metadata, entry folder) of a verified entry, or None (absent or damaged: build it)."""
    from safetensors.torch import load_file

    found = lookup(root, kind, key)
    if found is None:
        return None
    path, meta = found
    try:
        return load_file(str(path / name)), meta, path
    except Exception as exc:  # checksummed but not loadable: written by a broken writer
        warn(f"cache entry {path} does not load ({type(exc).__name__}); rebuilding it")
        discard(path)
        return None


def save_tensors(root: str | os.PathLike, kind: str, key: str, tensors: dict[str, Any], meta: dict[str, Any],
                 name: str = TENSORS) -> Path:
    """Store `tensors` (contiguous CPU tensors) and `meta` as a verified entry; returns its folder."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    return store(root, kind, key, {name: lambda p: save_file(tensors, str(p))}, meta)
