"""Guidance from the denoiser's own features, with optional rejection sampling (Graikos et al.,
"Conditional Generation from Unconditional Diffusion Models using Denoiser Representations", paper 002).

A small classifier p_φ(y | f) is fitted on the denoiser's bottleneck features f of noised real images at a
fixed set of timesteps (the paper concatenates the features at t = 300 and 800, §5.3.1). At sampling, the
classifier reads the features of the current estimate x̂0(x_t) re-noised to those timesteps, and its
gradient steers the unconditional ε (eq. 10–13). The ε being guided is always the null-label one: this is
guidance of an unconditional model, and works with `--conditioner none` (the paper's point); with a
conditional denoiser it guides that model's unconditional (null-label) branch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from protobench import NULL_LABEL, ConditionedNet, Guidance, PrepareContext, UsageError

#: the feature classifier's seed (offset by the run's seed)
FEATURE_SEED = 5_000_011


class FeatureClassifier(nn.Module):
    """A small CNN on the concatenated per-timestep feature maps (paper §5.3.1 uses a 4-layer CNN)."""

    def __init__(self, in_channels: int, num_classes: int, width: int = 64):
        super().__init__()
        self.body = nn.Sequential(
            nn.GroupNorm(1, in_channels),  # bottleneck activations have no fixed scale
            nn.Conv2d(in_channels, width, 3, padding=1), nn.SiLU(),
            nn.Conv2d(width, width, 3, padding=1), nn.SiLU(),
        )
        self.head = nn.Linear(width, num_classes)

    def forward(self, features: Tensor) -> Tensor:
        return self.head(self.body(features).mean(dim=(2, 3)))


class FeatureGuidance(Guidance):
    """Options: `guidance_scale` (λ of eq. 10), `timesteps` whose features are concatenated (the paper's
    300,800 suit 64×64 images; on 8×8 digits those are nearly pure noise — feature-classifier test accuracy
    0.38 against 0.86 at the default 100,300), `reject_threshold` (0 = off), the classifier fit (`fit_draws`
    noise draws per training image, `fit_epochs`, `fit_lr`, `width`), and `clamp_x0` (clip x̂0 to [-1, 1]
    before classifying it; off: on digits it lowered the evaluator's class accuracy of guided samples), and
    `n_per_class` (fit on that many training images per class, the paper's few-shot setting; 0 = all of them),
    `noise_features` (noise x0 to each timestep before reading features; false: the clean image with the
    timestep, as the official get_diff_features does).
    """

    name = "feature"
    prepares = True  # fits the feature classifier on the trained denoiser before each evaluation

    def __init__(self, num_classes: int = 0, guidance_scale: float = 5.0, timesteps: tuple[int, ...] = (100, 300),
                 reject_threshold: float = 0.0, fit_draws: int = 3, fit_epochs: int = 15, fit_lr: float = 1e-3,
                 width: int = 64, clamp_x0: bool = False, n_per_class: int = 0, noise_features: bool = True):
        if guidance_scale < 0:
            raise ValueError(f"guidance_scale must be >= 0, got {guidance_scale}")
        if not timesteps or any(t < 0 for t in timesteps):
            raise ValueError(f"timesteps must be a non-empty list of timesteps >= 0, got {timesteps}")
        if not 0.0 <= reject_threshold < 1.0:
            raise ValueError(f"reject_threshold must be in [0, 1) (0 = no rejection), got {reject_threshold}")
        if fit_draws < 1 or fit_epochs < 1:
            raise ValueError("fit_draws and fit_epochs must be >= 1")
        if n_per_class < 0:
            raise ValueError(f"n_per_class must be >= 0 (0 = the whole training split), got {n_per_class}")
        self.n_per_class = int(n_per_class)
        self.noise_features = noise_features
        self.num_classes = num_classes
        self.guidance_scale = float(guidance_scale)
        self.timesteps = tuple(int(t) for t in timesteps)
        self.reject_threshold = float(reject_threshold)
        self.fit_draws, self.fit_epochs, self.fit_lr, self.width = fit_draws, fit_epochs, fit_lr, width
        self.clamp_x0 = clamp_x0
        self.classifier: FeatureClassifier | None = None
        self.schedule = None
        self.probe_noise: Tensor | None = None
        #: where prepare's results go in the run record
        self.results_key = "feature_classifier"

    # -- features ------------------------------------------------------------------------------
    def features(self, net: ConditionedNet, x0: Tensor, noise: Tensor) -> Tensor:
        """Bottleneck features of x0 noised to each of `timesteps` (noise: K×B×C×H×W or K×C×H×W), stacked
        along channels; all K timesteps go through the denoiser as one batch."""
        b, k = x0.shape[0], len(self.timesteps)
        t = torch.tensor(self.timesteps, device=x0.device).repeat_interleave(b)
        noise = noise.to(x0.device, x0.dtype)
        if noise.ndim == x0.ndim:
            noise = noise[:, None].expand(k, *x0.shape)
        x_k = x0.repeat(k, 1, 1, 1)
        if self.noise_features:
            x_k = self.schedule.q_sample(x_k, t, noise.reshape(k * b, *x0.shape[1:]))  # eq. 5
        f = net.features(x_k, t, torch.full((k * b,), NULL_LABEL, device=x0.device, dtype=torch.long))
        return torch.cat(f.chunk(k), dim=1)

    def logits(self, net: ConditionedNet, x0: Tensor) -> Tensor:
        """Classifier logits for clean(ish) images x0, read through the fixed probe noise."""
        self._check_prepared()
        return self.classifier(self.features(net, x0, self.probe_noise))

    def log_prob(self, net: ConditionedNet, x0: Tensor, labels: Tensor) -> Tensor:
        """log p_φ(y | features(x0)) per sample."""
        return F.log_softmax(self.logits(net, x0).float(), dim=1).gather(1, labels.long().clamp(min=0)[:, None])[:, 0]

    # -- fitting -------------------------------------------------------------------------------
    def prepare(self, ctx: PrepareContext) -> None:
        if ctx.net is None or ctx.schedule is None:
            raise RuntimeError("feature guidance: prepare needs ctx.net and ctx.schedule")
        net, self.schedule = ctx.net, ctx.schedule
        if max(self.timesteps) >= self.schedule.timesteps:
            raise UsageError(f"guidance.timesteps {list(self.timesteps)} must be below the schedule's "
                             f"{self.schedule.timesteps} timesteps")
        device = ctx.device
        k = len(self.timesteps)
        gen = torch.Generator().manual_seed(FEATURE_SEED + ctx.seed)
        # one fixed noise draw per timestep, used at sampling: guidance and rejection are deterministic
        self.probe_noise = torch.randn((k, *ctx.image_shape), generator=gen).to(device)
        x_all, y_all = ctx.train.as_float(), ctx.train.labels.long()
        if self.n_per_class:  # few-shot: the first n of each class in a seeded order (Graikos et al. §5.1)
            order = torch.randperm(len(y_all), generator=gen)
            picked = torch.cat([order[y_all[order] == k][:self.n_per_class] for k in range(ctx.num_classes)])
            x_all, y_all = x_all[picked], y_all[picked]
        feats, ys = [], []
        with torch.no_grad():
            for _ in range(self.fit_draws):  # fresh noise per draw: the classifier sees the noise distribution
                for i in range(0, len(x_all), 256):
                    xb = x_all[i:i + 256].to(device)
                    noise = torch.randn((k, *xb.shape), generator=gen)
                    feats.append(self.features(net, xb, noise).float().cpu())
                    ys.append(y_all[i:i + 256])
        f_all, y_fit = torch.cat(feats), torch.cat(ys)
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(FEATURE_SEED + ctx.seed)
            clf = FeatureClassifier(f_all.shape[1], ctx.num_classes, self.width).to(device)
        opt = torch.optim.Adam(clf.parameters(), lr=self.fit_lr)
        clf.train()
        for _ in range(self.fit_epochs):
            perm = torch.randperm(len(f_all), generator=gen)
            for i in range(0, len(f_all), 128):
                idx = perm[i:i + 128]
                loss = F.cross_entropy(clf(f_all[idx].to(device)), y_fit[idx].to(device))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        self.classifier = clf.eval().requires_grad_(False)
        with torch.no_grad():
            x_test, y_test = ctx.test.as_float().to(device), ctx.test.labels.long().to(device)
            pred = torch.cat([self.logits(net, x_test[i:i + 256]).argmax(1) for i in range(0, len(x_test), 256)])
        ctx.results[self.results_key] = {"test_accuracy": float((pred == y_test).float().mean()),
                                         "timesteps": list(self.timesteps), "final_loss": loss.item(),
                                         "fit_images": len(y_all)}

    def _check_prepared(self) -> None:
        if self.classifier is None:
            raise RuntimeError("feature guidance: prepare() must fit the feature classifier before sampling")

    # -- sampling ------------------------------------------------------------------------------
    def eps(self, net: ConditionedNet, x_t: Tensor, t: Tensor, labels: Tensor) -> Tensor:
        null = torch.full_like(labels, NULL_LABEL)
        if self.guidance_scale == 0.0:
            return net(x_t, t, null)
        self._check_prepared()
        with torch.enable_grad():  # samplers run under no_grad
            x = x_t.detach().requires_grad_(True)
            eps = net(x, t, null)
            x0 = self.schedule.x0_from_eps(x, t, eps)  # eq. 11
            if self.clamp_x0:  # early estimates are far outside the data range the classifier was fitted on
                x0 = x0.clamp(-1, 1)
            # p(y | x_t) ≈ p(y | x̂0(x_t))  (eq. 12); null labels are not guided
            log_p = self.log_prob(net, x0, labels) * (labels != NULL_LABEL)
            (grad,) = torch.autograd.grad(log_p.sum(), x)
        # ε̂ = ε(x_t, t) − λ sqrt(1 − ᾱ_t) ∇_{x_t} log p(y | x̂0(x_t))  (eq. 10/13, λ = guidance_scale)
        return eps.detach() - self.guidance_scale * self.schedule.sqrt_one_minus_alpha_bar(t, x_t) * grad

    def accept(self, net: ConditionedNet, x0: Tensor, labels: Tensor) -> Tensor | None:
        """Rejection sampling (paper §5.3.1): keep samples whose p(y | features) ≥ reject_threshold."""
        if self.reject_threshold <= 0.0:
            return None
        # judge the image as it will leave the system (uint8), so a kept sample stays above the threshold
        x0 = ((x0.clamp(-1, 1) + 1) * 127.5).round().div(127.5).sub(1.0)
        with torch.no_grad():
            return self.log_prob(net, x0, labels).exp() >= self.reject_threshold
