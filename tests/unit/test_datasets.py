"""Datasets read from local folders (cifar10, stl10, tiny-imagenet, imagefolder) and the procedural `shapes`.

Each real format is generated here, small (a few images per class), in the layout and encoding the
distributed files use, and read back through the plugin registry exactly as the CLI does."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from protobench.errors import UsageError
from protobench.plugins import get_registry

CIFAR_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    """Caches (decoded datasets, evaluators) go to the test's tmp folder."""
    path = tmp_path / "cache"
    monkeypatch.setenv("PROTOBENCH_CACHE", str(path))
    return path


def build(name: str, data_root=None, **options):
    """Construct a dataset the way the engine does: registry, user options, data_root as context."""
    return get_registry().build("dataset", name, options, {"data_root": None if data_root is None else str(data_root)})


def class_images(rng: np.random.Generator, labels: np.ndarray, size: int) -> np.ndarray:
    """uint8 N×3×size×size: a per-class base colour plus noise, so classes differ visibly."""
    base = (np.arange(10)[:, None] * np.array([25, 70, 140]) % 256)[labels]
    noise = rng.integers(-30, 30, (len(labels), 3, size, size))
    return np.clip(base[:, :, None, None] + noise, 0, 255).astype(np.uint8)


# -- on-disk formats, written as distributed ------------------------------------------------------


