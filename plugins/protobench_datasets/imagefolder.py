"""`imagefolder`: any labelled images laid out one folder per class, read from `data_root`.

Two layouts:
- `data_root/train/<class>/*` and `data_root/test/<class>/*`: the split as given. The classes are
  train/'s subfolders; test/ may lack a class but may not add one.
- `data_root/<class>/*`: one folder per class, split stratified by class into train and test with
  `test_fraction` and `split_seed` (scikit-learn's train_test_split, as `digits` does).

Class names are the folder names, sorted (torchvision's find_classes). Images (whatever torchvision or PIL
reads: PNG, JPEG, GIF, WebP, BMP, TIFF...) are converted to `channels` (3 RGB, 1 grey) and resized to
`size`×`size` with antialiased bilinear interpolation (Dataset.resize), without keeping the aspect ratio.
Decoded arrays are cached like tiny-imagenet's (option `cache`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from protobench import Dataset, DataSplit, UsageError
from protobench_datasets._local import decoded_splits

EXPECTED = "one subfolder of images per class, either directly or inside train/ and test/"


def list_classes(folder: Path) -> tuple[list[str], list[tuple[Path, int]]]:
    """(sorted class names, (path, label) pairs) of a folder of class folders, via torchvision's readers."""
    from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

    try:
        classes, index = find_classes(str(folder))
        samples = make_dataset(str(folder), index, extensions=IMG_EXTENSIONS)
    except FileNotFoundError as exc:
        raise UsageError(f"{folder}: {str(exc).splitlines()[0]} (expected {EXPECTED})") from None
    return classes, [(Path(p), int(label)) for p, label in samples]


class ImageFolderDataset(Dataset):
    name = "imagefolder"
    num_classes = 0
    class_names: tuple[str, ...] = ()
    image_shape = (3, 32, 32)
    presets = {"batch_size": 128, "budget": 1_000_000, "eval_every": 100_000, "eval_samples": 1_000}
    evaluator_options = {"width": 32, "epochs": 20, "batch_size": 128, "lr": 1e-3}

    def __init__(self, size: int = 32, channels: int = 3, test_fraction: float = 0.2, split_seed: int = 0,
                 cache: bool = True, data_root: str | None = None):
        if size < 4:
            raise ValueError(f"size must be >= 4 pixels, got {size}")
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels}")
        if not 0.0 < test_fraction < 1.0:
            raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
        self.size, self.channels, self.test_fraction, self.split_seed = size, channels, test_fraction, split_seed
        self.cache = cache
        self.data_root = data_root
        self.image_shape = (channels, size, size)
        self._splits: tuple[DataSplit, DataSplit] | None = None

    def root(self) -> Path:
        if self.data_root is None or str(self.data_root) == "":
            raise UsageError("dataset 'imagefolder' reads a local folder: pass --data-root DIR (or set "
                             f"$PROTOBENCH_DATA_ROOT) to a folder with {EXPECTED}")
        root = Path(self.data_root).expanduser()
        if not root.is_dir():
            raise UsageError(f"{root}: no such folder; dataset 'imagefolder' expects {EXPECTED}")
        return root

    def files(self, root: Path) -> tuple[list[str], list[tuple[Path, int]], list[tuple[Path, int]]]:
        """(class names, train pairs, test pairs) for either layout."""
        if (root / "train").is_dir() and (root / "test").is_dir():
            classes, train = list_classes(root / "train")
            test_classes, test = list_classes(root / "test")
            extra = sorted(set(test_classes) - set(classes))
            if extra:
                raise UsageError(f"{root / 'test'}: classes {', '.join(extra)} are not in {root / 'train'}")
            remap = {i: classes.index(c) for i, c in enumerate(test_classes)}
            return classes, train, [(p, remap[label]) for p, label in test]
        if (root / "train").is_dir() != (root / "test").is_dir():
            have, lack = ("train", "test") if (root / "train").is_dir() else ("test", "train")
            raise UsageError(f"{root}: has {have}/ but no {lack}/ ({EXPECTED})")
        from sklearn.model_selection import train_test_split

        classes, samples = list_classes(root)
        labels = np.array([label for _, label in samples])
        counts = np.bincount(labels, minlength=len(classes))
        if len(classes) < 2 or counts.min() < 2:
            raise UsageError(f"{root}: a stratified split needs at least 2 classes with at least 2 images each "
                             f"(found {len(classes)} classes, smallest has {counts.min()})")
        try:
            idx_train, idx_test = train_test_split(np.arange(len(samples)), test_size=self.test_fraction,
                                                   stratify=labels, random_state=self.split_seed)
        except ValueError as exc:
            raise UsageError(f"{root}: cannot split {len(samples)} images by class with test_fraction="
                             f"{self.test_fraction}: {exc}") from None
        return classes, [samples[i] for i in np.sort(idx_train)], [samples[i] for i in np.sort(idx_test)]

    def load(self) -> tuple[DataSplit, DataSplit]:
        if self._splits is not None:
            return self._splits
        root = self.root()
        classes, train, test = self.files(root)
        self.num_classes = len(classes)
        self.class_names = tuple(classes)
        options = {"size": self.size, "channels": self.channels, "test_fraction": self.test_fraction,
                   "split_seed": self.split_seed}
        self._splits = decoded_splits(self, root, train, test, self.channels, self.size, options, self.cache)
        return self._splits
