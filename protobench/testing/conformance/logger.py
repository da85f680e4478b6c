"""LoggerTests: what the core relies on from a logger (it observes a run and never stops it)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest

from protobench.testing.conformance._base import PluginTests


def run_events(run_dir: Path) -> list[dict[str, Any]]:
    """The events of a short run as the engine records them, with a real sample grid on disk, and one event
    kind from the future (a logger must let kinds it does not know pass)."""
    from PIL import Image

    grid = Path(run_dir) / "samples" / "000000064.png"
    grid.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    Image.new("L", (40, 20), 128).save(buffer, format="PNG")
    grid.write_bytes(buffer.getvalue())
    seconds = {"prepare": 0.0, "train": 1.5, "eval": 0.5}
    return [
        {"event": "start", "time": 1.0, "device": {"type": "cpu", "name": "cpu", "count": 1}},
        {"event": "prepare", "time": 1.1, "component": "conditioner", "device_seconds": 0.0, "results": {},
         "work": {"images": 0.0, "flops": 0.0}},
        {"event": "loss", "time": 1.2, "step": 1, "images_seen": 32, "loss": 1.0, "mse": 0.9},
        {"event": "loss", "time": 1.3, "step": 2, "images_seen": 64, "loss": 0.8, "mse": 0.7},
        {"event": "stage", "time": 1.4, "name": "evaluating: sampling 20 images", "images_seen": 64},
        {"event": "eval", "time": 1.5, "images_seen": 64, "step": 2, "device_seconds": seconds,
         "work": {"images": {"prepare": 0.0, "train": 64.0}, "flops": {"prepare": 0.0, "train": 1e9}},
         "metrics": {"fid[digits-evaluator]": 100.0, "class-accuracy[digits-evaluator]": 0.5},
         "metrics_se": {"fid[digits-evaluator]": 3.0, "class-accuracy[digits-evaluator]": 0.05},
         "instruments": {"digits-evaluator": "0" * 64}, "samples": 20, "grid": "samples/000000064.png"},
        {"event": "checkpoint", "time": 1.6, "file": "step-000000002.safetensors", "step": 2, "images_seen": 64},
        {"event": "a-kind-from-a-later-version", "time": 1.7, "anything": [1, 2]},
        {"event": "end", "time": 1.8, "status": "completed", "images_seen": 64, "device_seconds": seconds},
    ]


class LoggerTests(PluginTests):
    kind = "logger"

    def build(self, registry, context: dict[str, Any], seed: int = 0, **extra_options):
        return registry.build(self.kind, self.plugin_name, {**self.options, **extra_options}, context)

    @pytest.fixture
    def run_dir(self, tmp_path) -> Path:
        folder = tmp_path / "runs" / "digits-random-cfg-s0-00000000"
        folder.mkdir(parents=True)
        return folder

    @pytest.fixture
    def logger_context(self, plugin_context, run_dir) -> dict[str, Any]:
        return {**plugin_context, "run_dir": run_dir, "run_id": run_dir.name, "run_config": {"seed": 0}}

    def test_takes_every_event_of_a_run(self, plugin_registry, logger_context, run_dir):
        """Every kind of event, in a run's order, including a kind it does not know, then close: no error."""
        logger = self.build(plugin_registry, logger_context)
        for event in run_events(run_dir):
            logger.log(dict(event))
        logger.close()

    def test_leaves_the_run_folder_as_it_was(self, plugin_registry, logger_context, run_dir):
        """A logger observes: the run's own files (events, config, grids) are never changed or removed."""
        events = run_events(run_dir)
        (run_dir / "events.jsonl").write_text("{}\n")
        before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
        logger = self.build(plugin_registry, logger_context)
        for event in events:
            logger.log(dict(event))
        logger.close()
        assert {p: p.read_bytes() for p in before if p.is_file()} == before

    def test_the_core_keeps_it_through_a_run(self, plugin_registry, run_dir, capfd):
        """Behind the core's guard (which drops a logger that raises, with one warning line) it stays active
        through a whole run's events and closes cleanly."""
        from protobench.loggers import RunLoggers
        from protobench.testing.tiny import tiny_config

        cfg = tiny_config(plugin_registry, metrics="none", loggers=self.plugin_name,
                          **{f"logger.{k}": v for k, v in self.options.items()})
        loggers = RunLoggers(cfg, plugin_registry, run_dir)
        assert len(loggers.active) == 1
        for event in run_events(run_dir):
            loggers.log(event)
        assert len(loggers.active) == 1, capfd.readouterr().err
        loggers.close()
        assert "logger" not in capfd.readouterr().err
