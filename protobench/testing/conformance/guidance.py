"""GuidanceTests: what the core relies on from a guidance."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from protobench.interfaces import NULL_LABEL, Guidance
from protobench.testing.conformance._base import PluginTests, overrides, prepare_context
from protobench.testing.tiny import tiny_config, tiny_net
from protobench.vocabulary import flatten_options


class GuidanceTests(PluginTests):
    kind = "guidance"

    @pytest.fixture(scope="class")
    def net(self, plugin_registry, plugin_dataset):
        return tiny_net(plugin_registry, plugin_dataset.num_classes, plugin_dataset.image_shape)

    @pytest.fixture(scope="class")
    def prepared(self, plugin_registry, plugin_context, plugin_dataset, net, tmp_path_factory):
        from protobench.diffusion import NoiseSchedule

        guidance = self.build(plugin_registry, plugin_context)
        if guidance.prepares:
            guidance.prepare(prepare_context(plugin_dataset, tmp_path_factory.mktemp("guidance-cache"), net=net,
                                             schedule=NoiseSchedule("linear", 1000)))
        return guidance

    def test_prepares_is_declared(self, plugin_entry):
        """`prepares` says whether the class has a prepare step: the core calls `prepare` only when it is True."""
        assert isinstance(plugin_entry.cls.prepares, bool)
        if overrides(plugin_entry.cls, "prepare", Guidance):
            assert plugin_entry.cls.prepares, "a guidance that defines prepare() must not set prepares = False"

    def inputs(self, dataset, seed: int = 0):
        gen = torch.Generator().manual_seed(seed)
        labels = torch.tensor([0, 1, NULL_LABEL, 3, dataset.num_classes - 1])
        x_t = torch.randn((labels.shape[0], *dataset.image_shape), generator=gen)
        t = torch.randint(0, 1000, (labels.shape[0],), generator=gen)
        return x_t, t, labels

    def test_eps_shape_and_dtype(self, prepared, net, plugin_dataset):
        """The guided ε has x_t's shape and dtype, finite, for real and null labels alike."""
        x_t, t, labels = self.inputs(plugin_dataset)
        with torch.no_grad():
            eps = prepared.eps(net, x_t, t, labels)
        assert eps.shape == x_t.shape and eps.dtype == x_t.dtype and torch.isfinite(eps).all()

    def test_deterministic(self, prepared, net, plugin_dataset):
        x_t, t, labels = self.inputs(plugin_dataset)
        with torch.no_grad():
            torch.testing.assert_close(prepared.eps(net, x_t, t, labels), prepared.eps(net, x_t, t, labels))

    def test_rows_are_independent(self, prepared, net, plugin_dataset):
        """A sample's guided ε does not depend on the rest of the batch (sharded sampling)."""
        x_t, t, labels = self.inputs(plugin_dataset)
        with torch.no_grad():
            full = prepared.eps(net, x_t, t, labels)
            part = prepared.eps(net, x_t[:2], t[:2], labels[:2])
        torch.testing.assert_close(full[:2], part, atol=1e-5, rtol=1e-4)

    def test_accept(self, prepared, net, plugin_dataset):
        """`accept` (rejection sampling) is None or one bool per sample."""
        x0 = torch.rand((4, *plugin_dataset.image_shape), generator=torch.Generator().manual_seed(0)) * 2 - 1
        labels = torch.tensor([0, 1, 2, 3]) % plugin_dataset.num_classes
        with torch.no_grad():
            keep = prepared.accept(net, x0, labels)
        if keep is not None:
            assert keep.dtype == torch.bool and keep.shape == (4,)

    def test_samples_in_a_run_and_prepare_is_timed(self, plugin_registry, tmp_path, protobench_cache):
        """A tiny run sampling through this guidance completes; its prepare stage is booked under `prepare`."""
        from protobench.training.run import Run

        user = {"guidance": self.plugin_name, "metrics": "none", **flatten_options({"guidance": self.options})}
        record = Run(tiny_config(plugin_registry, **user), plugin_registry, tmp_path / "out", show_progress=False).execute()
        assert record["status"] == "completed", record.get("error")
        if plugin_registry.get("guidance", self.plugin_name).cls.prepares:
            events = [json.loads(line) for line in (Path(record["path"]) / "events.jsonl").read_text().splitlines()]
            assert any(e["event"] == "prepare" and e.get("component") == "guidance" for e in events)
            assert record["evals"][0]["device_seconds"]["prepare"] > 0
