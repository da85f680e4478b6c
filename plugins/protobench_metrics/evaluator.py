"""The domain evaluator: a small classifier trained once per dataset (fixed seed) whose penultimate
features stand in for Inception's when no Inception weights are available offline. It is never a network
used in training; metrics computed with it are labelled `[<dataset>-evaluator]`."""

from __future__ import annotations

import hashlib
import json
import time
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from protobench.augment import random_shift
from protobench.io import atomic_write_json, json_digest

EVALUATOR_SEED = 20240101
DEFAULT_OPTIONS = {"width": 32, "epochs": 20, "batch_size": 128, "lr": 1e-3}


class EvaluatorNet(nn.Module):
    """Three conv stages (each halving the size) and a global average pool to `4 * width` features."""

    def __init__(self, in_channels: int, num_classes: int, width: int = 32):
        super().__init__()

        def stage(cin, cout):
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(),
                                 nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU())

        self.stages = nn.ModuleList([stage(in_channels, width), stage(width, 2 * width), stage(2 * width, 4 * width)])
        self.head = nn.Linear(4 * width, num_classes)
        self.feature_dim = 4 * width

    def features(self, x: Tensor) -> Tensor:
        for i, s in enumerate(self.stages):
            x = s(x)
            if i < len(self.stages) - 1 and min(x.shape[-2:]) >= 4:
                x = F.max_pool2d(x, 2)
        return x.mean(dim=(2, 3))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


@contextmanager
def one_thread(when: bool = True):
    """Work too small to split (8×8 images, 128-d features) only thrashes on shared CPUs: use one thread."""
    if not when:
        yield
        return
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(1):  # numpy's BLAS too (KID kernels, FID eigenvalues)
            yield
    finally:
        torch.set_num_threads(before)


def few_threads(image_pixels: int):
    return one_thread(image_pixels <= 16 * 16)


def predict(net: EvaluatorNet, images: Tensor, batch: int = 512) -> Tensor:
    """Class predictions (N,) for uint8 images N×C×H×W."""
    net.eval()
    device = next(net.parameters()).device
    out = []
    with torch.no_grad(), few_threads(images.shape[-1] * images.shape[-2]):
        for i in range(0, len(images), batch):
            x = images[i:i + batch].to(device).float().div(127.5).sub(1)
            out.append(net(x).argmax(1).cpu())
    return torch.cat(out) if out else torch.empty(0, dtype=torch.long)


def accuracy(net: EvaluatorNet, images: Tensor, labels: Tensor) -> float:
    return float((predict(net, images) == labels.cpu()).float().mean()) if len(images) else 0.0


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def evaluator_options(dataset) -> dict:
    return {**DEFAULT_OPTIONS, **getattr(dataset, "evaluator_options", {})}


def _progress(show: bool, total: int, what: str):
    if not show:
        return None
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(TextColumn(what), BarColumn(), MofNCompleteColumn(), TextColumn("epochs"),
                        TimeElapsedColumn(), console=Console(stderr=True), transient=True)
    progress.start()
    progress.add_task(what, total=total)
    return progress


def load_or_train(dataset, cache_root: Path, show_progress: bool = False) -> tuple[EvaluatorNet, dict]:
    """The dataset's evaluator, trained once with a fixed seed and cached by the dataset checksum.

    The weights file's sha256 is stored beside it (with the test accuracy); a file that no longer matches
    is retrained, never trusted."""
    opts = evaluator_options(dataset)
    train, test = dataset.load()
    c = dataset.image_shape[0]
    opts_hash = json_digest(opts, 8)
    key = f"{dataset.name}-{dataset.checksum()}-{opts_hash}"
    folder = Path(cache_root) / "evaluators"
    weights, meta_path = folder / f"{key}.safetensors", folder / f"{key}.json"
    net = EvaluatorNet(c, dataset.num_classes, opts["width"])
    if weights.exists() and meta_path.exists():
        try:
            meta = json.loads(meta_path.read_text())
            if meta.get("weights_sha256") == sha256_file(weights):
                net.load_state_dict(load_file(str(weights)))
                return net.eval(), meta
        except (OSError, ValueError, RuntimeError):
            pass  # unreadable or mismatched cache: retrain below
    start = time.perf_counter()
    progress = _progress(show_progress, opts["epochs"], f"{dataset.name} evaluator")
    try:
        with torch.random.fork_rng(), few_threads(train.images.shape[-1] * train.images.shape[-2]):
            torch.manual_seed(EVALUATOR_SEED)
            gen = torch.Generator().manual_seed(EVALUATOR_SEED)
            opt = torch.optim.Adam(net.parameters(), lr=opts["lr"])
            # uint8 in memory, converted per batch: the float copy of a large split would be 4x its size
            x_all, y_all = train.images, train.labels.long()
            n = len(x_all)
            for _epoch in range(opts["epochs"]):
                net.train()
                perm = torch.randperm(n, generator=gen)
                for i in range(0, n, opts["batch_size"]):
                    idx = perm[i:i + opts["batch_size"]]
                    loss = F.cross_entropy(net(random_shift(x_all[idx].float().div(127.5).sub(1), gen)), y_all[idx])
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                if progress is not None:
                    progress.advance(progress.task_ids[0])
    finally:
        if progress is not None:
            progress.stop()
    net.eval()
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{key}.tmp"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp))
    tmp.replace(weights)
    meta = {"dataset": dataset.name, "checksum": dataset.checksum(), "options": opts,
            "test_accuracy": accuracy(net, test.images, test.labels.long()),
            "train_seconds": time.perf_counter() - start, "seed": EVALUATOR_SEED,
            "weights_sha256": sha256_file(weights)}
    atomic_write_json(meta_path, meta)
    return net, meta
