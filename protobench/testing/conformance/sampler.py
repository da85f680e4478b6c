"""SamplerTests: what the core relies on from a sampler."""

from __future__ import annotations

import math
from typing import ClassVar

import pytest
import torch

from protobench.testing.conformance._base import PluginTests


class SamplerTests(PluginTests):
    kind = "sampler"
    #: timesteps of the schedule the checks sample with (T=1000 in runs; fewer keeps ancestral samplers fast)
    timesteps: ClassVar[int] = 100
    shape: ClassVar[tuple[int, ...]] = (3, 1, 8, 8)

    @pytest.fixture(scope="class")
    def sampler(self, plugin_registry, plugin_context):
        return self.build(plugin_registry, plugin_context)

    @pytest.fixture(scope="class")
    def schedule(self):
        from protobench.diffusion import NoiseSchedule

        return NoiseSchedule("linear", self.timesteps)

    def test_output(self, sampler, schedule):
        """x0 of the asked shape, float, finite, in [-1, 1]."""
        calls = []

        def eps_fn(x_t, t):
            calls.append((tuple(x_t.shape), t.dtype, t.min().item(), t.max().item()))
            return 0.5 * x_t

        x0 = sampler.sample(eps_fn, schedule, self.shape, torch.Generator().manual_seed(0))
        assert tuple(x0.shape) == self.shape and x0.is_floating_point() and torch.isfinite(x0).all()
        assert x0.min() >= -1 and x0.max() <= 1
        assert calls, "the sampler never called eps_fn"
        for shape, dtype, lo, hi in calls:
            assert shape == self.shape and dtype == torch.long and 0 <= lo <= hi < schedule.timesteps

    def test_deterministic_under_seed(self, sampler, schedule):
        def eps_fn(x_t, t):
            return 0.3 * x_t

        runs = [sampler.sample(eps_fn, schedule, self.shape, torch.Generator().manual_seed(s)) for s in (1, 1, 2)]
        torch.testing.assert_close(runs[0], runs[1], atol=0, rtol=0)
        assert not torch.equal(runs[0], runs[2]), "different seeds gave the same samples"

    def test_recovers_a_point_mass(self, sampler, schedule):
        """With the exact ε of data that is one point c, ε(x_t) = (x_t − √ᾱ_t c)/√(1−ᾱ_t), every sample is c."""
        c = torch.linspace(-0.6, 0.6, math.prod(self.shape[1:])).view(1, *self.shape[1:])
        abar = schedule.alpha_bar.float()

        def eps_fn(x_t, t):
            a = abar[t].view(-1, *([1] * (x_t.ndim - 1)))
            return (x_t - a.sqrt() * c) / (1 - a).sqrt()  # from q(x_t | x0), eq. 4 of Ho et al. 2020

        x0 = sampler.sample(eps_fn, schedule, self.shape, torch.Generator().manual_seed(0))
        torch.testing.assert_close(x0, c.expand(self.shape), atol=2e-2, rtol=0)
