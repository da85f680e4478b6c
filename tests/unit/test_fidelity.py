"""Fidelity to the sources: the official Stage-I options, the controls that isolate the prototypes'
claim, a pretrained backbone from a local safetensors file, and Graikos et al.'s CFG + rejection pipeline;
all through the real command line on the real digits data."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file, save_file

from protobench.cli import main

TINY = ["--budget", "128", "--eval-every", "64", "--eval-samples", "20", "-o", "batch_size=64",
        "-o", "denoiser.base_channels=8", "-o", "denoiser.num_res_blocks=1", "-o", "sampler.steps=5",
        "--quiet", "--json"]
NO_METRIC = ["-o", "metrics=none"]  # these runs are about the conditioning, not about FID
#: the official Stage I (Models.py): kaiming prototypes, ReLU after the projection, s = 2; two short epochs
OFFICIAL = ["-o", "conditioner.stage1_init=kaiming", "-o", "conditioner.stage1_relu=true", "-o", "conditioner.gamma=2",
            "-o", "conditioner.stage1_epochs=2"]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, monkeypatch_module) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("fidelity")
    monkeypatch_module.setenv("PROTOBENCH_CACHE", str(root / "cache"))
    return {"out": root / "runs", "root": root}


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def run(workspace, *args: str, expect: int = 0, out: Path | None = None):
    result = CliRunner().invoke(main, ["run", "--out", str(out or workspace["out"]), *TINY, *args])
    assert result.exit_code == expect, f"{args} exited {result.exit_code}:\n{result.output[-3000:]}"
    return json.loads(result.stdout) if expect == 0 else result


def checkpoint(record: dict) -> dict[str, torch.Tensor]:
    return load_file(str(sorted((Path(record["path"]) / "checkpoints").glob("step-*.safetensors"))[-1]))


def stage1_prototypes(record: dict) -> torch.Tensor:
    return load_file(str(Path(record["prepare"]["stage1"]["artefacts"]) / "stage1.safetensors"))["prototypes"]


@pytest.fixture(scope="module")
def official(workspace) -> dict:
    return run(workspace, "--conditioner", "proto-unfrozen", *OFFICIAL, *NO_METRIC)


# -- the official Stage I, and what the record says about the prototypes -------------------------


def test_official_stage1_run_records_prototype_shift_and_geometry(official):
    stage1 = official["prepare"]["stage1"]
    assert official["status"] == "completed"
    assert stage1["options"]["init"] == "kaiming" and stage1["options"]["relu"] is True
    assert stage1["options"]["gamma"] == 2.0
    # kaiming_normal_ of the official dim × C codebook: rows of norm ≈ sqrt(2·dim/C) = 5.1, not N(0, 1)'s 11.3
    assert stage1_prototypes(official).norm(dim=1).mean() < 8.0
    assert stage1["prototype_shift"] > 0 and -1.0 <= stage1["prototype_geometry"] <= 1.0
    for ev in official["evals"]:
        diag = ev["conditioner"]
        assert diag["stage1_shift"] == pytest.approx(stage1["prototype_shift"])
        assert -1.0 <= diag["prototype_geometry"] <= 1.0
    # unfrozen: the table moves in diffusion training, from exactly the prototypes
    assert official["evals"][0]["conditioner"]["prototype_shift"] > 0
    torch.testing.assert_close(checkpoint(official)["model.conditioner.start"], stage1_prototypes(official))


def test_proto_shuffled_gives_every_class_another_class_s_prototype(workspace, official):
    record = run(workspace, "--conditioner", "proto-shuffled", *OFFICIAL, *NO_METRIC)
    prototypes = stage1_prototypes(record)
    assert record["prepare"]["stage1"]["cache_key"] == official["prepare"]["stage1"]["cache_key"]  # one Stage I
    table = checkpoint(record)["model.conditioner.class_embedding.weight"]  # frozen: still the start
    matches = torch.cdist(table, prototypes).argmin(1)
    assert sorted(matches.tolist()) == list(range(10))  # the same vectors
    assert (matches != torch.arange(10)).all()  # none at its own class
    assert record["evals"][-1]["conditioner"]["prototype_shift"] == 0.0


def test_random_scaled_matches_the_prototypes_norms_not_their_directions(workspace, official):
    record = run(workspace, "--conditioner", "random-scaled", *OFFICIAL, *NO_METRIC)
    prototypes = stage1_prototypes(record)
    start = checkpoint(record)["model.conditioner.start"]
    torch.testing.assert_close(start.norm(dim=1), prototypes.norm(dim=1))
    cosine = torch.nn.functional.cosine_similarity(start, prototypes, dim=1)
    assert cosine.abs().max() < 0.5  # random directions in 128 dimensions
    kaiming = run(workspace, "--conditioner", "random-scaled", "-o", "conditioner.scale=kaiming", *NO_METRIC)
    assert "stage1" not in kaiming["prepare"]  # no Stage I for the kaiming scale
    assert checkpoint(kaiming)["model.conditioner.start"].std().item() == pytest.approx((2 / 10) ** 0.5, rel=0.15)


# -- a pretrained backbone: a local safetensors file, never a pickle -----------------------------


def _backbone_state(in_chans: int = 1) -> dict[str, torch.Tensor]:
    from protobench_conditioners.stage1 import FeatureExtractor

    torch.manual_seed(3)
    return {k: v.contiguous() for k, v in FeatureExtractor((in_chans, 8, 8), 16).backbone.state_dict().items()}


def test_a_safetensors_backbone_loads(tmp_path):
    from protobench_conditioners.stage1 import FeatureExtractor

    state = _backbone_state()
    save_file(state, str(tmp_path / "resnet18.safetensors"))
    loaded = FeatureExtractor((1, 8, 8), 16, backbone_weights=str(tmp_path / "resnet18.safetensors"))
    for key, value in loaded.backbone.state_dict().items():
        torch.testing.assert_close(value, state[key])


@pytest.mark.parametrize("kind", ["pickle", "mismatch", "missing"])
def test_a_backbone_that_is_not_safetensors_or_does_not_fit_is_one_line_and_writes_nothing(kind, tmp_path):
    path = tmp_path / "backbone.bin"
    if kind == "pickle":
        torch.save(_backbone_state(), path)
    elif kind == "mismatch":  # a 3-channel network for 1-channel digits
        save_file(_backbone_state(in_chans=3), str(path))
    out = tmp_path / "runs"
    result = CliRunner().invoke(main, ["run", "--out", str(out), *TINY, "--conditioner", "proto-frozen",
                                       "-o", f"conditioner.stage1_backbone_weights={path}"])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "stage1_backbone_weights" in lines[0], lines
    assert not out.exists() or not any(out.rglob("*"))


def test_a_pretrained_run_is_marked_in_its_record_and_in_the_report(workspace, tmp_path):
    weights = tmp_path / "resnet18.safetensors"
    save_file(_backbone_state(), str(weights))
    out = tmp_path / "runs"
    record = run(workspace, "--conditioner", "proto-frozen", "-o", f"conditioner.stage1_backbone_weights={weights}",
                 "-o", "conditioner.stage1_epochs=1", "-o", "conditioner.dim=16", "--metric", "class-accuracy",
                 out=out)
    pretrained = record["prepare"]["stage1"]["pretrained_backbone"]
    assert pretrained["compute_charged"] is False and len(pretrained["sha256"]) == 64
    assert record["evals"][-1]["conditioner"]["pretrained_backbone"] is True
    report = CliRunner().invoke(main, ["report", "--out", str(out), "--json"])
    assert report.exit_code == 0, report.output
    assert [row["pretrained"] for row in json.loads(report.stdout)] == [True]


# -- Graikos et al.: CFG + rejection ---------------------------------------------------------------


def test_cfg_plus_rejection_records_the_acceptance_rate_of_every_evaluation(workspace):
    record = run(workspace, "--guidance", "rejection", "-o", "guidance.fit_draws=1", "-o", "guidance.fit_epochs=2",
                 "--metric", "intra-fid", "--metric", "class-accuracy")
    assert record["config"]["options"]["guidance"]["base"] == "cfg"
    assert record["config"]["options"]["guidance"]["timesteps"] == [300, 800]
    assert record["config"]["options"]["guidance"]["threshold"] == 0.2
    assert len(record["evals"]) == 2
    for ev in record["evals"]:
        assert 0.0 <= ev["acceptance_rate"] <= 1.0
        assert ev["samples_dropped"] >= 0 and 0 <= ev["samples"] <= 20
        # the accepted samples are scored; a metric they are too few for is named, not a failed run
        scored = {k.split("[")[0] for k in ev["metrics"]}
        if ev["samples"] == 0:
            assert ev["metrics"] == {}
        else:
            assert {"intra-fid", "class-accuracy"} <= scored | set(ev["metrics_unscored"]), ev
            assert "class-accuracy" in scored
    assert "test_accuracy" in record["prepare"]["rejection_classifier"]


class _KeepEven:
    """A guidance that accepts only samples of even classes (to see what generate returns)."""

    prepares = False

    def eps(self, net, x_t, t, labels):
        return net(x_t, t, labels)

    def accept(self, net, x0, labels):
        return labels % 2 == 0


def test_samples_never_accepted_are_dropped_and_counted_not_scored():
    from protobench.diffusion import NoiseSchedule
    from protobench.plugins import get_registry
    from protobench.testing.tiny import tiny_net
    from protobench.training.generation import generate

    registry = get_registry()
    sampler = registry.build("sampler", "ddim", {"steps": 3}, {})
    net = tiny_net(registry, 10, (1, 8, 8))
    samples, labels, rate = generate(net, _KeepEven(), sampler, NoiseSchedule("linear", 1000), 40, 10, (1, 8, 8),
                                     seed=0, device=torch.device("cpu"), max_rounds=3)
    assert len(samples) == len(labels) == 20  # the odd classes never pass: dropped, not kept
    assert (labels % 2 == 0).all()
    assert rate == pytest.approx(20 / (20 + 20 * 3))  # 40 drawn, then the 20 odd ones twice more


# -- docs/deviations.md: every option it names is accepted by `protobench run` -------------------


def deviation_options() -> list[str]:
    text = (ROOT / "docs" / "deviations.md").read_text(encoding="utf-8")
    rows = [line for line in text.splitlines() if line.startswith("|") and not set(line) <= set("|-: ")]
    header = [c.strip() for c in rows[0].strip("|").split("|")]
    column = header.index("option that restores it")
    found = []
    for row in rows[1:]:
        cells = [c.strip() for c in row.strip("|").split("|")]
        if cells == header:  # each section's table repeats the header
            continue
        commands = [c for c in re.findall(r"`([^`]+)`", cells[column]) if c.startswith("protobench run ")]
        assert commands or "not restored" in cells[column], f"a row names no option: {row}"
        found.extend(commands)
    return found


def test_the_deviations_table_has_a_row_per_finding():
    text = (ROOT / "docs" / "deviations.md").read_text(encoding="utf-8")
    for needle in ("pretrained", "ReLU", "s = 2", "kaiming", "1.8", "weight decay", "warm-up", "t < 50", "EMA",
                   "MLP", "padding_idx", "proto-shuffled", "random-scaled", "rejection", "300", "0.2",
                   "n_per_class", "dropped"):
        assert needle in text, needle
    assert len(deviation_options()) >= 15


@pytest.mark.parametrize("command", deviation_options())
def test_every_option_in_the_deviations_table_is_accepted_by_protobench_run(command):
    from protobench.cli import collect_user
    from protobench.config import build_config
    from protobench.plugins import get_registry

    argv = shlex.split(command)
    assert argv[:2] == ["protobench", "run"], command
    ctx = main.commands["run"].make_context("run", argv[2:])
    build_config(collect_user(ctx.params), get_registry())  # raises UsageError on an unknown option or value


# -- the official training options ------------------------------------------------------------------


def test_warmup_cosine_schedule_rises_to_the_multiplier_then_decays():
    from protobench.config import RunConfig, lr_at

    cfg = RunConfig(lr=2e-4, lr_schedule="warmup-cosine", warmup_multiplier=2.5, warmup_share=0.05,
                    budget=100 * 128, batch_size=128)  # 100 steps, 5 of warm-up
    lrs = [lr_at(cfg, s) for s in range(100)]
    assert lrs[0] == pytest.approx(2e-4) and lrs[5] == pytest.approx(5e-4)  # train.py --multiplier 2.5
    assert all(a < b for a, b in zip(lrs[:5], lrs[1:6], strict=True))
    assert all(a > b for a, b in zip(lrs[5:-1], lrs[6:], strict=True))
    assert 0 < lrs[-1] < 0.05 * 5e-4  # CosineAnnealingLR(T_max = all steps) ends near, not at, 0
    assert lr_at(RunConfig(lr=2e-4), 50) == 2e-4  # the default: the paper's fixed rate


def test_the_official_training_options_run_and_keep_the_default_run_ids(workspace):
    from protobench.config import RunConfig

    record = run(workspace, "--conditioner", "random", "-o", "guidance.guidance_scale=1.8", "-o", "weight_decay=1e-4",
                 "-o", "lr_schedule=warmup-cosine", "-o", "small_t_share=0.1", "-o", "ema_decay=0",
                 "-o", "denoiser.join=mlp", "-o", "conditioner.null=zero", *NO_METRIC)
    assert record["status"] == "completed"
    assert record["config"]["lr_schedule"] == "warmup-cosine" and record["config"]["small_t_share"] == 0.1
    ema = checkpoint(record)
    for key in [k for k in ema if k.startswith("ema.denoiser.")][:5]:  # ema_decay=0: the EMA is the model
        torch.testing.assert_close(ema[key], ema["model." + key[len("ema."):]])
    # options added later are left out of the hash at their defaults: earlier runs keep their ids
    from protobench.config.schema import _identity
    from protobench.io import json_digest

    mine = ("lr_schedule", "warmup_multiplier", "warmup_share", "small_t_share", "small_t", "compile")
    before = {k: v for k, v in RunConfig().to_dict().items() if k not in mine}  # as before these keys existed
    assert RunConfig().hash() == json_digest(_identity(before), 12)
    assert RunConfig().hash() != RunConfig(small_t_share=0.1).hash()
