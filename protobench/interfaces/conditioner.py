"""Conditioner: turns a class label (or the null label) into conditioning for the denoiser."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from protobench.interfaces.dataset import DataSplit

#: the classifier-free null token (Ho & Salimans 2021): "no class"
NULL_LABEL = -1


@dataclass(frozen=True)
class ConditionSpec:
    """What a conditioner emits; fixed when it is built, read by the denoiser to size itself."""

    emb_dim: int = 0  # per-sample vector joined to the time embedding (add or concat)
    norm_dim: int = 0  # per-sample vector that modulates normalisation layers (CBN)
    planes: int = 0  # extra input channels, same H×W as the image


@dataclass
class Conditioning:
    emb: Tensor | None = None  # (B, emb_dim)
    norm: Tensor | None = None  # (B, norm_dim)
    planes: Tensor | None = None  # (B, planes, H, W)


@dataclass
class PrepareContext:
    """What a conditioner's or guidance's `prepare` may use. The core times the call and charges it to the run."""

    train: DataSplit
    test: DataSplit
    num_classes: int
    image_shape: tuple[int, int, int]
    dataset_checksum: str
    seed: int
    device: torch.device
    cache_dir: Path
    #: set for guidance.prepare: the trained (EMA) denoiser as a ConditionedNet, and the schedule
    net: Any = None
    schedule: Any = None
    #: anything worth keeping in the run record (e.g. Stage-I accuracy); merged under `prepare`
    results: dict[str, Any] = field(default_factory=dict)
    #: device-seconds of cached work reused here (the run is still charged them)
    cached_device_seconds: float = 0.0
    show_progress: bool = False
    #: machine-independent work done (or reused) here: images through a network, and their FLOPs
    work_images: float = 0.0
    work_flops: float = 0.0

    def charge(self, device_seconds: float = 0.0, images: float = 0.0, flops: float = 0.0) -> None:
        """Charge work spent earlier and reused from the cache (device-seconds), and the work done here or
        there in machine-independent units (images, FLOPs): the run's clock counts prepare in every unit."""
        self.cached_device_seconds += float(device_seconds)
        self.work_images += float(images)
        self.work_flops += float(flops)


@dataclass
class LossContext:
    """What `extra_loss` sees for the current training batch."""

    x0: Tensor
    x_t: Tensor
    t: Tensor
    labels: Tensor  # after label dropout: NULL_LABEL where dropped
    eps: Tensor
    eps_pred: Tensor
    x0_pred: Tensor


class Conditioner(nn.Module):
    """Base class. Subclasses set `name` and `spec` and implement `forward`.

    Built with `num_classes` (and `image_shape` if their __init__ accepts it) plus user options.

    A conditioner whose `prepare` learns class prototypes says so with `learns_prototypes = True`, and leaves its
    Stage-I record (an `artefacts` folder holding `stage1.safetensors`: `test_features`, `test_labels`,
    `prototypes`; and `test_accuracy`) under `ctx.results["stage1"]`, which `protobench plot prototypes` and the
    HTML report draw. A lazy registration declares it too, so that reading results imports nothing:

        class MyPrototypes(Conditioner):
            name = "my-proto"
            learns_prototypes = True

            def prepare(self, ctx):
                ...  # learn the prototypes; ctx.results["stage1"] = {"artefacts": ..., "test_accuracy": ...}

        register("my_pkg.proto:MyPrototypes", name="my-proto", learns_prototypes=True)
    """

    name: ClassVar[str]
    spec: ConditionSpec = ConditionSpec()
    #: what the run's progress calls the prepare step (e.g. "prepare (Stage I)")
    prepare_stage: str = "prepare"
    #: whether `prepare` learns class prototypes (Stage I) and leaves its record under `ctx.results["stage1"]`
    learns_prototypes: ClassVar[bool] = False

    @property
    def prepares(self) -> bool:
        """Whether this conditioner has a prepare step (its class overrides `prepare`): one without is charged
        no prepare time."""
        return type(self).prepare is not Conditioner.prepare

    def prepare(self, ctx: PrepareContext) -> None:  # noqa: B027 - optional hook
        """Optional stage before diffusion training (Stage-I prototype learning, training an auxiliary classifier).

        The one `prepare` contract (conditioners, guidance, metrics): build, from the real data, what the
        plugin needs before it is used; cache it under the cache folder keyed on everything it depends on,
        and reuse it. A conditioner's or guidance's prepare is part of the method: timed, booked under
        `prepare` and charged to the run (`ctx.charge` for reused work). Its result must live in parameters
        or buffers: a resumed run loads the checkpoint and does not prepare again."""

    def forward(self, labels: Tensor) -> Conditioning:  # pragma: no cover - abstract
        raise NotImplementedError

    def extra_loss(self, ctx: LossContext) -> Tensor | None:
        """Optional term added to the diffusion loss."""
        return None

    def diagnostics(self) -> dict[str, Any]:
        """Optional numbers about the conditioning itself, recorded with every evaluation (`conditioner` in the
        eval event) and shown by the report, e.g. how far prototypes moved from their start. JSON values."""
        return {}