def write_cifar(root: Path, per_class_batch: int = 2, seed: int = 0) -> dict[str, np.ndarray]:
    """cifar-10-batches-py/ with pickled dicts with bytes keys (protocol 2, as the Python 2 originals)."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    out = {"train_x": [], "train_y": [], "test_x": [], "test_y": []}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        labels = rng.permutation(np.repeat(np.arange(10), per_class_batch))
        images = class_images(rng, labels, 32)
        batch = {b"batch_label": name.encode(), b"labels": labels.tolist(),
                 b"data": images.reshape(len(labels), 3072), b"filenames": [b"x.png"] * len(labels)}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
        split = "test" if name == "test_batch" else "train"
        out[f"{split}_x"].append(images)
        out[f"{split}_y"].append(labels)
    meta = {b"label_names": [n.encode() for n in CIFAR_NAMES], b"num_cases_per_batch": 10 * per_class_batch,
            b"num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return {k: np.concatenate(v) for k, v in out.items()}


def write_stl10(root: Path, n_train: int = 20, n_test: int = 10) -> dict[str, np.ndarray]:
    """stl10_binary/: *_X.bin of column-major 3×96×96 images, *_y.bin of labels 1..10, class_names.txt."""
    folder = root / "stl10_binary"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        labels = np.arange(n) % 10
        images = class_images(rng, labels, 96)
        images[:, 0, :10, :] = 255  # a bright band along the top: catches a row/column-major mix-up
        (folder / f"{split}_X.bin").write_bytes(images.transpose(0, 1, 3, 2).tobytes())  # column-major planes
        (folder / f"{split}_y.bin").write_bytes((labels + 1).astype(np.uint8).tobytes())
        out[f"{split}_x"], out[f"{split}_y"] = images, labels
    names = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]
    (folder / "class_names.txt").write_text("\n".join(names) + "\n")
    return out


def write_tiny_imagenet(root: Path, wnids=("n02", "n01", "n03"), per_class: int = 3, val_per_class: int = 2):
    """tiny-imagenet-200/ with wnids.txt (unsorted, as distributed), words.txt, train JPEGs, val JPEGs and
    val_annotations.txt. One training image is greyscale, as some in the real set are."""
    folder = root / "tiny-imagenet-200"
    (folder / "val" / "images").mkdir(parents=True)
    (folder / "test" / "images").mkdir(parents=True)
    (folder / "wnids.txt").write_text("\n".join(wnids) + "\n")
    words = {"n01": "goldfish, Carassius auratus", "n02": "tabby, tabby cat", "n03": "school bus",
             "n99": "unused entry"}
    (folder / "words.txt").write_text("".join(f"{w}\t{t}\n" for w, t in words.items()))
    rng = np.random.default_rng(2)
    sorted_ids = sorted(wnids)
    originals = {}
    annotations = []
    for wnid in wnids:
        label = sorted_ids.index(wnid)
        images_dir = folder / "train" / wnid / "images"
        images_dir.mkdir(parents=True)
        (folder / "train" / wnid / f"{wnid}_boxes.txt").write_text("")
        for i in range(per_class):
            img = np.full((64, 64, 3), (40 + 80 * label, 200 - 60 * label, 120), np.uint8)
            img[16:48, 16:48] = rng.integers(0, 255, 3, dtype=np.uint8)
            path = images_dir / f"{wnid}_{i}.JPEG"
            if wnid == wnids[0] and i == 0:
                Image.fromarray(img[:, :, 0]).save(path, format="JPEG", quality=95)  # greyscale JPEG
                img = np.repeat(img[:, :, :1], 3, axis=2)
            else:
                Image.fromarray(img).save(path, format="JPEG", quality=95)
            originals[path.name] = img
        for i in range(val_per_class):
            name = f"val_{label * val_per_class + i}.JPEG"
            img = np.full((64, 64, 3), (40 + 80 * label, 200 - 60 * label, 120), np.uint8)
            Image.fromarray(img).save(folder / "val" / "images" / name, format="JPEG", quality=95)
            annotations.append(f"{name}\t{wnid}\t0\t0\t63\t63")
            originals[name] = img
    (folder / "val" / "val_annotations.txt").write_text("\n".join(annotations) + "\n")
    return folder, originals


def write_imagefolder(root: Path, classes=("cat", "dog", "owl"), per_class: int = 5, size=(16, 16)):
    """<class>/<i>.png images; returns {path: HWC uint8 array}."""
    rng = np.random.default_rng(3)
    written = {}
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            img = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
            path = root / c / f"{i}.png"
            Image.fromarray(img).save(path)
            written[path] = img
    return written


# -- cifar10 --------------------------------------------------------------------------------------


def test_cifar10_reads_the_pickled_batches_pixel_for_pixel(tmp_path):
    truth = write_cifar(tmp_path)
    ds = build("cifar10", tmp_path)
    train, test = ds.load()
    assert ds.image_shape == (3, 32, 32) and ds.num_classes == 10 and ds.class_names == tuple(CIFAR_NAMES)
    assert len(train) == 100 and len(test) == 20
    assert torch.equal(train.images, torch.from_numpy(truth["train_x"]))
    assert torch.equal(train.labels, torch.from_numpy(truth["train_y"]))
    assert torch.equal(test.images, torch.from_numpy(truth["test_x"]))
    # data_root may also be the cifar-10-batches-py folder itself
    assert build("cifar10", tmp_path / "cifar-10-batches-py").checksum() == ds.checksum()


def test_cifar10_checksum_is_cached_and_follows_the_content(tmp_path):
    write_cifar(tmp_path / "a", seed=0)
    write_cifar(tmp_path / "b", seed=1)
    ds = build("cifar10", tmp_path / "a")
    first = ds.checksum()
    (tmp_path / "a" / "cifar-10-batches-py" / "test_batch").unlink()
    assert ds.checksum() == first  # computed once per instance, not re-read
    assert build("cifar10", tmp_path / "b").checksum() != first


def test_cifar10_missing_or_malformed_folder_is_one_line_naming_the_path(tmp_path):
    with pytest.raises(UsageError, match="--data-root"):
        build("cifar10").load()
    missing = tmp_path / "nowhere"
    with pytest.raises(UsageError) as err:
        build("cifar10", missing).load()
    assert str(missing) in str(err.value) and "data_batch_1..5" in str(err.value)
    write_cifar(tmp_path / "c")
    folder = tmp_path / "c" / "cifar-10-batches-py"
    (folder / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(UsageError) as err:
        build("cifar10", tmp_path / "c").load()
    assert str(folder / "data_batch_3") in str(err.value) and "\n" not in str(err.value)
    (folder / "data_batch_3").unlink()
    with pytest.raises(UsageError, match="missing data_batch_3"):
        build("cifar10", tmp_path / "c").load()


def test_cifar10_refuses_a_pickle_that_would_run_code(tmp_path):
    write_cifar(tmp_path)
    marker = tmp_path / "executed"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    (tmp_path / "cifar-10-batches-py" / "data_batch_1").write_bytes(pickle.dumps({b"data": Evil()}, protocol=2))
    with pytest.raises(UsageError, match="not part of the CIFAR batch format"):
        build("cifar10", tmp_path).load()
    assert not marker.exists()


# -- stl10 ----------------------------------------------------------------------------------------


def test_stl10_reads_column_major_binaries_and_resizes_like_dataset_resize(tmp_path):
    truth = write_stl10(tmp_path)
    native = build("stl10", tmp_path, size=96)
    train, test = native.load()
    assert torch.equal(train.images, torch.from_numpy(truth["train_x"]))
    assert torch.equal(test.labels, torch.from_numpy(truth["test_y"]))
    assert train.images[:, 0, :10].min() == 255  # the band is at the top, not down the left side
    assert native.class_names[7] == "monkey"

    paper = build("stl10", tmp_path)  # default 64×64, as in the paper
    small_train, small_test = paper.load()
    assert paper.image_shape == (3, 64, 64) and small_train.images.shape == (20, 3, 64, 64)
    assert torch.equal(small_train.images, paper.resize(train.images))  # the way `protobench eval` resizes
    assert len(small_test) == 10


def test_stl10_malformed_files_are_one_line(tmp_path):
    write_stl10(tmp_path)
    (tmp_path / "stl10_binary" / "test_X.bin").write_bytes(b"\0" * 1000)
    with pytest.raises(UsageError, match="not a multiple of one 3×96×96 image"):
        build("stl10", tmp_path).load()
    (tmp_path / "stl10_binary" / "test_y.bin").unlink()
    with pytest.raises(UsageError, match="missing test_y.bin"):
        build("stl10", tmp_path).load()


# -- tiny-imagenet --------------------------------------------------------------------------------


def test_tiny_imagenet_reads_the_distributed_layout_with_val_as_test(tmp_path, cache):
    folder, originals = write_tiny_imagenet(tmp_path)
    ds = build("tiny-imagenet", tmp_path)
    train, test = ds.load()
    assert ds.num_classes == 3 and ds.class_names == ("goldfish", "tabby", "school bus")  # sorted wnids
    assert len(train) == 9 and len(test) == 6
    assert train.images.shape[1:] == (3, 64, 64)
    assert test.labels.tolist() == [1, 1, 0, 0, 2, 2]  # val order as annotated, n02 first
    # JPEG is lossy: pixels agree with what was written to within a few levels
    first = torch.from_numpy(originals["n01_0.JPEG"]).permute(2, 0, 1)
    assert (train.images[0].float() - first.float()).abs().mean() < 3
    grey = train.images[train.labels == 1][0]  # n02_0 was written greyscale
    assert torch.equal(grey[0], grey[1]) and torch.equal(grey[1], grey[2])
    # decoded once, then read from the cache, with the same content
    assert list((cache / "datasets").glob("tiny-imagenet-*.npz"))
    again = build("tiny-imagenet", tmp_path)
    assert again.checksum() == ds.checksum()
    assert build("tiny-imagenet", tmp_path, cache=False).checksum() == ds.checksum()


def test_tiny_imagenet_bad_annotation_names_the_line(tmp_path):
    folder, _ = write_tiny_imagenet(tmp_path)
    with open(folder / "val" / "val_annotations.txt", "a") as fh:
        fh.write("val_99.JPEG\tn77\t0\t0\t1\t1\n")
    with pytest.raises(UsageError, match=r"val_annotations.txt:7: wnid n77 is not in wnids.txt"):
        build("tiny-imagenet", tmp_path).load()
    with pytest.raises(UsageError, match="tiny-imagenet-200"):
        build("tiny-imagenet", tmp_path / "empty-does-not-exist").load()


# -- imagefolder ----------------------------------------------------------------------------------


def test_imagefolder_single_folder_is_split_stratified_with_a_seed(tmp_path):
    written = write_imagefolder(tmp_path / "data", per_class=5)
    ds = build("imagefolder", tmp_path / "data", size=16)
    train, test = ds.load()
    assert ds.class_names == ("cat", "dog", "owl") and ds.num_classes == 3
    assert torch.bincount(test.labels).tolist() == [1, 1, 1] and len(train) == 12
    # PNG is lossless: every image read is one written, with its class
    by_bytes = {img.tobytes(): p.parent.name for p, img in written.items()}
    for split in (train, test):
        for img, label in zip(split.images, split.labels, strict=True):
            assert by_bytes[img.permute(1, 2, 0).numpy().tobytes()] == ds.class_names[label]
    other = build("imagefolder", tmp_path / "data", size=16, split_seed=1, cache=False).load()[1]
    assert not torch.equal(other.images, test.images)
    assert torch.equal(build("imagefolder", tmp_path / "data", size=16).load()[1].images, test.images)


def test_imagefolder_train_test_layout_resizes_and_converts(tmp_path):
    write_imagefolder(tmp_path / "train", classes=("a", "b"), per_class=2, size=(40, 24))
    test_written = write_imagefolder(tmp_path / "test", classes=("b",), per_class=1, size=(40, 24))
    ds = build("imagefolder", tmp_path, size=8, channels=1)
    train, test = ds.load()
    assert ds.image_shape == (1, 8, 8) and train.images.shape == (4, 1, 8, 8)
    assert test.labels.tolist() == [1]  # test/ lacks 'a': its 'b' keeps train's index
    img = torch.from_numpy(next(iter(test_written.values()))).permute(2, 0, 1)[None]
    assert torch.equal(test.images, ds.resize(img))  # grey conversion and resize as Dataset.resize does


def test_imagefolder_errors_name_the_folder(tmp_path):
    (tmp_path / "train").mkdir()
    with pytest.raises(UsageError, match="has train/ but no test/"):
        build("imagefolder", tmp_path).load()
    write_imagefolder(tmp_path / "flat", per_class=1)
    with pytest.raises(UsageError, match="at least 2 images"):
        build("imagefolder", tmp_path / "flat").load()
    (tmp_path / "flat" / "empty").mkdir()
    with pytest.raises(UsageError, match=str(tmp_path / "flat")):
        build("imagefolder", tmp_path / "flat").load()


# -- shapes ---------------------------------------------------------------------------------------


def test_shapes_is_seeded_balanced_and_sized_by_options():
    a = build("shapes", n_train=200, n_test=30, seed=3)
    train, test = a.load()
    assert train.images.shape == (200, 3, 32, 32) and len(test) == 30
    assert torch.bincount(train.labels, minlength=10).tolist() == [20] * 10
    assert a.class_names[:3] == ("circle", "square", "triangle") and len(a.class_names) == 10
    assert build("shapes", n_train=200, n_test=30, seed=3).checksum() == a.checksum()
    assert build("shapes", n_train=200, n_test=30, seed=4).checksum() != a.checksum()
    assert not torch.equal(train.images[:30], test.images)  # the test split is its own stream
    # every image has a visible shape on its background: not a flat colour
    assert (train.images.float().flatten(1).std(1) > 10).all()


def test_shapes_draw_each_kind_with_its_true_area():
    """The label means the shape: at a known pose each kind covers its analytic area (antialiased coverage
    summed), and kinds differ. Catches a wrong sign, scale or fold in any of the ten distance functions."""
    import math

    from protobench_datasets.shapes import SHAPE_NAMES, render

    aspect, scale, size = 0.5, 0.7, 128
    unit_area = {  # in the shape's unit frame (see shapes.unit_sdf)
        "circle": math.pi, "square": 1.64**2, "triangle": 3 * math.sqrt(3) / 4 * 1.1**2,
        "star": 10 * 0.5 * 1.05 * 0.45 * math.sin(math.pi / 5), "cross": 2 * 1.9 * 0.64 - 0.64**2,
        "ring": math.pi * (1.0**2 - 0.44**2), "ellipse": math.pi * aspect, "diamond": 2 * aspect,
        "hexagon": 3 * math.sqrt(3) / 2, "stripes": 3 * 0.32 * 1.9,
    }
    n = len(SHAPE_NAMES)
    params = {"labels": np.arange(n), "scale": np.full(n, scale), "center": np.zeros((n, 2)),
              "angle": np.full(n, 0.3), "aspect": np.full(n, aspect), "bg": np.zeros((n, 3)),
              "fg": np.ones((n, 3)), "grad_dir": np.zeros(n), "grad_amp": np.zeros(n)}
    images = render(params, size)
    pixels_per_unit = (scale * size / 2) ** 2
    for k, kind in enumerate(SHAPE_NAMES):
        covered = images[k, 0].double().sum().item() / 255
        assert covered == pytest.approx(unit_area[kind] * pixels_per_unit, rel=0.02), kind
    assert images[SHAPE_NAMES.index("ring"), 0, size // 2, size // 2] == 0  # the ring has a hole
    assert images[SHAPE_NAMES.index("circle"), 0, size // 2, size // 2] == 255


# -- the CLI, as a user runs it ------------------------------------------------------------------

# the final evaluation scores its eval_samples too (not the evaluator's per-class minimum, 1,280 paper-shape
# CIFAR-10 samples, most of this file's time): what is checked here is reading the data, not per-class metrics
TINY = ["--budget", "256", "--eval-every", "256", "--eval-samples", "20", "-o", "denoiser.base_channels=8",
        "-o", "sampler.steps=3", "-o", "final_eval_samples=20", "-o", "few_final_samples=true", "--json"]


def cli(*args: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    # tiny models on a shared CPU: one intra-op thread is several times faster than contended threads
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "protobench.cli", *args], env=env, capture_output=True, text=True,
                          timeout=600)


@pytest.mark.slow
def test_cli_runs_cifar10_from_a_generated_folder(tmp_path):
    write_cifar(tmp_path / "data")
    out = tmp_path / "runs"
    proc = cli("run", "--dataset", "cifar10", "--data-root", str(tmp_path / "data"), *TINY, "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    record = json.loads(proc.stdout)
    assert record["status"] == "completed" and record["config"]["dataset"] == "cifar10"
    assert "fid[cifar10-evaluator]" in record["evals"][-1]["metrics"]
    # the paper's U-Net shape comes from the dataset's presets
    assert record["config"]["options"]["denoiser"]["channel_mult"] == [2, 2, 4, 4]


def test_cli_cifar10_missing_folder_prints_one_line_and_exits_2(tmp_path):
    missing = tmp_path / "no-such-dir"
    proc = cli("run", "--dataset", "cifar10", *TINY, "--out", str(tmp_path / "runs"),
               env_extra={"PROTOBENCH_DATA_ROOT": str(missing)})
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and str(missing) in lines[0] and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_cli_runs_shapes_and_writes_a_viewable_sample_grid(tmp_path):
    out = tmp_path / "runs"
    proc = cli("run", "--dataset", "shapes", "-o", "dataset.n_train=500", "-o", "dataset.n_test=100", *TINY,
               "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    record = json.loads(proc.stdout)
    assert record["config"]["conditioner"] == "random" and "fid[shapes-evaluator]" in record["evals"][-1]["metrics"]
    grid = out / "runs" / record["run_id"] / "samples.png"
    with Image.open(grid) as im:
        # one row per class, ten samples per row, 32-px images shown at 2×, 2-px gaps, a 64-px label margin
        assert im.size == (64 + 10 * 64 + 11 * 2, 10 * 64 + 11 * 2) and im.mode == "RGB"
