"""Metrics that ask a classifier about the samples' classes.

- `class-accuracy`: does each sample look like the class it was generated for, to the domain evaluator?
- `cas`: classification accuracy score (Ravuri & Vinyals 2019, as used by Graikos et al., paper 002): a
  ResNet-18 trained on the generated samples only (with their labels), tested on the real test split.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from protobench import Metric, Reference, UsageError
from protobench_metrics.evaluator import few_threads, predict
from protobench_metrics.extractors import domain_evaluator, instrument_details
from protobench_metrics.extractors import instruments as extractor_instruments


def _check(name: str, samples: Tensor, labels: Tensor | None, num_classes: int) -> Tensor:
    if samples.ndim != 4 or samples.shape[0] == 0:
        raise UsageError(f"{name} needs samples N×C×H×W, got {tuple(samples.shape)}")
    if labels is None or labels.shape != (samples.shape[0],):
        raise UsageError(f"{name} needs one class label per sample")
    labels = labels.long().cpu()
    if int(labels.min()) < 0 or int(labels.max()) >= num_classes:
        raise UsageError(f"{name}: labels must be in [0, {num_classes}), got {int(labels.min())}..{int(labels.max())}")
    return labels


class ClassAccuracy(Metric):
    """Fraction of samples the domain evaluator assigns to the class they were generated for, overall and per class."""

    name = "class-accuracy"
    higher_is_better = True
    needs_labels = True

    def prepare(self, reference: Reference) -> None:
        domain_evaluator(reference)

    def instruments(self, reference: Reference) -> dict[str, str]:
        return extractor_instruments(reference)  # always the domain evaluator

    def instrument_details(self, reference: Reference) -> dict[str, dict]:
        return instrument_details(reference)

    def compute(self, samples: Tensor, labels: Tensor, reference: Reference) -> dict[str, float]:
        dataset = reference.dataset
        labels = _check(self.name, samples, labels, dataset.num_classes)
        net, _meta = domain_evaluator(reference)
        hits = (predict(net, dataset.resize(samples.cpu())) == labels).float()
        key = f"class-accuracy[{dataset.name}-evaluator]"
        out = {key: float(hits.mean())}
        for k in range(dataset.num_classes):
            mask = labels == k
            if mask.any():
                out[f"{key}/{k}"] = float(hits[mask].mean())
        return out

    def standard_errors(self, samples: Tensor, labels: Tensor, reference: Reference) -> dict[str, float]:
        from protobench_metrics import bootstrap

        dataset = reference.dataset
        labels = _check(self.name, samples, labels, dataset.num_classes)
        net, _meta = domain_evaluator(reference)
        hits = (predict(net, dataset.resize(samples.cpu())) == labels).double().numpy()
        idx = bootstrap.rng().integers(0, len(hits), size=(bootstrap.REPLICATES, len(hits)))
        return {f"class-accuracy[{dataset.name}-evaluator]": bootstrap.se(hits[idx].mean(axis=1))}


def resnet18_small(in_channels: int, num_classes: int) -> nn.Module:
    """timm's ResNet-18, randomly initialised, with a 3×3 stride-1 stem and no max-pool for small images."""
    import timm

    net = timm.create_model("resnet18", pretrained=False, num_classes=num_classes, in_chans=in_channels)
    net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
    net.maxpool = nn.Identity()
    return net


def train_and_test(train_x: Tensor, train_y: Tensor, test_x: Tensor, test_y: Tensor, num_classes: int,
                   epochs: int, batch_size: int, lr: float, seed: int, device: torch.device) -> float:
    """Train a fresh ResNet-18 on (train_x, train_y), uint8 images; return its accuracy on (test_x, test_y)."""
    pixels = train_x.shape[-1] * train_x.shape[-2]
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), few_threads(pixels):
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        net = resnet18_small(train_x.shape[1], num_classes).to(device)
        opt = torch.optim.Adam(net.parameters(), lr=lr)
        x_all = train_x.float().div(127.5).sub(1)
        n = len(x_all)
        for _epoch in range(epochs):
            net.train()
            perm = torch.randperm(n, generator=gen)
            for i in range(0, n, batch_size):
                idx = perm[i:i + batch_size]
                if idx.numel() < 2:  # batch norm needs two samples
                    continue
                loss = F.cross_entropy(net(x_all[idx].to(device)), train_y[idx].to(device))
                opt.zero_grad()
                loss.backward()
                opt.step()
        net.eval()
        correct = 0
        with torch.no_grad():
            for i in range(0, len(test_x), 512):
                x = test_x[i:i + 512].to(device).float().div(127.5).sub(1)
                correct += int((net(x).argmax(1).cpu() == test_y[i:i + 512].cpu()).sum())
    return correct / max(1, len(test_x))


class CAS(Metric):
    """Accuracy on the real test split of a ResNet-18 trained only on the generated samples and their labels."""

    name = "cas"
    higher_is_better = True
    needs_labels = True

    def __init__(self, cas_epochs: int = 5, cas_batch_size: int = 64, cas_lr: float = 1e-3):
        if cas_epochs < 1 or cas_batch_size < 2:
            raise ValueError("cas_epochs must be >= 1 and cas_batch_size >= 2")
        self.cas_epochs = cas_epochs
        self.cas_batch_size = cas_batch_size
        self.cas_lr = cas_lr

    def compute(self, samples: Tensor, labels: Tensor, reference: Reference) -> dict[str, float]:
        dataset = reference.dataset
        labels = _check(self.name, samples, labels, dataset.num_classes)
        _train, test = dataset.load()
        acc = train_and_test(dataset.resize(samples.cpu()), labels, test.images, test.labels.long(),
                             dataset.num_classes, self.cas_epochs, self.cas_batch_size, self.cas_lr,
                             seed=reference.seed, device=reference.device)
        return {"cas[resnet18]": acc}
