"""ProtoDiffusion (Baykal et al. 2023): class embeddings initialised from Stage-I prototypes.

`proto-frozen` keeps them fixed for the whole diffusion training; `proto-unfrozen` trains them with the
denoiser. The null token (classifier-free guidance) is separate from the prototypes: learned or zero.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import ClassVar

import torch

from protobench import PrepareContext
from protobench_conditioners.basic import ClassEmbedding
from protobench_conditioners.stage1 import Stage1Options, prototypes_for


class PrototypeEmbedding(ClassEmbedding):
    """A class embedding whose rows are set to the Stage-I prototypes in `prepare`."""

    frozen: ClassVar[bool]

    def __init__(self, num_classes: int, dim: int = 128, null: str = "learned", gamma: float = 1.0,
                 lam: float = 0.01, stage1_lr: float = 1e-4, stage1_batch_size: int = 512, stage1_epochs: int = 20):
        super().__init__(num_classes, dim=dim, null=null)
        self.stage1 = Stage1Options(dim=dim, gamma=gamma, lam=lam, lr=stage1_lr, batch_size=stage1_batch_size,
                                    epochs=stage1_epochs)
        self.stage1.validate()
        if self.frozen:  # set here, not in prepare, so a resumed run (which skips prepare) builds the same optimizer
            self.class_embedding.weight.requires_grad_(False)

    def prepare(self, ctx: PrepareContext) -> None:
        result = prototypes_for(ctx, self.stage1)
        with torch.no_grad():
            self.class_embedding.weight.copy_(result.prototypes.to(self.class_embedding.weight))
        meta = result.meta
        ctx.results["stage1"] = {
            "test_accuracy": meta["test_accuracy"], "device_seconds": meta["device_seconds"],
            "cache_key": meta["cache_key"], "cache_hit": result.cache_hit, "artefacts": str(result.path.resolve()),
            "prototype_shift": meta.get("prototype_shift"), "options": asdict(self.stage1),
        }


class FrozenPrototypes(PrototypeEmbedding):
    """ProtoDiffusion (Frozen): class embeddings = prototypes, never updated."""

    name = "proto-frozen"
    frozen = True


class UnfrozenPrototypes(PrototypeEmbedding):
    """ProtoDiffusion (Unfrozen): class embeddings initialised from the prototypes, trained with the denoiser."""

    name = "proto-unfrozen"
    frozen = False
