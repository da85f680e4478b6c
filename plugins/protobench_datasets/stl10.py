"""`stl10`: STL-10's labelled images from a local copy of the binary version as distributed (stl10_binary/),
resized from 96×96 to 64×64 as in the paper (the size is an option). The unlabelled 100k images are not used.

torchvision's STL10 reader checks the official archive's md5; the format is simple enough to read here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from protobench import Dataset, DataSplit, UsageError
from protobench_datasets._local import PAPER_UNET, find_folder, read_lines

FOLDER = "stl10_binary"
FILES = ("train_X.bin", "train_y.bin", "test_X.bin", "test_y.bin", "class_names.txt")
EXPECTED = "train_X.bin, train_y.bin, test_X.bin, test_y.bin and class_names.txt, the binary version as distributed"
NATIVE = 96
PIXELS = 3 * NATIVE * NATIVE
CLASS_NAMES = ("airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck")


def read_images(path: Path) -> np.ndarray:
    """uint8 N×3×96×96 from an STL-10 *_X.bin: each image is 3 planes of 96×96 stored column-major."""
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size == 0 or raw.size % PIXELS:
        raise UsageError(f"{path}: size {raw.size} bytes is not a multiple of one 3×96×96 image ({PIXELS} bytes)")
    return raw.reshape(-1, 3, NATIVE, NATIVE).transpose(0, 1, 3, 2)


def read_labels(path: Path, n: int, num_classes: int) -> np.ndarray:
    """int64 labels 0..num_classes-1 from an STL-10 *_y.bin (stored as one byte each, 1..num_classes)."""
    raw = np.fromfile(path, dtype=np.uint8).astype(np.int64)
    if raw.size != n:
        raise UsageError(f"{path}: {raw.size} labels for {n} images")
    if raw.min() < 1 or raw.max() > num_classes:
        raise UsageError(f"{path}: labels must be 1..{num_classes}, found {raw.min()}..{raw.max()}")
    return raw - 1


class STL10Dataset(Dataset):
    """5,000 train / 8,000 test RGB images in 10 classes, read from `data_root`, resized to `size`."""

    name = "stl10"
    num_classes = 10
    class_names = CLASS_NAMES
    image_shape = (3, 64, 64)
    # paper A.2: batch 64 for STL-10, images resized 96 -> 64, the same U-Net as CIFAR-10
    presets = {
        "batch_size": 64,
        "budget": 10_000_000,
        "eval_every": 500_000,
        "eval_samples": 8_000,
        **PAPER_UNET,
    }
    evaluator_options = {"width": 32, "epochs": 20, "batch_size": 64, "lr": 1e-3}  # 5k images: more epochs

    def __init__(self, size: int = 64, data_root: str | None = None):
        if not 8 <= size <= NATIVE:
            raise ValueError(f"size must be in 8..{NATIVE} pixels, got {size}")
        self.size = size
        self.data_root = data_root
        self.image_shape = (3, size, size)
        self._splits: tuple[DataSplit, DataSplit] | None = None

    def split(self, folder: Path, which: str) -> DataSplit:
        images = read_images(folder / f"{which}_X.bin")
        labels = read_labels(folder / f"{which}_y.bin", len(images), self.num_classes)
        out = torch.empty((len(images), 3, self.size, self.size), dtype=torch.uint8)
        for start in range(0, len(images), 500):  # resize in chunks: bounded float memory
            chunk = torch.from_numpy(np.ascontiguousarray(images[start:start + 500]))
            out[start:start + len(chunk)] = self.resize(chunk)
        return DataSplit(out, torch.from_numpy(labels))

    def load(self) -> tuple[DataSplit, DataSplit]:
        if self._splits is None:
            folder = find_folder(self.data_root, self.name, FOLDER, FILES, EXPECTED)
            names = read_lines(folder / "class_names.txt")
            if len(names) != self.num_classes:
                raise UsageError(f"{folder / 'class_names.txt'}: expected {self.num_classes} class names, "
                                 f"found {len(names)}")
            self.class_names = tuple(names)
            self._splits = (self.split(folder, "train"), self.split(folder, "test"))
        return self._splits
