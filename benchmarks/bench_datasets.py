"""Throughput of each dataset pipeline: images/s to load a split into memory and turn it into float batches
in [-1, 1] (what the training loop consumes), as a ratio against `digits` measured in the same run.

Real copies of CIFAR-10 / STL-10 / Tiny ImageNet are not shipped, so by default each reader runs on folders
written here in the distributed formats (random pixels at the real image sizes; the number of images is
set by --scale). Pass --real NAME=DIR to time a real copy instead.

    python benchmarks/bench_datasets.py [--scale 0.1] [--real cifar10=~/data] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import pickle
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

BATCH = 128


def write_cifar(root: Path, n_per_batch: int, rng) -> None:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8),
                 b"labels": (np.arange(n_per_batch) % 10).tolist()}
        # protocol 4 stores the pixels as raw bytes, as the Python 2 originals do (py3's protocol 2 would go
        # through _codecs.encode, ~40× slower to read than the real files; the tests cover that path)
        (folder / name).write_bytes(pickle.dumps(batch, protocol=4))
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": names}, protocol=2))


def write_stl10(root: Path, n_train: int, n_test: int, rng) -> None:
    folder = root / "stl10_binary"
    folder.mkdir(parents=True)
    for split, n in (("train", n_train), ("test", n_test)):
        (folder / f"{split}_X.bin").write_bytes(rng.integers(0, 256, n * 3 * 96 * 96, dtype=np.uint8).tobytes())
        (folder / f"{split}_y.bin").write_bytes((np.arange(n) % 10 + 1).astype(np.uint8).tobytes())
    (folder / "class_names.txt").write_text("\n".join(f"class{i}" for i in range(10)) + "\n")


def smooth_image(rng, size: int) -> np.ndarray:
    """Photo-like content (a smooth field plus mild noise): JPEG/PNG sizes close to real images."""
    small = rng.integers(0, 256, (size // 8, size // 8, 3), dtype=np.uint8)
    img = np.asarray(Image.fromarray(small).resize((size, size), Image.BILINEAR)).astype(np.int16)
    return np.clip(img + rng.integers(-8, 8, img.shape), 0, 255).astype(np.uint8)


def write_tiny(root: Path, classes: int, per_class: int, val_per_class: int, rng) -> None:
    folder = root / "tiny-imagenet-200"
    wnids = [f"n{i:08d}" for i in range(classes)]
    (folder / "val" / "images").mkdir(parents=True)
    (folder / "wnids.txt").write_text("\n".join(wnids) + "\n")
    (folder / "words.txt").write_text("".join(f"{w}\tthing {w}\n" for w in wnids))
    lines = []
    for c, wnid in enumerate(wnids):
        d = folder / "train" / wnid / "images"
        d.mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(smooth_image(rng, 64)).save(d / f"{wnid}_{i}.JPEG", quality=90)
        for i in range(val_per_class):
            name = f"val_{c * val_per_class + i}.JPEG"
            Image.fromarray(smooth_image(rng, 64)).save(folder / "val" / "images" / name, quality=90)
            lines.append(f"{name}\t{wnid}\t0\t0\t63\t63")
    (folder / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")


def write_imagefolder(root: Path, classes: int, per_class: int, rng) -> None:
    for c in range(classes):
        d = root / f"class{c}"
        d.mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(smooth_image(rng, 32)).save(d / f"{i}.png")


def pipeline(name: str, options: dict, data_root: str | None) -> tuple[int, float, float]:
    """(images, seconds to load both splits, seconds to turn them into float batches)."""
    from protobench.plugins import get_registry

    registry = get_registry()
    start = time.perf_counter()
    ds = registry.build("dataset", name, options, {"data_root": data_root})
    train, test = ds.load()
    loaded = time.perf_counter()
    for split in (train, test):
        for i in range(0, len(split), BATCH):
            split.images[i:i + BATCH].float().div(127.5).sub(1.0)  # what DataSplit.as_float does, batched
    return len(train) + len(test), loaded - start, time.perf_counter() - loaded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=0.1, help="fraction of each real dataset's size to write")
    parser.add_argument("--repeat", type=int, default=3, help="best of N timings")
    parser.add_argument("--real", action="append", default=[], help="NAME=DIR: time a real copy instead")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    real = dict(item.split("=", 1) for item in args.real)
    rng = np.random.default_rng(0)
    tmp = Path(tempfile.mkdtemp(prefix="protobench-bench-"))
    os.environ["PROTOBENCH_CACHE"] = str(tmp / "cache")
    s = args.scale
    writers = {
        "cifar10": lambda r: write_cifar(r, max(10, int(10_000 * s)), rng),
        "stl10": lambda r: write_stl10(r, max(10, int(5_000 * s)), max(10, int(8_000 * s)), rng),
        "tiny-imagenet": lambda r: write_tiny(r, max(2, int(200 * s)), 500, 50, rng),
        "imagefolder": lambda r: write_imagefolder(r, 10, max(2, int(6_000 * s)), rng),
    }
    cases = [("digits", {}, None, "scikit-learn's bundled digits (1797 8×8)")]
    cases.append(("shapes", {"n_train": max(10, int(50_000 * s)), "n_test": max(10, int(10_000 * s))}, None,
                  "generated in memory, 32×32"))
    for name, write in writers.items():
        if name in real:
            cases.append((name, {}, real[name], f"real copy at {real[name]}"))
            continue
        root = tmp / name
        write(root)
        cases.append((name, {"cache": False} if name in ("tiny-imagenet", "imagefolder") else {}, str(root),
                      "written in the distributed format, random/smooth pixels"))
        if name in ("tiny-imagenet", "imagefolder"):
            cases.append((f"{name} (cached)", {}, str(root), "decoded arrays from the .npz cache"))
    rows = []
    for label, options, root, what in cases:
        name = label.split(" ")[0]
        pipeline(name, options, root)  # untimed: imports, page cache, and the .npz cache for "(cached)"
        best = None
        for _ in range(args.repeat):
            n, load_s, float_s = pipeline(name, options, root)
            if best is None or load_s + float_s < best[1] + best[2]:
                best = (n, load_s, float_s)
        rows.append((label, what, *best))
    digits_rate = rows[0][2] / (rows[0][3] + rows[0][4])
    print(f"# dataset pipelines: load both splits + float batches of {BATCH}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}, best of {args.repeat}")
    print(f"{'dataset':<26} {'images':>8} {'load s':>8} {'float s':>8} {'images/s':>10} {'vs digits':>10}  tested on")
    for label, what, n, load_s, float_s in rows:
        rate = n / (load_s + float_s)
        print(f"{label:<26} {n:>8} {load_s:>8.3f} {float_s:>8.3f} {rate:>10.0f} {rate / digits_rate:>9.2f}x  {what}")


if __name__ == "__main__":
    main()
