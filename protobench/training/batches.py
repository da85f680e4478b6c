"""Data order and sharding: each step's global batch drawn from the run's seed, sliced for this rank.

Batches, timesteps, noise and label dropout are drawn for the whole global batch from one seeded generator,
and each process takes its slice, so N processes see exactly what one process would."""

from __future__ import annotations

import torch
from torch import Tensor

from protobench.config import RunConfig
from protobench.interfaces import NULL_LABEL, DataSplit
from protobench.rank import Dist


class Batches:
    """`batches(step)` -> this rank's (x0 uint8, labels, t, noise) of the step's global batch. The epoch's
    order comes from the seed and the epoch number; everything else from `generator` (the train state's)."""

    def __init__(self, cfg: RunConfig, split: DataSplit, dist: Dist, generator: torch.Generator):
        self.cfg = cfg
        self.images = split.images  # images stay uint8 in memory (a float copy of a large split is 4x)
        self.labels = split.labels.long()
        self.dist = dist
        self.generator = generator
        self._epoch: tuple[int | None, Tensor | None] = (None, None)  # the data order of the current epoch

    def _order(self, epoch: int) -> Tensor:
        if self._epoch[0] != epoch:  # one permutation per epoch, not per step
            seeded = torch.Generator().manual_seed(self.cfg.seed * 100_003 + epoch)
            self._epoch = (epoch, torch.randperm(self.images.shape[0], generator=seeded))
        return self._epoch[1]

    def __call__(self, step: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        cfg, gen, n = self.cfg, self.generator, self.images.shape[0]
        bs = cfg.batch_size
        epoch, pos = divmod(step, max(1, n // bs))
        perm = self._order(epoch)
        idx = perm[pos * bs:(pos + 1) * bs]
        if idx.numel() < bs:  # a dataset smaller than one batch: sample with replacement
            idx = perm[torch.randint(n, (bs,), generator=gen)]
        t = torch.randint(0, cfg.timesteps, (bs,), generator=gen)
        if cfg.small_t_share > 0:  # the official trainloss: the batch's last tenth at t < 50
            k = int(bs * cfg.small_t_share)
            t[bs - k:] = torch.randint(0, cfg.small_t, (k,), generator=gen)
        noise = torch.randn((bs, *self.images.shape[1:]), generator=gen)
        drop = torch.rand(bs, generator=gen) < cfg.label_dropout
        labels = torch.where(drop, torch.full_like(self.labels[idx], NULL_LABEL), self.labels[idx])
        mine = slice(self.dist.rank, bs, self.dist.world)
        return self.images[idx][mine], labels[mine], t[mine], noise[mine]
