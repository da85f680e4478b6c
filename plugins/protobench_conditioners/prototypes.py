"""ProtoDiffusion (Baykal et al. 2023): class embeddings initialised from Stage-I prototypes, and its controls.

`proto-frozen` keeps them fixed for the whole diffusion training; `proto-unfrozen` trains them with the
denoiser. The null token (classifier-free guidance) is separate from the prototypes: learned or zero.

Two controls separate "the prototypes carry the classes' geometry" from "the prototypes are random vectors of
another scale": `proto-shuffled` (the same Stage-I vectors given to the wrong classes) and `random-scaled`
(random directions with the prototypes' row norms, or the official kaiming scale).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, ClassVar

import torch
from torch import Tensor

from protobench import PrepareContext
from protobench_conditioners.basic import ClassEmbedding
from protobench_conditioners.stage1 import Stage1Options, geometry, prototypes_for, relative_shift

#: seeds the controls' permutation and directions (offset by the run's seed), apart from the training stream
CONTROL_SEED = 7_000_003


class Stage1Embedding(ClassEmbedding):
    """A class embedding set in `prepare` from Stage I, which records how far it moves and what geometry it
    carries. Keeps its start and the Stage-I class means as buffers, so a resumed run still reports them."""

    frozen: ClassVar[bool] = False
    prepare_stage = "prepare (Stage I)"

    def __init__(self, num_classes: int, dim: int = 128, null: str = "learned", gamma: float = 1.0,
                 lam: float = 0.01, stage1_lr: float = 1e-4, stage1_batch_size: int = 512, stage1_epochs: int = 20,
                 stage1_init: str = "normal", stage1_relu: bool = False, stage1_backbone_weights: str = "",
                 image_shape: tuple[int, int, int] | None = None):
        super().__init__(num_classes, dim=dim, null=null)
        self.stage1 = Stage1Options(dim=dim, gamma=gamma, lam=lam, lr=stage1_lr, batch_size=stage1_batch_size,
                                    epochs=stage1_epochs, init=stage1_init, relu=stage1_relu,
                                    backbone_weights=stage1_backbone_weights)
        self.stage1.validate()
        if stage1_backbone_weights:  # refused now (one line, nothing written), not after the run folder exists
            from protobench_conditioners.stage1 import FeatureExtractor, read_backbone_weights

            if image_shape is None:
                read_backbone_weights(stage1_backbone_weights)
            else:  # builds f_ψ once: a pickle or tensors that do not fit are refused here
                FeatureExtractor(tuple(image_shape), dim, stage1_relu, stage1_backbone_weights)
        self.register_buffer("start", torch.zeros(num_classes, dim))  # the table diffusion training starts from
        self.register_buffer("class_means", torch.zeros(num_classes, dim))  # Stage-I feature space
        self.register_buffer("stage1_shift", torch.tensor(float("nan")))
        if self.frozen:  # set here, not in prepare, so a resumed run (which skips prepare) builds the same optimizer
            self.class_embedding.weight.requires_grad_(False)

    def initial_table(self, prototypes: Tensor, ctx: PrepareContext) -> Tensor:
        """The class table diffusion training starts from (the prototypes themselves, for ProtoDiffusion)."""
        return prototypes

    def prepare(self, ctx: PrepareContext) -> None:
        result = prototypes_for(ctx, self.stage1)
        table = self.initial_table(result.prototypes.float(), ctx)
        with torch.no_grad():
            self.class_embedding.weight.copy_(table.to(self.class_embedding.weight))
            self.start.copy_(table)
            self.class_means.copy_(result.class_means)
            self.stage1_shift.fill_(float(result.meta.get("prototype_shift", float("nan"))))
        meta = result.meta
        pretrained = None
        if self.stage1.backbone_weights:  # its pretraining's compute is not charged: say so in the record
            from protobench.kit import sha256_file

            pretrained = {"file": self.stage1.backbone_weights,
                          "sha256": sha256_file(self.stage1.backbone_weights), "compute_charged": False}
        ctx.results["stage1"] = {
            "test_accuracy": meta["test_accuracy"], "device_seconds": meta["device_seconds"],
            "cache_key": meta["cache_key"], "cache_hit": result.cache_hit, "artefacts": str(result.path.resolve()),
            "prototype_shift": meta.get("prototype_shift"),
            "prototype_geometry": geometry(result.prototypes, result.class_means),
            "options": asdict(self.stage1), "pretrained_backbone": pretrained,
        }
        ctx.results.setdefault("conditioner", {}).update(self.diagnostics())

    def diagnostics(self) -> dict[str, Any]:
        if not bool(self.start.abs().sum() > 0):  # not prepared (e.g. built only to be inspected)
            return {}
        table = self.class_embedding.weight.detach().float()
        out = {"prototype_shift": relative_shift(table, self.start),
               "prototype_geometry": geometry(table, self.class_means)}
        if not torch.isnan(self.stage1_shift):
            out["stage1_shift"] = float(self.stage1_shift)
        if self.stage1.backbone_weights:
            out["pretrained_backbone"] = True
        return out

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # checkpoints written before these buffers existed still load (their diagnostics are then empty)
        for name in ("start", "class_means", "stage1_shift"):
            state_dict.setdefault(prefix + name, getattr(self, name))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class FrozenPrototypes(Stage1Embedding):
    """ProtoDiffusion (Frozen): class embeddings = prototypes, never updated."""

    name = "proto-frozen"
    learns_prototypes = True
    frozen = True


class UnfrozenPrototypes(Stage1Embedding):
    """ProtoDiffusion (Unfrozen): class embeddings initialised from the prototypes, trained with the denoiser."""

    name = "proto-unfrozen"
    learns_prototypes = True
    frozen = False


#: kept for plugins that subclassed it by this name
PrototypeEmbedding = Stage1Embedding


class ShuffledPrototypes(Stage1Embedding):
    """Control: the Stage-I prototypes permuted across classes (same vectors, wrong classes: no class has its
    own prototype). Frozen by default, to pair with proto-frozen; `frozen=false` trains them."""

    name = "proto-shuffled"
    learns_prototypes = True

    def __init__(self, num_classes: int, frozen: bool = True, dim: int = 128, null: str = "learned", gamma: float = 1.0,
                 lam: float = 0.01, stage1_lr: float = 1e-4, stage1_batch_size: int = 512, stage1_epochs: int = 20,
                 stage1_init: str = "normal", stage1_relu: bool = False, stage1_backbone_weights: str = "",
                 image_shape: tuple[int, int, int] | None = None):
        self.frozen = frozen  # read by Stage1Embedding.__init__
        super().__init__(num_classes, dim=dim, null=null, gamma=gamma, lam=lam, stage1_lr=stage1_lr,
                         stage1_batch_size=stage1_batch_size, stage1_epochs=stage1_epochs, stage1_init=stage1_init,
                         stage1_relu=stage1_relu, stage1_backbone_weights=stage1_backbone_weights,
                         image_shape=image_shape)

    def initial_table(self, prototypes: Tensor, ctx: PrepareContext) -> Tensor:
        order = torch.randperm(len(prototypes), generator=torch.Generator().manual_seed(CONTROL_SEED + ctx.seed))
        # a cyclic shift along a random order: a permutation with no fixed point (a derangement)
        target = torch.empty_like(order)
        target[order] = order.roll(-1)
        return prototypes[target]


class ScaledRandomEmbedding(Stage1Embedding):
    """Control: a random class table matched in scale, not in geometry. `scale=prototypes`: random directions
    with the row norms of this seed's Stage-I prototypes (Stage I is run, and charged); `scale=kaiming`: rows
    drawn N(0, 2/C), the official initialisation's scale, no Stage I. Trained like `random` unless `frozen`."""

    name = "random-scaled"

    def __init__(self, num_classes: int, scale: str = "prototypes", frozen: bool = False, dim: int = 128, null: str = "learned", gamma: float = 1.0,
                 lam: float = 0.01, stage1_lr: float = 1e-4, stage1_batch_size: int = 512, stage1_epochs: int = 20,
                 stage1_init: str = "normal", stage1_relu: bool = False, stage1_backbone_weights: str = "",
                 image_shape: tuple[int, int, int] | None = None):
        if scale not in ("prototypes", "kaiming"):
            raise ValueError(f"scale must be 'prototypes' or 'kaiming', got {scale!r}")
        self.frozen = frozen
        self.scale = scale
        super().__init__(num_classes, dim=dim, null=null, gamma=gamma, lam=lam, stage1_lr=stage1_lr,
                         stage1_batch_size=stage1_batch_size, stage1_epochs=stage1_epochs, stage1_init=stage1_init,
                         stage1_relu=stage1_relu, stage1_backbone_weights=stage1_backbone_weights,
                         image_shape=image_shape)
        if scale == "kaiming":
            self.prepare_stage = "prepare"

    def initial_table(self, prototypes: Tensor, ctx: PrepareContext) -> Tensor:
        directions = torch.randn(prototypes.shape, generator=torch.Generator().manual_seed(CONTROL_SEED + ctx.seed))
        return directions / directions.norm(dim=1, keepdim=True) * prototypes.norm(dim=1, keepdim=True)

    def prepare(self, ctx: PrepareContext) -> None:
        if self.scale == "prototypes":
            super().prepare(ctx)
            return
        c, dim = self.class_embedding.weight.shape
        gen = torch.Generator().manual_seed(CONTROL_SEED + ctx.seed)
        table = torch.randn(c, dim, generator=gen) * (2.0 / c) ** 0.5  # kaiming_normal_ of a (dim, C) table
        with torch.no_grad():
            self.class_embedding.weight.copy_(table)
            self.start.copy_(table)
        ctx.results.setdefault("conditioner", {}).update(self.diagnostics())

    def diagnostics(self) -> dict[str, Any]:
        out = super().diagnostics()
        if self.scale == "kaiming":  # no Stage I, so no class means to compare against
            out.pop("prototype_geometry", None)
        return out
