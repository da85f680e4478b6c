"""The example plugin checked the way any third-party plugin is: protobench.testing's conformance
classes and fixtures, and the installed command line."""

from __future__ import annotations

import json
import subprocess

import torch

from protobench import NULL_LABEL
from protobench.testing import ConditionerTests, LoggerTests, MetricTests


class TestOneHot(ConditionerTests):
    plugin_name = "onehot"
    options = {"scale": 2.0}


class TestPixelHistogramDistance(MetricTests):
    plugin_name = "pixel-histogram-distance"
    options = {"bins": 16}


class TestCSVMetrics(LoggerTests):
    plugin_name = "csv-metrics"


def test_onehot_is_fixed_and_the_null_label_is_zero(protobench_registry, tiny_dataset):
    onehot = protobench_registry.build("conditioner", "onehot", {"scale": 2.0}, {"num_classes": 10})
    assert list(onehot.parameters()) == []  # nothing for the optimiser
    emb = onehot(torch.tensor([3, NULL_LABEL])).emb
    assert emb[0].tolist() == [2.0 if k == 3 else 0.0 for k in range(10)]
    assert emb[1].abs().sum() == 0


def test_listed_by_protobench_plugins():
    out = subprocess.run(["protobench", "plugins", "--json"], capture_output=True, text=True, check=True).stdout
    listed = json.loads(out)
    assert {"name": "onehot", "plugin": "example", "version": "0.1.0"} in listed["conditioner"]
    assert {"name": "pixel-histogram-distance", "plugin": "example", "version": "0.1.0"} in listed["metric"]
    assert {"name": "csv-metrics", "plugin": "example", "version": "0.1.0"} in listed["logger"]


def test_a_run_with_the_plugin(tiny_run):
    """`protobench run --conditioner onehot --metric pixel-histogram-distance` trains and evaluates."""
    record = tiny_run("--conditioner", "onehot", "--metric", "pixel-histogram-distance")
    assert record["status"] == "completed"
    assert record["plugins"]["conditioner:onehot"] == {"plugin": "example", "version": "0.1.0"}
    value = record["evals"][-1]["metrics"]["pixel-histogram-distance[pixels]"]
    assert 0.0 <= value <= 1.0


def test_a_run_logged_by_the_plugin(tiny_run):
    """`--logger csv-metrics`: one CSV row per metric per evaluation, beside the run's own files."""
    import csv
    from pathlib import Path

    record = tiny_run("--metric", "pixel-histogram-distance", "--logger", "csv-metrics")
    rows = list(csv.DictReader((Path(record["path"]) / "metrics.csv").open()))
    assert [(int(r["images_seen"]), r["metric"]) for r in rows] == [(64, "pixel-histogram-distance[pixels]")]
    assert float(rows[0]["value"]) == record["evals"][-1]["metrics"]["pixel-histogram-distance[pixels]"]
