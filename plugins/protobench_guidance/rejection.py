"""Rejection sampling around any guidance (Graikos et al., "Conditional Generation from Unconditional Diffusion
Models using Denoiser Representations", §4.2 and §5.3): sample with the wrapped guidance (`base`, CFG with
w = 0.01 by default), then keep a sample only if a classifier on the denoiser's unconditional (null-label)
features at t = 300 and 800 gives its class a probability of at least `threshold` (0.2). The classifier can
be fitted few-shot (`n_per_class`). Samples never accepted are dropped by the core and counted.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from protobench import ConditionedNet, Guidance, PrepareContext, UsageError
from protobench_guidance.feature import FeatureGuidance


def build_base(base: str, num_classes: int, guidance_scale: float, base_options: tuple[str, ...]) -> Guidance:
    """The wrapped guidance, built through the registry like any plugin: its options are `key=value` strings,
    typed by its own defaults; `guidance_scale` is passed on when it takes one."""
    from protobench.kit import build_plugin, plugin_options

    if base == RejectionSampling.name:
        raise ValueError("base must be another guidance, not rejection itself")
    known = plugin_options("guidance", base)
    options: dict[str, Any] = {}
    for pair in base_options:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or key not in known:
            raise ValueError(f"base_options: {pair!r} is not key=value for one of {base}'s options "
                             f"({', '.join(sorted(known)) or 'none'})")
        options[key] = value.strip()
    if "guidance_scale" in known:
        options.setdefault("guidance_scale", guidance_scale)
    return build_plugin("guidance", base, options, {"num_classes": num_classes})


class RejectionSampling(Guidance):
    """Options: `base` (the guidance that samples; any registered one), `guidance_scale` (passed to it: the
    paper's CFG w = 0.01), `base_options` (its other options, `key=value,...`), `threshold` (keep a sample when
    p(y | features) ≥ threshold; 0 = keep all, plain `base`), `timesteps` (300,800), `n_per_class` (few-shot
    fit, as §5.1's 50 + 50; 0 = the whole split, as the official rejection classifier), `noise_features`, and
    the classifier fit (`fit_draws`, `fit_epochs`, `fit_lr`, `width`)."""

    name = "rejection"
    prepares = True  # fits the rejection classifier on the trained denoiser before each evaluation

    def __init__(self, num_classes: int = 0, base: str = "cfg", guidance_scale: float = 0.01,
                 base_options: tuple[str, ...] = (), threshold: float = 0.2, timesteps: tuple[int, ...] = (300, 800),
                 n_per_class: int = 0, fit_draws: int = 3, fit_epochs: int = 15, fit_lr: float = 1e-3,
                 width: int = 64, noise_features: bool = True):
        try:
            self.base = build_base(base, num_classes, guidance_scale, tuple(base_options))
        except UsageError as exc:
            raise ValueError(str(exc)) from None
        self.threshold = float(threshold)
        # the judge: a feature classifier that never guides (scale 0), only rejects
        self.judge = FeatureGuidance(num_classes, guidance_scale=0.0, timesteps=tuple(timesteps),
                                     reject_threshold=threshold, fit_draws=fit_draws, fit_epochs=fit_epochs,
                                     fit_lr=fit_lr, width=width, n_per_class=n_per_class,
                                     noise_features=noise_features)
        self.judge.results_key = "rejection_classifier"

    def prepare(self, ctx: PrepareContext) -> None:
        if self.base.prepares:
            self.base.prepare(ctx)
        if self.threshold > 0:
            self.judge.prepare(ctx)

    def eps(self, net: ConditionedNet, x_t: Tensor, t: Tensor, labels: Tensor) -> Tensor:
        return self.base.eps(net, x_t, t, labels)

    def accept(self, net: ConditionedNet, x0: Tensor, labels: Tensor) -> Tensor | None:
        mine = self.judge.accept(net, x0, labels)
        theirs = self.base.accept(net, x0, labels)  # a base that rejects too: both must accept
        if mine is None or theirs is None:
            return theirs if mine is None else mine
        return mine & theirs
