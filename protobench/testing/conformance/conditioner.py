"""ConditionerTests: what the core relies on from a conditioner (and `loss_context` for `extra_loss`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
from torch import Tensor

from protobench.interfaces import NULL_LABEL, Conditioner, Conditioning, ConditionSpec, LossContext
from protobench.testing.conformance._base import (
    ModuleChecks,
    PluginTests,
    assert_same_conditioning,
    conditioning_fields,
    overrides,
    prepare_context,
    round_trip,
)
from protobench.testing.tiny import tiny_config
from protobench.vocabulary import flatten_options


class ConditionerTests(PluginTests, ModuleChecks):
    kind = "conditioner"
    batch_labels: ClassVar[tuple[int, ...]] = (0, 1, 2, NULL_LABEL, 1, NULL_LABEL, 9)

    @pytest.fixture(scope="class")
    def prepared(self, plugin_registry, plugin_context, plugin_dataset, tmp_path_factory):
        """Built with seed 0 and, if it has a `prepare` stage, prepared on the tiny dataset."""
        conditioner = self.build(plugin_registry, plugin_context, seed=0)
        if overrides(type(conditioner), "prepare", Conditioner):
            conditioner.prepare(prepare_context(plugin_dataset, tmp_path_factory.mktemp("prepare-cache")))
        return conditioner.eval()

    def labels(self, num_classes: int) -> Tensor:
        return torch.tensor([y if y == NULL_LABEL else y % num_classes for y in self.batch_labels])

    def test_spec_and_output_shapes(self, prepared, plugin_dataset):
        """Each conditioning field is present exactly when the spec sizes it, (B, dim) or (B, planes, H, W), float32."""
        spec = prepared.spec
        assert isinstance(spec, ConditionSpec)
        assert min(spec.emb_dim, spec.norm_dim, spec.planes) >= 0
        labels = self.labels(plugin_dataset.num_classes)
        with torch.no_grad():
            out = prepared(labels)
        assert isinstance(out, Conditioning)
        _, h, w = plugin_dataset.image_shape
        b = labels.shape[0]
        expected = {"emb": (b, spec.emb_dim), "norm": (b, spec.norm_dim), "planes": (b, spec.planes, h, w)}
        sizes = {"emb": spec.emb_dim, "norm": spec.norm_dim, "planes": spec.planes}
        for field, value in conditioning_fields(out).items():
            if sizes[field] == 0:
                assert value is None, f"spec.{field} is 0 but the conditioner emits {field}"
                continue
            assert value is not None, f"spec sizes {field} but the conditioner emits none"
            assert tuple(value.shape) == expected[field]
            assert value.dtype == torch.float32
            assert torch.isfinite(value).all()

    def test_null_label(self, prepared, plugin_dataset):
        """NULL_LABEL is one token: every null row is equal, and (if it conditions at all) unlike some class."""
        spec = prepared.spec
        c = plugin_dataset.num_classes
        labels = torch.tensor([NULL_LABEL, 0, NULL_LABEL, *range(c)])
        with torch.no_grad():
            out = prepared(labels)
        for field, value in conditioning_fields(out).items():
            if value is None:
                continue
            torch.testing.assert_close(value[0], value[2], msg=f"two null rows of {field} differ")
        if spec == ConditionSpec():
            return
        differs = any((value[0] - value[3:]).flatten(1).abs().amax(1).gt(1e-6).any()
                      for value in conditioning_fields(out).values() if value is not None)
        assert differs, "the null label conditions exactly like every class: classifier-free guidance would be a no-op"

    def test_rows_are_independent(self, prepared, plugin_dataset):
        """A label's conditioning does not depend on the rest of the batch (eval is sharded over ranks)."""
        labels = self.labels(plugin_dataset.num_classes)
        with torch.no_grad():
            full = prepared(labels)
            part = prepared(labels[:3])
        for field, value in conditioning_fields(full).items():
            if value is not None:
                torch.testing.assert_close(value[:3], getattr(part, field), atol=1e-5, rtol=1e-5)

    def test_deterministic_under_seed(self, plugin_registry, plugin_context, plugin_dataset, tmp_path):
        """Built (and prepared) twice under one seed, a conditioner is the same conditioner."""
        labels = self.labels(plugin_dataset.num_classes)
        outs = []
        for i in range(2):
            conditioner = self.build(plugin_registry, plugin_context, seed=3)
            if overrides(type(conditioner), "prepare", Conditioner):
                conditioner.prepare(prepare_context(plugin_dataset, tmp_path / f"cache{i}", seed=3))
            with torch.no_grad():
                outs.append(conditioner.eval()(labels))
        assert_same_conditioning(*outs)

    def test_state_dict_round_trip(self, prepared, plugin_registry, plugin_context, plugin_dataset, tmp_path):
        """A fresh, unprepared instance loading a checkpoint behaves exactly like the prepared one
        (a resumed run does not prepare again)."""
        fresh = self.build(plugin_registry, plugin_context, seed=1)
        fresh.load_state_dict(round_trip(prepared, tmp_path / "conditioner.safetensors"))
        labels = self.labels(plugin_dataset.num_classes)
        with torch.no_grad():
            assert_same_conditioning(prepared(labels), fresh.eval()(labels))
        ctx = loss_context(plugin_dataset, labels)
        a, b = prepared.extra_loss(ctx), fresh.extra_loss(ctx)
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b)

    def test_moves_with_to(self, prepared, plugin_registry, plugin_context, plugin_dataset, tmp_path):
        """`.to(dtype/device)` moves all its state: float64 in, float64 out (and CUDA when there is one)."""
        targets: list[Any] = [torch.float64] + (["cuda"] if torch.cuda.is_available() else [])
        labels = self.labels(plugin_dataset.num_classes)
        for target in targets:
            moved = self.build(plugin_registry, plugin_context, seed=1)
            moved.load_state_dict(round_trip(prepared, tmp_path / "c.safetensors"))
            moved = moved.to(target).eval()
            device = torch.device(target) if isinstance(target, str) else torch.device("cpu")
            with torch.no_grad():
                out = moved(labels.to(device))
            for field, value in conditioning_fields(out).items():
                if value is None:
                    continue
                assert value.device.type == device.type, f"{field} stayed on {value.device}"
                if target is torch.float64:
                    assert value.dtype == torch.float64, f"{field} is {value.dtype} after .to(torch.float64)"

    def test_extra_loss(self, prepared, plugin_dataset):
        """`extra_loss` is None or a finite scalar the optimiser can differentiate."""
        labels = self.labels(plugin_dataset.num_classes)
        loss = prepared.train().extra_loss(loss_context(plugin_dataset, labels, requires_grad=True))
        prepared.eval()
        if loss is None:
            return
        assert isinstance(loss, Tensor) and loss.ndim == 0 and loss.is_floating_point()
        assert torch.isfinite(loss)
        if loss.requires_grad:
            loss.backward()

    def test_prepare_reuses_cache_and_still_charges(self, plugin_registry, plugin_context, plugin_dataset, tmp_path):
        """Work `prepare` keeps in the cache is charged again (`ctx.charge`) when a later run reuses it."""
        conditioner = self.build(plugin_registry, plugin_context, seed=0)
        if not overrides(type(conditioner), "prepare", Conditioner):
            pytest.skip("no prepare stage")
        cache = tmp_path / "cache"
        conditioner.prepare(prepare_context(plugin_dataset, cache))
        if not cache.exists() or not any(cache.rglob("*")):
            pytest.skip("prepare caches nothing")
        again = self.build(plugin_registry, plugin_context, seed=0)
        ctx = prepare_context(plugin_dataset, cache)
        again.prepare(ctx)
        assert ctx.cached_device_seconds > 0, "prepare reused cached work without charging its device-seconds"

    def test_learns_prototypes_is_declared(self, plugin_registry):
        """`learns_prototypes` is a bool, and true only for a conditioner with a prepare step (Stage I)."""
        cls = plugin_registry.get("conditioner", self.plugin_name).cls  # a lazy registration's declaration is checked
        assert isinstance(cls.learns_prototypes, bool)
        if cls.learns_prototypes:
            assert overrides(cls, "prepare", Conditioner), "learns_prototypes, but no prepare step to learn them in"

    def test_trains_in_a_run_and_prepare_is_timed(self, plugin_registry, tmp_path, protobench_cache):
        """A tiny run with this conditioner completes; its prepare stage is booked under `prepare`."""
        from protobench.training.run import Run

        user = {"conditioner": self.plugin_name, "metrics": "none", **flatten_options({"conditioner": self.options})}
        record = Run(tiny_config(plugin_registry, **user), plugin_registry, tmp_path / "out", show_progress=False).execute()
        assert record["status"] == "completed", record.get("error")
        assert record["evals"], "the run evaluated nothing"
        if overrides(plugin_registry.get("conditioner", self.plugin_name).cls, "prepare", Conditioner):
            events = [json.loads(line) for line in (Path(record["path"]) / "events.jsonl").read_text().splitlines()]
            prepared = [e for e in events if e["event"] == "prepare" and e.get("component") == "conditioner"]
            assert prepared and prepared[0]["device_seconds"] > 0
            assert record["device_seconds"]["prepare"] > 0
            assert record["evals"][0]["device_seconds"]["prepare"] == record["device_seconds"]["prepare"]
            if plugin_registry.get("conditioner", self.plugin_name).cls.learns_prototypes:
                assert "stage1" in prepared[0]["results"], "learns_prototypes, but no Stage-I record in its results"


def loss_context(dataset, labels: Tensor, requires_grad: bool = False) -> LossContext:
    from protobench.diffusion import NoiseSchedule

    train, _ = dataset.load()
    gen = torch.Generator().manual_seed(0)
    b = labels.shape[0]
    x0 = train.as_float()[:b]
    schedule = NoiseSchedule("linear", 1000)
    t = torch.randint(0, 1000, (b,), generator=gen)
    eps = torch.randn(x0.shape, generator=gen)
    x_t = schedule.q_sample(x0, t, eps)
    eps_pred = (eps + 0.1 * torch.randn(x0.shape, generator=gen)).requires_grad_(requires_grad)
    return LossContext(x0=x0, x_t=x_t, t=t, labels=labels, eps=eps, eps_pred=eps_pred,
                       x0_pred=schedule.x0_from_eps(x_t, t, eps_pred))
