"""The domain evaluator: a small classifier trained once per dataset (fixed seed) whose penultimate
features stand in for Inception's when no Inception weights are available offline. It is never a network
used in training; metrics computed with it are labelled `[<dataset>-evaluator]`."""

from __future__ import annotations

import hashlib
import math
import time
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from protobench.kit import cache, json_digest, random_shift, stage

EVALUATOR_SEED = 20240101
#: reject_noise: train with one extra class of uniform-noise images (see train_evaluator; on for digits)
DEFAULT_OPTIONS = {"width": 32, "epochs": 20, "batch_size": 128, "lr": 1e-3, "reject_noise": False}


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


def evaluator_options(dataset) -> dict:
    return {**DEFAULT_OPTIONS, **getattr(dataset, "evaluator_options", {})}


def weights_digest(net: nn.Module) -> str:
    """sha256 of a network's weights (every state_dict tensor, in key order): the evaluator's identity."""
    digest = hashlib.sha256()
    for key, value in sorted(net.state_dict().items()):
        digest.update(key.encode())
        digest.update(str(value.dtype).encode() + str(tuple(value.shape)).encode())
        digest.update(value.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def train_evaluator(dataset, opts: dict, show_progress: bool = False) -> EvaluatorNet:
    """Train the evaluator: a pure function of the data, EVALUATOR_SEED and the options (bit for bit on one
    machine). It draws only from its own generators, so whoever calls it keeps their random stream.

    With `reject_noise`, each batch also holds 1/num_classes as many uniform-noise images, labelled as an
    extra class that is dropped after training: the features then set noise apart from every real class.
    On digits FID then ranks noise below blurred and one-class sets (without it noise scored better than
    both) and test accuracy rises; on shapes noise is already far the worst and it would only blunt blur
    (docs/metrics.md, "Sanity table"). The saved network has the usual num_classes logits."""
    train, _test = dataset.load()
    classes, reject = dataset.num_classes, bool(opts.get("reject_noise", False))
    # weights initialised and trained inside a forked RNG seeded here: the caller's global RNG is untouched
    with torch.random.fork_rng(devices=[]), few_threads(train.images.shape[-1] * train.images.shape[-2]):
        torch.manual_seed(EVALUATOR_SEED)
        net = EvaluatorNet(dataset.image_shape[0], classes + reject, opts["width"])
        gen = torch.Generator().manual_seed(EVALUATOR_SEED)
        noise_gen = torch.Generator().manual_seed(EVALUATOR_SEED + 1)
        opt = torch.optim.Adam(net.parameters(), lr=opts["lr"])
        # uint8 in memory, converted per batch: the float copy of a large split would be 4x its size
        x_all, y_all = train.images, train.labels.long()
        n, bs = len(x_all), opts["batch_size"]
        steps = opts["epochs"] * math.ceil(n / bs)
        with stage(f"training the {dataset.name} evaluator", total=steps, unit="steps", show=show_progress) as bar:
            for epoch in range(opts["epochs"]):
                net.train()
                perm = torch.randperm(n, generator=gen)
                for i in range(0, n, bs):
                    idx = perm[i:i + bs]
                    x, y = random_shift(x_all[idx].float().div(127.5).sub(1), gen), y_all[idx]
                    if reject:
                        m = max(1, len(idx) // classes)
                        x = torch.cat([x, torch.rand((m, *x.shape[1:]), generator=noise_gen) * 2 - 1])
                        y = torch.cat([y, torch.full((m,), classes)])
                    loss = F.cross_entropy(net(x), y)
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    bar.advance(1, note=f"epoch {epoch + 1}/{opts['epochs']}")
        if reject:  # keep the real classes' logits only: every user of the evaluator sees num_classes
            head = nn.Linear(net.feature_dim, classes)
            with torch.no_grad():
                head.weight.copy_(net.head.weight[:classes])
                head.bias.copy_(net.head.bias[:classes])
            net.head = head
    return net.eval()


def cache_key(dataset, opts: dict) -> str:
    return f"{dataset.name}-{dataset.checksum()}-{json_digest({'options': opts, 'seed': EVALUATOR_SEED}, 8)}"


def load_or_train(dataset, cache_root: Path, show_progress: bool = False) -> tuple[EvaluatorNet, dict]:
    """The dataset's evaluator, trained once with a fixed seed and kept in the cache (protobench.cache:
    checked on every load; a damaged entry is named and retrained, to the same weights).

    meta["weights_sha256"] is the digest of the weights: records store it to tell evaluators apart."""
    opts = evaluator_options(dataset)
    key = cache_key(dataset, opts)
    net = None
    found = cache.load_tensors(cache_root, "evaluators", key)
    if found is not None:
        tensors, meta, _path = found
        with torch.random.fork_rng(devices=[]):  # construction draws init weights: not from the caller's RNG
            net = EvaluatorNet(dataset.image_shape[0], dataset.num_classes, opts["width"])
        try:
            net.load_state_dict(tensors)
            if weights_digest(net) == meta.get("weights_sha256"):
                return net.eval(), meta
        except RuntimeError:
            pass
        cache.warn(f"cache entry for the {dataset.name} evaluator does not fit its network; retraining it")
    start = time.perf_counter()
    net = train_evaluator(dataset, opts, show_progress)
    _train, test = dataset.load()
    meta = {"dataset": dataset.name, "checksum": dataset.checksum(), "options": opts,
            "test_accuracy": accuracy(net, test.images, test.labels.long()),
            "train_seconds": time.perf_counter() - start, "seed": EVALUATOR_SEED,
            "weights_sha256": weights_digest(net)}
    cache.save_tensors(cache_root, "evaluators", key, net.state_dict(), meta)
    return net, meta
