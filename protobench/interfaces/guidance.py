"""Guidance: turns the denoiser into a guided ε at sampling time."""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor

from protobench.interfaces.conditioner import Conditioner, PrepareContext
from protobench.interfaces.denoiser import Denoiser


class ConditionedNet:
    """`net(x_t, t, labels) -> ε`: a conditioner and a denoiser seen as one function of labels."""

    def __init__(self, conditioner: Conditioner, denoiser: Denoiser, num_classes: int):
        self.conditioner = conditioner
        self.denoiser = denoiser
        self.num_classes = num_classes

    def __call__(self, x_t: Tensor, t: Tensor, labels: Tensor) -> Tensor:
        return self.denoiser(x_t, t, self.conditioner(labels))

    def features(self, x_t: Tensor, t: Tensor, labels: Tensor) -> Tensor:
        return self.denoiser.features(x_t, t, self.conditioner(labels))


class Guidance:
    """Base class. Built with the user's options (and `num_classes` if accepted)."""

    name: ClassVar[str]
    #: whether `prepare` does work: only then does the core build `ctx.net` and `ctx.schedule` and call it,
    #: before every evaluation (a class that defines `prepare` sets it True; the conformance tests check)
    prepares: ClassVar[bool] = False

    def prepare(self, ctx: PrepareContext) -> None:  # noqa: B027 - optional hook
        """Get ready to guide the trained (EMA) denoiser `ctx.net`, e.g. fit a classifier on its features.

        The guidance's part of the method, so timed and charged to the run under `prepare` (see
        `Conditioner.prepare`); called before each evaluation, and only if `prepares` is True."""

    def eps(self, net: ConditionedNet, x_t: Tensor, t: Tensor, labels: Tensor) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def accept(self, net: ConditionedNet, x0: Tensor, labels: Tensor) -> Tensor | None:
        """Optional rejection sampling: a bool mask of samples to keep (None = keep all)."""
        return None
