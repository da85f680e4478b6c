"""ProtoDiffusion: Stage-I prototype learning and the proto-frozen / proto-unfrozen conditioners, through
the real command line on the real digits data. One Stage I (digits presets, seed 0) is shared by every run
here through one cache directory, as frozen and unfrozen runs of one seed share it for a user."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from protobench.cli import main

TINY = ["--budget", "128", "--eval-every", "64", "--eval-samples", "20", "-o", "batch_size=64",
        "-o", "denoiser.base_channels=8", "-o", "denoiser.num_res_blocks=1", "-o", "sampler.steps=5",
        "-o", "metrics=none"]  # no metric: these tests are about the conditioning, not about FID
EMB = "conditioner.class_embedding.weight"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("proto")
    return {"cache": root / "cache", "out": root / "runs"}


def protobench_run(workspace, *args: str) -> dict:
    """`protobench run ... --json` in a real process; returns its record."""
    env = {**os.environ, "PROTOBENCH_CACHE": str(workspace["cache"]), "HF_HUB_OFFLINE": "1"}
    argv = [sys.executable, "-m", "protobench", "run", "--json", "--quiet", "--out", str(workspace["out"]), *TINY, *args]
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=1800)
    assert done.returncode == 0, f"{' '.join(argv)} exited {done.returncode}:\n{done.stderr[-3000:]}"
    return json.loads(done.stdout)


def checkpoints(record: dict) -> list[dict[str, torch.Tensor]]:
    files = sorted((Path(record["path"]) / "checkpoints").glob("step-*.safetensors"))
    assert len(files) == 2, files  # one per evaluation: after step 1 and after step 2
    return [load_file(str(f)) for f in files]


def cached_prototypes(record: dict) -> torch.Tensor:
    return load_file(str(Path(record["prepare"]["stage1"]["artefacts"]) / "stage1.safetensors"))["prototypes"]


@pytest.fixture(scope="module")
def frozen(workspace) -> dict:
    """The first proto run of seed 0: it trains Stage I."""
    return protobench_run(workspace, "--conditioner", "proto-frozen")


@pytest.fixture(scope="module")
def unfrozen(workspace, frozen) -> dict:
    """A second proto run of seed 0, after `frozen`: it reuses Stage I from the cache."""
    return protobench_run(workspace, "--conditioner", "proto-unfrozen")


def test_stage1_loss_is_eq_9_10():
    """Distance-based cross-entropy over p ∝ exp(−γ‖f(x) − e‖²) plus λ‖f(x) − e_y‖²."""
    from protobench_conditioners.stage1 import nearest_prototype, stage1_loss

    gen = torch.Generator().manual_seed(0)
    features, prototypes = torch.randn(6, 4, generator=gen), torch.randn(3, 4, generator=gen)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    gamma, lam = 0.7, 0.05
    expected = 0.0
    for f, y in zip(features, labels, strict=True):
        d2 = ((f - prototypes) ** 2).sum(1)
        p = torch.exp(-gamma * d2) / torch.exp(-gamma * d2).sum()
        expected += (-torch.log(p[y]) + lam * d2[y]) / len(labels)
    torch.testing.assert_close(stage1_loss(features, prototypes, labels, gamma, lam), expected)
    assert nearest_prototype(prototypes + 0.01, prototypes).tolist() == [0, 1, 2]


@pytest.mark.slow
def test_stage1_learns_prototypes_and_is_booked_as_prepare(frozen):
    stage1 = frozen["prepare"]["stage1"]
    assert frozen["status"] == "completed"
    assert stage1["test_accuracy"] >= 0.90, stage1  # nearest-prototype accuracy on the digits test split
    assert stage1["cache_hit"] is False
    # the protobench defaults, not the official ones (docs/deviations.md): N(0,1) prototypes, no ReLU, no backbone file
    assert stage1["options"] == {"dim": 128, "gamma": 1.0, "lam": 0.01, "lr": 1e-3, "batch_size": 128, "epochs": 5,
                                 "init": "normal", "relu": False, "backbone_weights": ""}
    assert frozen["device_seconds"]["prepare"] > 0
    assert frozen["device_seconds"]["prepare"] >= stage1["device_seconds"] > 0
    assert frozen["evals"][0]["device_seconds"]["prepare"] == frozen["device_seconds"]["prepare"]


@pytest.mark.slow
def test_frozen_class_embeddings_are_the_prototypes_bit_for_bit(frozen):
    prototypes = cached_prototypes(frozen)
    assert prototypes.shape == (10, 128)
    for ckpt in checkpoints(frozen):
        assert torch.equal(ckpt[f"model.{EMB}"], prototypes)
        assert torch.equal(ckpt[f"ema.{EMB}"], prototypes)
    first, last = checkpoints(frozen)
    assert not torch.equal(first["model.conditioner.null_embedding"], last["model.conditioner.null_embedding"]), \
        "the learned null token is separate from the prototypes and trains"


@pytest.mark.slow
def test_second_run_of_the_seed_reuses_stage1_and_is_still_charged(frozen, unfrozen):
    stage1 = unfrozen["prepare"]["stage1"]
    assert stage1["cache_hit"] is True
    assert stage1["cache_key"] == frozen["prepare"]["stage1"]["cache_key"]
    assert stage1["device_seconds"] == frozen["prepare"]["stage1"]["device_seconds"]
    assert unfrozen["device_seconds"]["prepare"] >= stage1["device_seconds"]


@pytest.mark.slow
def test_unfrozen_class_embeddings_start_at_the_prototypes_and_train(unfrozen):
    prototypes = cached_prototypes(unfrozen)
    first, last = checkpoints(unfrozen)
    for ckpt in (first, last):
        moved = (ckpt[f"model.{EMB}"] - prototypes).abs()
        assert (moved.amax(1) > 0).all(), "every class row trains"
        assert moved.max() < 0.01, "two AdamW steps from the prototypes, not from somewhere else"
    assert not torch.equal(first[f"model.{EMB}"], last[f"model.{EMB}"])


@pytest.mark.slow
def test_random_baseline_trains_every_class_row_and_the_null_token(workspace, frozen):
    record = protobench_run(workspace, "--conditioner", "random")
    assert "stage1" not in record["prepare"]
    first, last = checkpoints(record)
    moved = (first[f"model.{EMB}"] - last[f"model.{EMB}"]).abs().amax(1)
    assert (moved > 0).all(), f"class rows that did not move: {torch.nonzero(moved == 0).flatten().tolist()}"
    assert not torch.equal(first["model.conditioner.null_embedding"], last["model.conditioner.null_embedding"])


@pytest.mark.slow
def test_plot_prototypes(workspace, frozen, tmp_path):
    from protobench.errors import UsageError
    from protobench.plot_prototypes import plot_prototypes

    png = plot_prototypes(Path(frozen["path"]), tmp_path / "fig" / "prototypes.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    run_dir = Path(frozen["path"]).parent / "not-a-proto-run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text(json.dumps({"run_id": "x", "config": {"conditioner": "random"}}))
    with pytest.raises(UsageError, match="not a proto run"):
        plot_prototypes(run_dir, tmp_path / "x.png")


@pytest.mark.slow
def test_plot_prototypes_command(workspace, frozen, tmp_path):
    output = tmp_path / "p.png"
    result = CliRunner().invoke(main, ["plot", "prototypes", frozen["run_id"], "--out", str(workspace["out"]),
                                       "--output", str(output)])
    assert result.exit_code == 0, result.output
    assert output.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("name", ["cifar10", "stl10", "tiny-imagenet"])
def test_reproduction_configs_resolve(name):
    """Every run of a benchmarks/ sweep resolves to the paper's settings (no data needed to check)."""
    from protobench.config import build_config
    from protobench.plugins import get_registry
    from protobench.sweep import expand, load_sweep_toml

    fixed, lists = load_sweep_toml(Path(__file__).parents[2] / "benchmarks" / f"{name}.toml")
    assert lists == {"conditioner": ["random", "proto-frozen", "proto-unfrozen"], "seed": [0, 1, 2]}
    configs = [build_config({**fixed, **combo}, get_registry()) for combo in expand(lists)]
    for cfg in configs:
        assert cfg.dataset == name and cfg.lr == 2e-4 and cfg.batch_size == (128 if name == "cifar10" else 64)
        assert cfg.options["denoiser"]["base_channels"] == 64
        assert cfg.options["denoiser"]["channel_mult"] == (2, 2, 4, 4)
        assert cfg.options["denoiser"]["num_res_blocks"] == 2 and cfg.options["denoiser"]["dropout"] == 0.1
        assert cfg.options["conditioner"]["dim"] == 128
    assert len({(c.eval_every, c.eval_samples, c.budget) for c in configs}) == 1, "one evaluation cadence for all"
    proto = [c for c in configs if c.conditioner.startswith("proto")]
    assert all(c.options["conditioner"]["stage1_epochs"] == 20 and c.options["conditioner"]["stage1_batch_size"] == 512
               and c.options["conditioner"]["stage1_lr"] == 1e-4 for c in proto)  # paper A.1
