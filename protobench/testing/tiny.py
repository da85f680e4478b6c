"""Tiny real parts for tests: a digits subset, a small denoiser, settings for a run of a few seconds."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from protobench.interfaces import (
    NULL_LABEL,
    ConditionedNet,
    Conditioner,
    Conditioning,
    ConditionSpec,
    Dataset,
    DataSplit,
)

#: top-level settings of a tiny run: two optimiser steps, one evaluation of a few samples
TINY_SETTINGS: dict[str, Any] = {"budget": 64, "eval_every": 64, "eval_samples": 20, "batch_size": 32}
#: plugin options that make the built-ins small; applied only where the selected plugin accepts them
TINY_OPTIONS: dict[str, Any] = {
    "denoiser.base_channels": 8,
    "denoiser.num_res_blocks": 1,
    "sampler.steps": 5,
}
#: the same as `protobench run` arguments (for the default denoiser and sampler)
TINY_RUN_ARGS: tuple[str, ...] = (
    "--budget", "64", "--eval-every", "64", "--eval-samples", "20", "-o", "batch_size=32",
)


class TinyDataset(Dataset):
    """A stratified subset of another dataset, held in memory: what the conformance classes train on."""

    name = "tiny"

    def __init__(self, source: Dataset, train_per_class: int = 20, test_per_class: int = 10):
        self.source = source
        self.name = f"tiny-{source.name}"  # evaluator caches key on the name and the checksum
        self.num_classes = source.num_classes
        self.class_names = tuple(source.class_names)
        self.image_shape = tuple(source.image_shape)
        self.evaluator_options = dict(getattr(source, "evaluator_options", {}))
        train, test = source.load()
        self._splits = (_per_class(train, train_per_class), _per_class(test, test_per_class))

    def load(self) -> tuple[DataSplit, DataSplit]:
        return self._splits


def _per_class(split: DataSplit, n: int) -> DataSplit:
    """The first `n` images of each class, in their original order."""
    keep = torch.cat([torch.nonzero(split.labels == k).flatten()[:n] for k in split.labels.unique()]).sort().values
    return DataSplit(split.images[keep].contiguous(), split.labels[keep].long().contiguous())


def context_for(dataset: Dataset) -> dict[str, Any]:
    """What the core passes to every plugin constructor (besides the user's options)."""
    return {"num_classes": dataset.num_classes, "image_shape": tuple(dataset.image_shape),
            "class_names": tuple(dataset.class_names), "data_root": None}


def accepted(registry, kind: str, name: str) -> set[str]:
    from protobench.plugins import CONTEXT_KEYS, plugin_options

    return set(plugin_options(registry.get(kind, name).cls, CONTEXT_KEYS))


def tiny_overrides(registry, chosen: dict[str, str] | None = None) -> dict[str, Any]:
    """TINY_OPTIONS restricted to the options the chosen (or default) plugins accept."""
    from protobench.config import RunConfig

    chosen = chosen or {}
    out: dict[str, Any] = {}
    for key, value in TINY_OPTIONS.items():
        kind, opt = key.split(".", 1)
        name = chosen.get(kind) or getattr(RunConfig(), kind)
        if opt in accepted(registry, kind, name):
            out[key] = value
    return out


def tiny_config(registry, **user: Any):
    """A RunConfig for a run of a few seconds: `tiny_config(registry, conditioner="random", metrics="none")`."""
    from protobench.config import build_config

    merged = {**TINY_SETTINGS, **tiny_overrides(registry, {k: v for k, v in user.items() if isinstance(v, str)}),
              **user}
    return build_config(merged, registry)


class TableConditioner(Conditioner):
    """A learned class embedding with its own null row: the conditioning the tiny net is driven with."""

    name = "testing-table"

    def __init__(self, num_classes: int, dim: int = 8):
        super().__init__()
        self.num_classes = num_classes
        self.spec = ConditionSpec(emb_dim=dim)
        self.table = nn.Embedding(num_classes + 1, dim)

    def forward(self, labels: Tensor) -> Conditioning:
        index = torch.where(labels == NULL_LABEL, torch.full_like(labels, self.num_classes), labels)
        return Conditioning(emb=self.table(index.long()))


def tiny_net(registry, num_classes: int, image_shape, seed: int = 0, denoiser: str = "unet") -> ConditionedNet:
    """An untrained `net(x_t, t, labels) -> ε` (a table conditioner and a small denoiser), in eval mode."""
    torch.manual_seed(seed)
    conditioner = TableConditioner(num_classes).eval()
    options = {k.split(".", 1)[1]: v for k, v in TINY_OPTIONS.items()
               if k.startswith("denoiser.") and k.split(".", 1)[1] in accepted(registry, "denoiser", denoiser)}
    net = registry.build("denoiser", denoiser, options,
                         {"num_classes": num_classes, "image_shape": tuple(image_shape), "cond": conditioner.spec})
    return ConditionedNet(conditioner, net.eval(), num_classes)
