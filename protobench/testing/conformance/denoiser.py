"""DenoiserTests: what the core relies on from a denoiser."""

from __future__ import annotations

from typing import ClassVar

import torch

from protobench.interfaces import Conditioning, ConditionSpec
from protobench.testing.conformance._base import (
    ModuleChecks,
    PluginTests,
    conditioning_fields,
    round_trip,
    unregistered_tensors,
)


class DenoiserTests(PluginTests, ModuleChecks):
    kind = "denoiser"
    #: the conditioning kinds the denoiser must accept: embedding, CBN modulation, input planes, none
    cond_specs: ClassVar[tuple[ConditionSpec, ...]] = (
        ConditionSpec(), ConditionSpec(emb_dim=8), ConditionSpec(norm_dim=8), ConditionSpec(planes=1),
    )
    batch: ClassVar[int] = 4

    def build_for(self, registry, context, spec: ConditionSpec, seed: int = 0):
        return self.build(registry, {**context, "cond": spec}, seed=seed).eval()

    def inputs(self, spec: ConditionSpec, image_shape, seed: int = 0, dtype=torch.float32):
        gen = torch.Generator().manual_seed(seed)
        c, h, w = image_shape
        b = self.batch
        x_t = torch.randn((b, c, h, w), generator=gen, dtype=dtype)
        t = torch.randint(0, 1000, (b,), generator=gen)

        def field(n, *shape):
            return torch.randn((b, n, *shape), generator=gen, dtype=dtype) if n else None

        return x_t, t, Conditioning(emb=field(spec.emb_dim), norm=field(spec.norm_dim), planes=field(spec.planes, h, w))

    def test_tensors_are_registered(self, plugin_registry, plugin_context):
        for spec in self.cond_specs:
            module = self.build_for(plugin_registry, plugin_context, spec)
            assert unregistered_tensors(module) == [], f"with {spec}: register these as buffers"

    def test_output_shape_and_dtype(self, plugin_registry, plugin_context):
        """ε has the shape of x_t, float32, finite, for every kind of conditioning."""
        shape = plugin_context["image_shape"]
        for spec in self.cond_specs:
            net = self.build_for(plugin_registry, plugin_context, spec)
            x_t, t, cond = self.inputs(spec, shape)
            with torch.no_grad():
                eps = net(x_t, t, cond)
            assert eps.shape == x_t.shape, f"with {spec}"
            assert eps.dtype == torch.float32 and torch.isfinite(eps).all()

    def test_uses_its_conditioning(self, plugin_registry, plugin_context):
        """Different conditioning gives a different ε (weights perturbed: zero-initialised layers are allowed)."""
        shape = plugin_context["image_shape"]
        for spec in self.cond_specs:
            if spec == ConditionSpec():
                continue
            net = self.build_for(plugin_registry, plugin_context, spec)
            with torch.no_grad():
                for p in net.parameters():
                    p.add_(0.05 * torch.randn_like(p))
                x_t, t, cond_a = self.inputs(spec, shape, seed=0)
                _, _, cond_b = self.inputs(spec, shape, seed=1)
                diff = (net(x_t, t, cond_a) - net(x_t, t, cond_b)).abs().max()
            assert diff > 1e-6, f"ε ignores the conditioning with {spec}"

    def test_rows_are_independent(self, plugin_registry, plugin_context):
        """In eval mode a sample's ε does not depend on the rest of the batch (sharded evaluation)."""
        shape = plugin_context["image_shape"]
        for spec in self.cond_specs:
            net = self.build_for(plugin_registry, plugin_context, spec)
            x_t, t, cond = self.inputs(spec, shape)
            part = Conditioning(**{k: (v[:2] if v is not None else None) for k, v in conditioning_fields(cond).items()})
            with torch.no_grad():
                torch.testing.assert_close(net(x_t, t, cond)[:2], net(x_t[:2], t[:2], part), atol=1e-5, rtol=1e-4)

    def test_deterministic_under_seed(self, plugin_registry, plugin_context):
        shape = plugin_context["image_shape"]
        spec = self.cond_specs[-1]
        x_t, t, cond = self.inputs(spec, shape)
        with torch.no_grad():
            a = self.build_for(plugin_registry, plugin_context, spec, seed=5)(x_t, t, cond)
            b = self.build_for(plugin_registry, plugin_context, spec, seed=5)(x_t, t, cond)
        torch.testing.assert_close(a, b, atol=0, rtol=0)

    def test_state_dict_round_trip(self, plugin_registry, plugin_context, tmp_path):
        shape = plugin_context["image_shape"]
        for i, spec in enumerate(self.cond_specs):
            a = self.build_for(plugin_registry, plugin_context, spec, seed=0)
            b = self.build_for(plugin_registry, plugin_context, spec, seed=1)
            b.load_state_dict(round_trip(a, tmp_path / f"d{i}.safetensors"))
            x_t, t, cond = self.inputs(spec, shape)
            with torch.no_grad():
                torch.testing.assert_close(a(x_t, t, cond), b(x_t, t, cond), atol=0, rtol=0)

    def test_moves_with_to(self, plugin_registry, plugin_context):
        """After `.to(torch.float64)` (and to CUDA when there is one) ε follows the weights."""
        shape = plugin_context["image_shape"]
        spec = self.cond_specs[-1]
        net = self.build_for(plugin_registry, plugin_context, spec).to(torch.float64)
        x_t, t, cond = self.inputs(spec, shape, dtype=torch.float64)
        with torch.no_grad():
            assert net(x_t, t, cond).dtype == torch.float64
        if torch.cuda.is_available():
            net = net.float().to("cuda")
            x_t, t, cond = self.inputs(spec, shape)
            cond = Conditioning(**{k: (v.cuda() if v is not None else None) for k, v in conditioning_fields(cond).items()})
            with torch.no_grad():
                assert net(x_t.cuda(), t.cuda(), cond).device.type == "cuda"

    def test_features(self, plugin_registry, plugin_context):
        """`features` is optional: NotImplementedError, or (B, C', H', W') activations."""
        shape = plugin_context["image_shape"]
        spec = self.cond_specs[-1]
        net = self.build_for(plugin_registry, plugin_context, spec)
        x_t, t, cond = self.inputs(spec, shape)
        try:
            with torch.no_grad():
                feats = net.features(x_t, t, cond)
        except NotImplementedError:
            return
        assert feats.ndim == 4 and feats.shape[0] == self.batch and torch.isfinite(feats).all()
