"""`cifar10`: CIFAR-10 from a local copy of the python version as distributed (cifar-10-batches-py/).

torchvision's CIFAR10 reader refuses any file whose md5 is not the official one, so the batches are read
here, with an unpickler that only admits what the format contains (dicts, lists, bytes and numpy uint8
arrays): nothing executable is unpickled."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from protobench import Dataset, DataSplit, UsageError
from protobench_datasets._local import PAPER_UNET, find_folder

FOLDER = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
EXPECTED = "data_batch_1..5, test_batch and batches.meta, the python-pickle version as distributed"
CLASS_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

# what a CIFAR batch pickle may reference (written by numpy 1.x from Python 2, or by numpy 2)
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"): ("numpy._core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"): ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"): ("numpy", "ndarray"),
    ("numpy", "dtype"): ("numpy", "dtype"),
    ("_codecs", "encode"): ("_codecs", "encode"),
}


class _BatchUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        target = _ALLOWED.get((module, name))
        if target is None:
            raise pickle.UnpicklingError(f"{module}.{name} is not part of the CIFAR batch format")
        import importlib

        return getattr(importlib.import_module(target[0]), target[1])


def read_batch(path: Path) -> dict[str, Any]:
    """One pickled batch as a dict with str keys (the files have bytes keys: pickle encoding="bytes")."""
    try:
        with open(path, "rb") as fh:
            obj = _BatchUnpickler(fh, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError, OSError) as exc:
        raise UsageError(f"{path}: not a CIFAR-10 python batch ({exc})") from None
    if not isinstance(obj, dict):
        raise UsageError(f"{path}: not a CIFAR-10 python batch (a {type(obj).__name__}, expected a dict)")
    return {k.decode("latin1") if isinstance(k, bytes) else str(k): v for k, v in obj.items()}


def batch_split(path: Path, label_key: str = "labels") -> DataSplit:
    batch = read_batch(path)
    if "data" not in batch or label_key not in batch:
        raise UsageError(f"{path}: a CIFAR-10 batch needs 'data' and '{label_key}' entries, found {sorted(batch)}")
    data = np.asarray(batch["data"])
    labels = np.asarray(batch[label_key], dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(labels):
        raise UsageError(f"{path}: expected 'data' uint8 N×3072 with N labels, got {data.dtype} {data.shape} "
                         f"and {len(labels)} labels")
    if len(labels) and (labels.min() < 0 or labels.max() > 9):
        raise UsageError(f"{path}: labels must be 0..9, found {labels.min()}..{labels.max()}")
    # each row is the red, green and blue 32×32 planes in row-major order
    images = torch.from_numpy(np.ascontiguousarray(data.reshape(-1, 3, 32, 32)))
    return DataSplit(images, torch.from_numpy(labels))


def concat(splits: list[DataSplit]) -> DataSplit:
    return DataSplit(torch.cat([s.images for s in splits]), torch.cat([s.labels for s in splits]))


class CIFAR10Dataset(Dataset):
    """50,000 train / 10,000 test 32×32 RGB images in 10 classes, read from `data_root`."""

    name = "cifar10"
    num_classes = 10
    class_names = CLASS_NAMES
    image_shape = (3, 32, 32)
    # paper A.2: batch 128, AdamW 2e-4, U-Net base 64 with multipliers (2, 2, 4, 4), dropout 0.1;
    # FID checked every 100 epochs (Fig. 3: 5M images), best reached within ~1000 epochs.
    presets = {
        "batch_size": 128,
        "budget": 50_000_000,
        "eval_every": 5_000_000,
        "eval_samples": 10_000,
        **PAPER_UNET,
    }
    # the evaluator trains on the CPU (protobench_metrics): width 32, 10 epochs is ~20 CPU-minutes once, cached
    evaluator_options = {"width": 32, "epochs": 10, "batch_size": 128, "lr": 1e-3}

    def __init__(self, data_root: str | None = None):
        self.data_root = data_root
        self._splits: tuple[DataSplit, DataSplit] | None = None

    def load(self) -> tuple[DataSplit, DataSplit]:
        if self._splits is None:
            folder = find_folder(self.data_root, self.name, FOLDER, (*TRAIN_BATCHES, "test_batch", "batches.meta"),
                                 EXPECTED)
            meta = read_batch(folder / "batches.meta")
            names = meta.get("label_names")
            if not isinstance(names, list) or len(names) != 10:
                raise UsageError(f"{folder / 'batches.meta'}: expected 'label_names', a list of 10 class names")
            self.class_names = tuple(n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names)
            train = concat([batch_split(folder / b) for b in TRAIN_BATCHES])
            self._splits = (train, batch_split(folder / "test_batch"))
        return self._splits
