"""`tiny-imagenet`: Tiny ImageNet (200 classes, 64×64) from a local copy of tiny-imagenet-200/ as distributed.

The train split is train/<wnid>/images/*.JPEG; the test split is the labelled val split
(val/images/*.JPEG with val/val_annotations.txt), since the distributed test/ folder has no labels.
Classes are the wnids of wnids.txt in sorted order, named by the first name words.txt gives them.
Decoding 110k JPEGs takes a while, so the decoded arrays are cached (see `_local.cache_root`), keyed by
the files' names, sizes and modification times."""

from __future__ import annotations

from pathlib import Path

from protobench import Dataset, DataSplit, UsageError
from protobench_datasets._local import (
    PAPER_UNET,
    decoded_splits,
    find_folder,
    read_lines,
)

FOLDER = "tiny-imagenet-200"
EXPECTED = ("wnids.txt, words.txt, train/<wnid>/images/*.JPEG and val/images/*.JPEG with "
            "val/val_annotations.txt, as distributed")
EXTENSIONS = (".jpeg", ".jpg", ".png")


class TinyImageNetDataset(Dataset):
    """100,000 train / 10,000 test (the val split) 64×64 RGB images in 200 classes, read from `data_root`."""

    name = "tiny-imagenet"
    num_classes = 200
    class_names: tuple[str, ...] = ()
    image_shape = (3, 64, 64)
    # paper A.2: batch 64 for Tiny ImageNet, native 64×64, the same U-Net as CIFAR-10
    presets = {
        "batch_size": 64,
        "budget": 20_000_000,
        "eval_every": 2_000_000,
        "eval_samples": 10_000,
        **PAPER_UNET,
    }
    evaluator_options = {"width": 32, "epochs": 5, "batch_size": 128, "lr": 1e-3}  # 100k images: fewer epochs

    def __init__(self, cache: bool = True, data_root: str | None = None):
        self.cache = cache
        self.data_root = data_root
        self._splits: tuple[DataSplit, DataSplit] | None = None

    def files(self, folder: Path) -> tuple[list[str], list[tuple[Path, int]], list[tuple[Path, int]]]:
        """(sorted wnids, train (path, label) pairs, val (path, label) pairs)."""
        wnids = sorted(set(read_lines(folder / "wnids.txt")))
        if not wnids:
            raise UsageError(f"{folder / 'wnids.txt'}: no class ids (expected one wnid per line)")
        index = {w: i for i, w in enumerate(wnids)}
        train: list[tuple[Path, int]] = []
        for wnid in wnids:
            images = folder / "train" / wnid / "images"
            found = sorted(p for p in images.glob("*") if p.suffix.lower() in EXTENSIONS) if images.is_dir() else []
            if not found:
                raise UsageError(f"{images}: no images for class {wnid} (expected train/{wnid}/images/*.JPEG)")
            train += [(p, index[wnid]) for p in found]
        test: list[tuple[Path, int]] = []
        annotations = folder / "val" / "val_annotations.txt"
        for n, line in enumerate(read_lines(annotations), 1):
            fields = line.split("\t") if "\t" in line else line.split()
            if len(fields) < 2:
                raise UsageError(f"{annotations}:{n}: expected '<file>\\t<wnid>\\t...', got {line!r}")
            if fields[1] not in index:
                raise UsageError(f"{annotations}:{n}: wnid {fields[1]} is not in wnids.txt")
            path = folder / "val" / "images" / fields[0]
            if not path.is_file():
                raise UsageError(f"{path}: listed in val_annotations.txt but missing")
            test.append((path, index[fields[1]]))
        if not test:
            raise UsageError(f"{annotations}: no validation images listed")
        return wnids, train, test

    def load(self) -> tuple[DataSplit, DataSplit]:
        if self._splits is not None:
            return self._splits
        folder = find_folder(self.data_root, self.name, FOLDER,
                             ("wnids.txt", "words.txt", "train", "val/images", "val/val_annotations.txt"), EXPECTED)
        wnids, train, test = self.files(folder)
        words: dict[str, str] = {}
        for line in read_lines(folder / "words.txt"):
            wnid, _, text = line.partition("\t")
            words[wnid.strip()] = text.split(",")[0].strip() or wnid.strip()
        self.num_classes = len(wnids)
        self.class_names = tuple(words.get(w, w) for w in wnids)
        self._splits = decoded_splits(self, folder, train, test, 3, 64, {}, self.cache)
        return self._splits
