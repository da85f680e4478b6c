"""Stage I of ProtoDiffusion: convolutional prototype learning (Yang et al. 2018), one prototype per class.

A feature extractor f_ψ (ResNet-18, stem adapted to small images, projected to `dim`) and a codebook M
(C × dim) are trained end to end with the distance-based cross-entropy plus the prototype loss
(ProtoDiffusion eq. 9–10). The result is cached by (dataset checksum, Stage-I options, seed) so every run
of that seed, frozen or unfrozen, reuses one Stage I — and is still charged its device-seconds.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from protobench import DataSplit, PrepareContext
from protobench.kit import cache, json_digest, stage

#: bump when Stage I changes in a way that makes cached prototypes stale
STAGE1_VERSION = 1
WEIGHTS_FILE = "stage1.safetensors"
INITS = ("normal", "kaiming")
#: options added after STAGE1_VERSION 1: left out of the cache key at their defaults, so old entries still hit
LATER_OPTIONS = {"init": "normal", "relu": False, "backbone_weights": ""}


@dataclass(frozen=True)
class Stage1Options:
    dim: int = 128  # the paper's cdim
    gamma: float = 1.0  # sharpness of the assignment, eq. 9
    lam: float = 0.01  # weight of the prototype loss, eq. 10
    lr: float = 1e-4  # Adam, paper A.1
    batch_size: int = 512
    epochs: int = 20
    #: the official code's choices (Models.py), off by default (docs/deviations.md)
    init: str = "normal"  # prototype init: N(0, 1), or "kaiming" (kaiming_normal_ of the official dim×C codebook)
    relu: bool = False  # ReLU after the projection to `dim`
    backbone_weights: str = ""  # a local safetensors file of pretrained ResNet-18 weights ("" = from scratch)

    def validate(self) -> None:
        checks = [(self.init in INITS, f"stage1_init must be one of {', '.join(INITS)}, got {self.init!r}"),(self.dim > 0, "dim must be > 0"), (self.gamma > 0, "gamma must be > 0"),
                  (self.lam >= 0, "lam must be >= 0"), (self.lr > 0, "stage1_lr must be > 0"),
                  (self.batch_size > 0, "stage1_batch_size must be > 0"), (self.epochs > 0, "stage1_epochs must be > 0")]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


@dataclass
class Stage1Result:
    prototypes: Tensor  # (C, dim), float32, cpu
    class_means: Tensor  # (C, dim): the test split's mean Stage-I feature per class
    meta: dict[str, Any]  # test_accuracy, device_seconds, cache_key, ...
    path: Path  # the cache entry (a folder)
    cache_hit: bool


# ---------------------------------------------------------------------------------------------
# the model


class FeatureExtractor(nn.Module):
    """f_ψ: timm ResNet-18 with a small-image stem, then a linear projection to `dim` (and a ReLU if asked).

    With `backbone_weights` the backbone is loaded from that safetensors file; if the file carries a
    classifier head (`fc.*`, ImageNet's 1000 logits) it is kept and projected, as the official Models.py does."""

    def __init__(self, image_shape: tuple[int, int, int], dim: int, relu: bool = False,
                 backbone_weights: str = ""):
        super().__init__()
        import timm

        c, h, w = image_shape
        weights = read_backbone_weights(backbone_weights) if backbone_weights else None
        head = int(weights["fc.weight"].shape[0]) if weights is not None and "fc.weight" in weights else 0
        self.backbone = timm.create_model("resnet18", pretrained=False, in_chans=c, num_classes=head)
        if max(h, w) <= 64 and not (weights is not None and _is_imagenet_stem(weights)):
            # a 7×7/2 conv and a max-pool would leave almost nothing of an 8–64 px image
            self.backbone.conv1 = nn.Conv2d(c, self.backbone.conv1.out_channels, 3, stride=1, padding=1, bias=False)
            self.backbone.maxpool = nn.Identity()
        if weights is not None:
            load_backbone(self.backbone, weights, backbone_weights)
        self.projection = nn.Linear(head or self.backbone.num_features, dim)
        self.relu = relu

    def forward(self, x: Tensor) -> Tensor:
        z = self.projection(self.backbone(x))
        return F.relu(z) if self.relu else z  # Models.py: F.relu(self.reduce_to_hidden(x))


def _is_imagenet_stem(weights: dict[str, Tensor]) -> bool:
    w = weights.get("conv1.weight")
    return w is not None and tuple(w.shape[-2:]) == (7, 7)


def read_backbone_weights(path: str) -> dict[str, Tensor]:
    """The tensors of a local safetensors file; anything else (a pickle, a missing file) is a one-line error."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    file = Path(path).expanduser()
    if not file.is_file():
        raise ValueError(f"stage1_backbone_weights: no such file {path}")
    try:
        return load_file(str(file))  # never unpickles: a pickled checkpoint is refused here
    except (SafetensorError, OSError, ValueError) as exc:
        raise ValueError(f"stage1_backbone_weights: {path} is not a safetensors file ({str(exc).splitlines()[0]}); "
                         "convert it with safetensors.torch.save_file") from None


def load_backbone(backbone: nn.Module, weights: dict[str, Tensor], path: str) -> None:
    """Load `weights` into the ResNet-18 strictly: every tensor present, with its shape, or one line."""
    own = backbone.state_dict()
    missing = sorted(set(own) - set(weights))
    extra = sorted(set(weights) - set(own))
    wrong = sorted(k for k in set(own) & set(weights) if tuple(own[k].shape) != tuple(weights[k].shape))
    if missing or extra or wrong:
        what = (f"{len(wrong)} of a wrong shape (e.g. {wrong[0]}: {tuple(weights[wrong[0]].shape)} in the file, "
                f"{tuple(own[wrong[0]].shape)} expected)" if wrong else
                f"{len(missing)} missing (e.g. {missing[0]})" if missing else f"{len(extra)} unexpected (e.g. {extra[0]})")
        raise ValueError(f"stage1_backbone_weights: {path} does not fit a ResNet-18 for this dataset: tensors {what}")
    backbone.load_state_dict({k: v.to(own[k].dtype) for k, v in weights.items()})


class PrototypeClassifier(nn.Module):
    """f_ψ plus the codebook M of one prototype per class."""

    def __init__(self, image_shape: tuple[int, int, int], num_classes: int, dim: int, init: str = "normal",
                 relu: bool = False, backbone_weights: str = ""):
        super().__init__()
        self.extractor = FeatureExtractor(image_shape, dim, relu, backbone_weights)
        if init == "kaiming":  # Models.py: kaiming_normal_ on a (dim, C) codebook, std sqrt(2 / C)
            self.prototypes = nn.Parameter(nn.init.kaiming_normal_(torch.empty(dim, num_classes)).T.contiguous())
        else:
            self.prototypes = nn.Parameter(torch.randn(num_classes, dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.extractor(x)


def squared_distances(features: Tensor, prototypes: Tensor) -> Tensor:
    """‖f_ψ(x) − e_i‖² for every sample and prototype, (B, C)."""
    return (features[:, None, :] - prototypes[None, :, :]).pow(2).sum(-1)


def stage1_loss(features: Tensor, prototypes: Tensor, labels: Tensor, gamma: float, lam: float) -> Tensor:
    d2 = squared_distances(features, prototypes)
    # eq. 9: p(x ∈ e_i | x) ∝ exp(−γ‖f_ψ(x) − e_i‖²); with K = 1 the first term of eq. 10 is a plain CE
    dce = F.cross_entropy(-gamma * d2, labels)
    # eq. 10, second term: pull f_ψ(x) onto e_closest, the (only) prototype of its true class
    pl = d2.gather(1, labels[:, None]).mean()
    return dce + lam * pl


def nearest_prototype(features: Tensor, prototypes: Tensor) -> Tensor:
    """eq. 8: the class of the closest prototype."""
    return squared_distances(features, prototypes).argmin(1)


@torch.no_grad()
def extract(extractor: nn.Module, split: DataSplit, device: torch.device, batch_size: int = 1000) -> Tensor:
    extractor.eval()
    out = [extractor(split.images[i:i + batch_size].to(device).float().div(127.5).sub(1.0)).float().cpu()
           for i in range(0, len(split), batch_size)]
    return torch.cat(out)


# ---------------------------------------------------------------------------------------------
# training


def train_stage1(train: DataSplit, test: DataSplit, num_classes: int, image_shape: tuple[int, int, int],
                 opts: Stage1Options, seed: int, device: torch.device,
                 show_progress: bool = False) -> tuple[PrototypeClassifier, Tensor, dict[str, Any]]:
    """Train f_ψ and M; returns the model (on cpu), the test split's features and metadata (test accuracy)."""
    opts.validate()
    # own RNG stream: a run that hits the cache must continue exactly like one that trained Stage I
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        model = PrototypeClassifier(image_shape, num_classes, opts.dim, opts.init, opts.relu,
                                    opts.backbone_weights).to(device)
        initial = model.prototypes.detach().clone()
        optimizer = torch.optim.Adam(model.parameters(), lr=opts.lr)
        order = torch.Generator().manual_seed(seed)
        x_all, y_all = train.images.to(device), train.labels.long().to(device)  # uint8: small enough to keep there
        n = len(train)
        bs = min(opts.batch_size, n)
        steps_per_epoch = max(1, n // bs)  # drop the ragged last batch (BatchNorm and a fixed step count)
        with stage("Stage I: prototypes", total=opts.epochs * steps_per_epoch, unit="steps", show=show_progress) as bar:
            model.train()
            for epoch in range(opts.epochs):
                perm = torch.randperm(n, generator=order)
                for step in range(steps_per_epoch):
                    idx = perm[step * bs:(step + 1) * bs].to(device)
                    x = x_all[idx].float().div(127.5).sub(1.0)
                    y = y_all[idx]
                    loss = stage1_loss(model(x), model.prototypes, y, opts.gamma, opts.lam)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    value = loss.item()
                    if not math.isfinite(value):
                        raise RuntimeError(f"Stage I loss became {value} at epoch {epoch}; lower stage1_lr or gamma")
                    bar.advance(1, note=f"epoch {epoch + 1}/{opts.epochs} loss {value:.3f}")
        features = extract(model.extractor, test, device)
        prototypes = model.prototypes.detach().float().cpu()
        accuracy = float((nearest_prototype(features, prototypes) == test.labels.long()).float().mean())
    # how far the codebook moved from its random start (the features do most of the clustering)
    shift = relative_shift(prototypes, initial.cpu())
    # machine-independent work, so that a clock in images or FLOPs charges Stage I too
    images = opts.epochs * steps_per_epoch * bs
    meta = {"test_accuracy": accuracy, "final_loss": value, "steps": opts.epochs * steps_per_epoch,
            "prototype_shift": shift, "initial_prototype_norm": float(initial.norm(dim=1).mean()),
            "work_images": images,
            "work_flops": images * _train_flops_per_image(model, x_all[:2], y_all[:2], opts)}
    return model.cpu(), features, meta


def _train_flops_per_image(model: PrototypeClassifier, x: Tensor, y: Tensor, opts: Stage1Options) -> float:
    """Forward + backward FLOPs of one Stage-I training image (counted once; no state is changed)."""
    from protobench.kit import count_flops

    x = x.float().div(127.5).sub(1.0)

    def fwd_bwd() -> None:
        stage1_loss(model(x), model.prototypes, y, opts.gamma, opts.lam).backward()

    was = model.training
    model.eval()  # BatchNorm's running statistics stay as trained
    flops = count_flops(fwd_bwd)
    model.zero_grad(set_to_none=True)
    model.train(was)
    return flops / x.shape[0]


# ---------------------------------------------------------------------------------------------
# the cache


def relative_shift(now: Tensor, start: Tensor) -> float:
    """‖now − start‖ / ‖start‖ over the whole table."""
    return float((now - start).norm() / start.norm().clamp(min=1e-12))


def class_means(features: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """The mean Stage-I feature of each class, (C, dim)."""
    sums = torch.zeros(num_classes, features.shape[1]).index_add_(0, labels.long(), features.float())
    return sums / torch.bincount(labels.long(), minlength=num_classes).clamp(min=1)[:, None]


def geometry(prototypes: Tensor, means: Tensor) -> float:
    """Pearson correlation of the prototypes' pairwise distances with the class means' (one value per pair
    of classes): near 1 when the table carries the data's class geometry, near 0 when it is random."""
    i, j = torch.triu_indices(len(means), len(means), 1)
    a = torch.cdist(prototypes.float(), prototypes.float())[i, j]
    b = torch.cdist(means.float(), means.float())[i, j]
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / (a.norm() * b.norm()).clamp(min=1e-12))


def cache_key(dataset_checksum: str, num_classes: int, image_shape, opts: Stage1Options, seed: int) -> str:
    options = {k: v for k, v in asdict(opts).items() if LATER_OPTIONS.get(k, object()) != v}
    if opts.backbone_weights:  # the file's content, not its path, is what Stage I depends on
        options["backbone_weights"] = cache.sha256_file(Path(opts.backbone_weights).expanduser())
    ident = {"version": STAGE1_VERSION, "dataset": dataset_checksum, "num_classes": num_classes,
             "image_shape": list(image_shape), "options": options, "seed": seed}
    return json_digest(ident, 16)


def load_entry(cache_root: Path, key: str) -> tuple[dict[str, Tensor], dict[str, Any], Path] | None:
    """(tensors, metadata, folder) of a verified cache entry, or None (absent, or damaged and reported)."""
    return cache.load_tensors(cache_root, "prototypes", key, name=WEIGHTS_FILE)


def prototypes_for(ctx: PrepareContext, opts: Stage1Options) -> Stage1Result:
    """The Stage-I prototypes for this dataset, options and seed: from the cache, or trained now."""
    key = cache_key(ctx.dataset_checksum, ctx.num_classes, ctx.image_shape, opts, ctx.seed)
    path = cache.entry_path(ctx.cache_dir, "prototypes", key)
    entry = load_entry(Path(ctx.cache_dir), key)
    if entry is not None:
        tensors, meta, path = entry
        # the paper counts Stage I in every ProtoDiffusion run: charged on every clock
        ctx.charge(meta["device_seconds"], images=meta.get("work_images", 0), flops=meta.get("work_flops", 0))
        means = class_means(tensors["test_features"], tensors["test_labels"], ctx.num_classes)
        return Stage1Result(tensors["prototypes"], means, meta, path, cache_hit=True)
    start = time.perf_counter()
    model, features, info = train_stage1(ctx.train, ctx.test, ctx.num_classes, tuple(ctx.image_shape), opts, ctx.seed,
                               ctx.device, ctx.show_progress)
    world = int(os.environ.get("WORLD_SIZE", "1"))  # every process trains it: charge it as the ledger does
    wall = time.perf_counter() - start
    meta = {**info, "device_seconds": wall * world, "wall_seconds": wall, "cache_key": key,
            "dataset_checksum": ctx.dataset_checksum, "num_classes": ctx.num_classes,
            "image_shape": list(ctx.image_shape), "seed": ctx.seed, "options": asdict(opts),
            "version": STAGE1_VERSION, "device": ctx.device.type}
    ctx.charge(0.0, images=meta["work_images"], flops=meta["work_flops"])  # its seconds the ledger timed
    prototypes = model.prototypes.detach().float().contiguous()
    if int(os.environ.get("RANK", "0")) == 0:
        tensors = {"prototypes": prototypes,
                   "test_features": features.contiguous(),
                   "test_labels": ctx.test.labels.long().contiguous(),
                   **{f"extractor.{k}": v.detach().cpu().contiguous() for k, v in model.extractor.state_dict().items()}}
        path = cache.save_tensors(ctx.cache_dir, "prototypes", key, tensors, meta, name=WEIGHTS_FILE)
    return Stage1Result(prototypes, class_means(features, ctx.test.labels, ctx.num_classes), meta, path,
                        cache_hit=False)
