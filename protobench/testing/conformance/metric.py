"""MetricTests: what the core relies on from a metric."""

from __future__ import annotations

import math
import re

import pytest
import torch

from protobench.interfaces import DataSplit, Reference
from protobench.testing.conformance._base import PluginTests

#: metric keys carry their feature extractor: ``fid[digits-evaluator]``, per class ``fid-per-class[...]/3``
METRIC_KEY = re.compile(r"[A-Za-z0-9_.\-]+\[[A-Za-z0-9_.\-]+\](/[A-Za-z0-9_.\-]+)?")


class MetricTests(PluginTests):
    kind = "metric"

    @pytest.fixture(scope="class")
    def reference(self, plugin_dataset, protobench_cache_dir):
        return Reference(plugin_dataset, protobench_cache_dir, torch.device("cpu"), seed=0)

    @pytest.fixture(scope="class")
    def metric(self, plugin_registry, plugin_context, reference):
        metric = self.build(plugin_registry, plugin_context)
        metric.prepare(reference)
        return metric

    @pytest.fixture(scope="class")
    def real(self, plugin_dataset) -> DataSplit:
        return plugin_dataset.load()[1]

    @pytest.fixture(scope="class")
    def noise(self, real) -> DataSplit:
        gen = torch.Generator().manual_seed(0)
        return DataSplit(torch.randint(0, 256, real.images.shape, generator=gen, dtype=torch.uint8), real.labels)

    def test_values(self, metric, reference, real):
        """A dict of finite floats whose keys carry their feature extractor: `name[extractor]`."""
        values = metric.compute(real.images, real.labels, reference)
        assert isinstance(values, dict) and values
        for key, value in values.items():
            assert METRIC_KEY.fullmatch(key), f"metric key {key!r} should look like 'fid[digits-evaluator]'"
            assert isinstance(value, float) and math.isfinite(value), f"{key} = {value!r}"

    def test_deterministic(self, metric, reference, real):
        assert metric.compute(real.images, real.labels, reference) == metric.compute(real.images, real.labels, reference)

    def test_real_beats_noise(self, metric, reference, real, noise):
        """Held-out real images score better than uniform noise, in the direction `higher_is_better` says."""
        on_real = metric.compute(real.images, real.labels, reference)
        on_noise = metric.compute(noise.images, noise.labels, reference)
        for key, value in on_real.items():
            better = value > on_noise[key] if metric.higher_is_better else value < on_noise[key]
            assert better, f"{key}: real {value} vs noise {on_noise[key]} (higher_is_better={metric.higher_is_better})"

    def test_standard_errors(self, metric, reference, real):
        """`standard_errors` (optional) names only keys `compute` returns, each a finite value >= 0."""
        values = metric.compute(real.images, real.labels, reference)
        errors = metric.standard_errors(real.images, real.labels, reference)
        assert isinstance(errors, dict) and set(errors) <= set(values), f"{set(errors) - set(values)} not computed"
        for key, se in errors.items():
            assert isinstance(se, float) and math.isfinite(se) and se >= 0, f"{key}: se = {se!r}"
