"""Shared by the datasets read from a local folder: finding the folder, decoding image files, and the
optional cache of decoded arrays. Nothing here downloads."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from protobench import DataSplit, UsageError

#: the paper's U-Net (ProtoDiffusion A.2: base 64, multipliers 2,2,4,4, dropout 0.1), shared by the real datasets'
#: presets; attention at 16 px is our choice (the paper does not say)
PAPER_UNET = {
    "denoiser.base_channels": 64,
    "denoiser.channel_mult": (2, 2, 4, 4),
    "denoiser.attention_resolutions": (16,),
    "denoiser.dropout": 0.1,
}


def find_folder(data_root: str | os.PathLike | None, dataset: str, folder: str, required: Sequence[str],
                expected: str) -> Path:
    """The dataset's folder: `data_root/folder`, or `data_root` itself when it is that folder.

    `required` are paths that must exist inside it; `expected` describes the layout in the error line."""
    if data_root is None or str(data_root) == "":
        raise UsageError(f"dataset {dataset!r} reads a local copy: pass --data-root DIR (or set "
                         f"$PROTOBENCH_DATA_ROOT) to a folder holding {folder}/ ({expected})")
    root = Path(data_root).expanduser()
    if not root.is_dir():
        raise UsageError(f"{root}: no such folder; dataset {dataset!r} expects it to hold {folder}/ ({expected})")
    if (root / folder).is_dir():
        where = root / folder
    elif any((root / r).exists() for r in required):
        where = root  # data_root is the dataset folder itself
    else:
        raise UsageError(f"{root}: no {folder}/ inside; dataset {dataset!r} expects {folder}/ ({expected})")
    missing = [r for r in required if not (where / r).exists()]
    if missing:
        raise UsageError(f"{where}: missing {', '.join(missing)}; dataset {dataset!r} expects {expected}")
    return where


def read_lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]


def decode_images(paths: Sequence[Path], channels: int, size: int, dataset) -> Tensor:
    """Decode image files to uint8 N×C×size×size with torchvision's ImageFolder loader (PIL, to RGB), then
    convert channels and resize exactly as `dataset.resize` does (so `protobench eval` matches)."""
    from torchvision.datasets.folder import pil_loader

    out = torch.empty((len(paths), channels, size, size), dtype=torch.uint8)
    groups: dict[tuple[int, int], list[tuple[int, np.ndarray]]] = {}
    for i, path in enumerate(paths):
        try:
            arr = np.asarray(pil_loader(str(path)))
        except (OSError, ValueError, SyntaxError) as exc:  # PIL raises these for damaged or unknown files
            raise UsageError(f"{path}: cannot read image ({exc})") from None
        groups.setdefault(arr.shape[:2], []).append((i, arr))
    for group in groups.values():  # images of one original size are converted together
        for start in range(0, len(group), 512):
            part = group[start:start + 512]
            batch = torch.from_numpy(np.stack([arr for _, arr in part])).permute(0, 3, 1, 2)
            out[[i for i, _ in part]] = dataset.resize(batch)
    return out


# ---------------------------------------------------------------------------------------------
# cache of decoded arrays (for folders of many small image files: Tiny ImageNet's 110k JPEGs)


def cache_root() -> Path:
    """$PROTOBENCH_CACHE/datasets, else $XDG_CACHE_HOME/protobench/datasets (~/.cache/...)."""
    if os.environ.get("PROTOBENCH_CACHE"):
        return Path(os.environ["PROTOBENCH_CACHE"]) / "datasets"
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "protobench" / "datasets"


def listing_key(name: str, folder: Path, files: Sequence[Path], options: dict) -> str:
    """Identity of a folder's decoded content: the files' paths, sizes and modification times, plus options."""
    digest = hashlib.sha256(json.dumps({"name": name, "folder": str(folder.resolve()), "options": options},
                                       sort_keys=True).encode())
    for f in files:
        st = f.stat()
        digest.update(f"{f}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:20]


def load_cached(name: str, key: str) -> tuple[DataSplit, DataSplit] | None:
    path = cache_root() / f"{name}-{key}.npz"
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            return tuple(DataSplit(torch.from_numpy(z[f"{s}_images"]), torch.from_numpy(z[f"{s}_labels"]))
                         for s in ("train", "test"))
    except (OSError, ValueError, KeyError, TypeError):
        return None  # a damaged cache entry is rebuilt


def save_cached(name: str, key: str, splits: tuple[DataSplit, DataSplit]) -> None:
    folder = cache_root()
    path = folder / f"{name}-{key}.npz"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{path.name}.{os.getpid()}.tmp"
        try:
            with open(tmp, "wb") as fh:
                np.savez(fh, **{f"{s}_{k}": getattr(split, k).numpy()
                                for s, split in zip(("train", "test"), splits, strict=True) for k in ("images", "labels")})
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    except OSError:
        pass  # the cache is an optimisation: an unwritable cache folder only costs the next load its decode


def decoded_splits(dataset, folder: Path, train: Sequence[tuple[Path, int]], test: Sequence[tuple[Path, int]],
                   channels: int, size: int, options: dict, cache: bool) -> tuple[DataSplit, DataSplit]:
    """Decode (path, label) lists into the train/test splits, through the .npz cache when `cache` is on."""
    key = listing_key(dataset.name, folder, [p for p, _ in [*train, *test]], options) if cache else ""
    splits = load_cached(dataset.name, key) if cache else None
    if splits is None:
        splits = tuple(
            DataSplit(decode_images([p for p, _ in pairs], channels, size, dataset),
                      torch.tensor([label for _, label in pairs], dtype=torch.int64))
            for pairs in (train, test)
        )
        if cache:
            save_cached(dataset.name, key, splits)
    return splits
