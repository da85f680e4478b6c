"""Loggers: live curves of real runs (TensorBoard, read back with its own reader); a logger that fails
never stops a run; loggers are no part of a run's identity."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from protobench import Logger
from protobench.cli import main
from protobench.config import build_config
from protobench.errors import UsageError
from protobench.testing import TINY_RUN_ARGS

SMALL = ("-o", "denoiser.base_channels=8", "-o", "denoiser.num_res_blocks=1", "-o", "sampler.steps=3",
         "--metric", "intra-fid", "--metric", "fid", "-o", "primary_metric=intra-fid", "-o", "log_every=1")


def run(out: Path, *args: str):
    # two evaluations (64 and 128 images) so that "each evaluation" means more than one
    argv = ["run", "--json", "--quiet", "--out", str(out), *TINY_RUN_ARGS, "--budget", "128", *SMALL, *args]
    return CliRunner().invoke(main, argv, catch_exceptions=False)


def scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


@pytest.mark.slow
def test_tensorboard_has_the_loss_and_every_evaluation_in_images_seen(protobench_cache, tmp_path):
    result = run(tmp_path / "out", "--logger", "tensorboard")
    assert result.exit_code == 0, result.stderr
    record = json.loads(result.stdout)
    found = scalars(Path(record["path"]) / "tensorboard")
    assert [step for step, _ in found["train/loss"]] == [32, 64, 96, 128]  # log_every=1, batches of 32
    key = record["best"]["metric"]
    assert key.startswith("intra-fid[")
    logged = found[f"eval/{key}"]
    assert [step for step, _ in logged] == [e["images_seen"] for e in record["evals"]] == [64, 128]
    assert [v for _, v in logged] == pytest.approx([e["metrics"][key] for e in record["evals"]], rel=1e-6)
    assert f"eval/fid[{key.split('[', 1)[1]}" in found

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(Path(record["path"]) / "tensorboard"))
    acc.Reload()
    assert [e.step for e in acc.Images("samples")] == [64, 128]  # the sample grid of each evaluation


@pytest.mark.slow
def test_a_folder_the_user_names_holds_one_folder_per_run(protobench_cache, tmp_path):
    result = run(tmp_path / "out", "--logger", "tensorboard", "-o", f"logger.dir={tmp_path / 'tb'}")
    assert result.exit_code == 0, result.stderr
    record = json.loads(result.stdout)
    assert not (Path(record["path"]) / "tensorboard").exists()
    assert "train/loss" in scalars(tmp_path / "tb" / record["run_id"])


class Raising(Logger):
    name = "test-raising"

    def __init__(self, run_id: str):
        self.calls = 0

    def log(self, event):
        raise RuntimeError("the tracking server is down")


@pytest.fixture
def raising_logger(protobench_registry):
    protobench_registry.add("logger", Raising, "tests", "0")
    yield
    del protobench_registry.entries["logger"][Raising.name]


@pytest.mark.slow
def test_a_logger_that_raises_leaves_the_run_completed_with_one_warning_line(protobench_cache, tmp_path,
                                                                              raising_logger):
    result = run(tmp_path / "out", "--logger", "test-raising", "--logger", "tensorboard")
    assert result.exit_code == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["status"] == "completed" and len(record["evals"]) == 2
    warnings = [line for line in result.stderr.splitlines() if line.startswith("protobench: logger")]
    assert warnings == ["protobench: logger test-raising failed (RuntimeError: the tracking server is down); "
                        "the run goes on without it"]
    # the other logger went on to the end
    found = scalars(Path(record["path"]) / "tensorboard")
    assert [step for step, _ in found[f"eval/{record['best']['metric']}"]] == [64, 128]


def test_loggers_are_no_part_of_a_runs_identity(protobench_registry, tmp_path):
    plain = build_config({}, protobench_registry)
    watched = build_config({"loggers": "tensorboard", "logger.dir": str(tmp_path)}, protobench_registry)
    assert watched.loggers == ("tensorboard",) and watched.options["logger"] == {"dir": str(tmp_path)}
    assert (watched.run_id(), watched.combination()) == (plain.run_id(), plain.combination())


def test_an_unknown_logger_or_option_is_one_line(protobench_registry):
    with pytest.raises(UsageError, match=r"unknown logger 'nope'; known loggers: .*tensorboard"):
        build_config({"loggers": "nope"}, protobench_registry)
    with pytest.raises(UsageError, match=r"unknown option logger.bogus .*known options: dir"):
        build_config({"loggers": "tensorboard", "logger.bogus": "1"}, protobench_registry)


def test_tensorboard_after_a_resume_keeps_one_point_per_step(protobench_registry, tmp_path):
    """Steps logged after the checkpoint and logged again after the resume appear once, with the new value."""
    logger = protobench_registry.build("logger", "tensorboard", {}, {"run_dir": tmp_path, "run_id": "r"})
    for images, loss in ((32, 1.0), (64, 0.9), (96, 0.8)):
        logger.log({"event": "loss", "step": images // 32, "images_seen": images, "loss": loss, "mse": loss})
    logger.log({"event": "interrupted", "images_seen": 96, "checkpoint": None})
    logger.close()
    resumed = protobench_registry.build("logger", "tensorboard", {}, {"run_dir": tmp_path, "run_id": "r"})
    resumed.log({"event": "resume", "images_seen": 64, "step": 2, "checkpoint": "step-2"})
    for images, loss in ((96, 0.7), (128, 0.6)):
        resumed.log({"event": "loss", "step": images // 32, "images_seen": images, "loss": loss, "mse": loss})
    resumed.close()
    assert scalars(tmp_path / "tensorboard")["train/loss"] == [(32, 1.0), (64, pytest.approx(0.9)),
                                                               (96, pytest.approx(0.7)), (128, pytest.approx(0.6))]
