"""The foundation: schedule, config, CFG, the CLI's run path, resume and divergence handling."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from protobench import NULL_LABEL, ConditionedNet
from protobench.cli import main
from protobench.config import RunConfig, build_config, parse_size
from protobench.diffusion import NoiseSchedule
from protobench.errors import UsageError
from protobench.plugins import get_registry

TINY = ["-o", "denoiser.base_channels=8", "-o", "sampler.steps=3", "--eval-samples", "20", "--quiet"]


@pytest.fixture
def cache(protobench_cache):
    """The session's evaluator cache (protobench.testing), so the evaluator trains once."""
    return protobench_cache


# -- schedule ---------------------------------------------------------------------------------


def test_linear_schedule_matches_closed_form():
    s = NoiseSchedule("linear", 1000)
    assert s.betas[0].item() == pytest.approx(1e-4) and s.betas[-1].item() == pytest.approx(0.02)
    t = 437
    expected = math.prod(1 - (1e-4 + (0.02 - 1e-4) * i / 999) for i in range(t + 1))
    assert s.alpha_bar[t].item() == pytest.approx(expected, rel=1e-9)


def test_cosine_schedule_matches_closed_form():
    s = NoiseSchedule("cosine", 1000)
    f = lambda u: math.cos((u / 1000 + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    for t in (0, 250, 500, 900):
        assert s.alpha_bar[t].item() == pytest.approx(f(t + 1) / f(0), rel=1e-6)


def test_q_sample_and_x0_from_eps_are_inverse():
    s = NoiseSchedule("linear", 1000)
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(4, 1, 8, 8, generator=g) * 2 - 1
    eps = torch.randn(4, 1, 8, 8, generator=g)
    t = torch.tensor([0, 10, 500, 999])
    x_t = s.q_sample(x0, t, eps)
    ab = s.alpha_bar[t].view(-1, 1, 1, 1)  # float64 reference
    assert torch.allclose(x_t.double(), ab.sqrt() * x0.double() + (1 - ab).sqrt() * eps.double(), atol=1e-6)
    assert torch.allclose(s.x0_from_eps(x_t, t, eps), x0, atol=1e-3)


# -- configuration ----------------------------------------------------------------------------


def test_presets_sit_under_user_overrides():
    reg = get_registry()
    cfg = build_config({}, reg)
    assert cfg.batch_size == 128 and cfg.budget == 19_200 and cfg.lr == 3e-3  # digits presets
    cfg = build_config({"batch_size": "64", "denoiser.base_channels": "16", "denoiser.channel_mult": "1,2,2"}, reg)
    assert cfg.batch_size == 64
    assert cfg.options["denoiser"]["base_channels"] == 16
    assert cfg.options["denoiser"]["channel_mult"] == (1, 2, 2)


def test_config_hash_is_stable_and_sensitive():
    reg = get_registry()
    a, b = build_config({}, reg), build_config({}, reg)
    assert a.hash() == b.hash() and a.run_id() == b.run_id()
    assert build_config({"lr": "1e-4"}, reg).hash() != a.hash()
    assert build_config({"seed": "1"}, reg).combination() == a.combination()
    assert RunConfig.from_dict(json.loads(json.dumps(a.to_dict()))).hash() == a.hash()


@pytest.mark.parametrize(
    "user, message",
    [
        ({"nope": 1}, "unknown config key 'nope'; known keys:"),
        ({"denoiser.bogus": 1}, "unknown option denoiser.bogus for denoiser unet; known options:"),
        ({"batch_size": "many"}, "bad value for batch_size"),
        ({"conditioner": "nope"}, "unknown conditioner 'nope'; known conditioners: "),
        ({"budget": "0"}, "budget must be > 0"),
    ],
)
def test_bad_config_is_one_clear_error(user, message):
    with pytest.raises(UsageError) as info:
        build_config(user, get_registry())
    assert message in str(info.value) and "\n" not in str(info.value)


def test_sizes_accept_k_suffix():
    assert parse_size("30k") == 30_000 and parse_size("1.5M") == 1_500_000 and parse_size("256") == 256
    with pytest.raises(UsageError):
        parse_size("lots")


# -- guidance ---------------------------------------------------------------------------------


def _tiny_net(conditioner="random"):
    reg = get_registry()
    torch.manual_seed(0)
    cond = reg.build("conditioner", conditioner, {}, {"num_classes": 10})
    den = reg.build("denoiser", "unet", {"base_channels": 8, "dropout": 0.0}, {"image_shape": (1, 8, 8), "cond": cond.spec})
    return ConditionedNet(cond.eval(), den.eval(), 10)


def test_cfg_one_batched_forward_equals_two_forwards():
    net = _tiny_net()
    cfg = get_registry().build("guidance", "cfg", {"guidance_scale": 2.0}, {})
    calls = []
    den = net.denoiser
    den.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    x = torch.randn(6, 1, 8, 8)
    t = torch.randint(0, 1000, (6,))
    y = torch.arange(6)
    with torch.no_grad():
        guided = cfg.eps(net, x, t, y)
        assert calls == [12]  # conditional and null in one forward
        cond, uncond = net(x, t, y), net(x, t, torch.full_like(y, NULL_LABEL))
    assert torch.allclose(guided, 3.0 * cond - 2.0 * uncond, atol=1e-5)


def test_null_label_differs_from_every_class():
    net = _tiny_net()
    emb = net.conditioner(torch.tensor([NULL_LABEL, *range(10)])).emb
    assert emb.shape == (11, 128)
    assert all(not torch.equal(emb[0], emb[k]) for k in range(1, 11))
    with pytest.raises(ValueError):
        net.conditioner(torch.tensor([10]))


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_samplers_are_deterministic_under_a_seed_and_in_range(sampler):
    net = _tiny_net()
    reg = get_registry()
    s = reg.build("sampler", sampler, {}, {})
    if sampler == "ddpm":
        schedule = NoiseSchedule("linear", 50)
    else:
        schedule = NoiseSchedule("linear", 1000)
    guidance = reg.build("guidance", "cfg", {}, {})
    labels = torch.arange(4)

    def draw(seed):
        return s.sample(lambda x, t: guidance.eps(net, x, t, labels), schedule, (4, 1, 8, 8), torch.Generator().manual_seed(seed))

    a, b, c = draw(0), draw(0), draw(1)
    assert a.shape == (4, 1, 8, 8) and a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= -1 and a.max() <= 1


# -- the CLI run path -------------------------------------------------------------------------


def _run(args, out):
    return CliRunner().invoke(main, ["run", *args, "--out", str(out)])


def test_unknown_conditioner_is_one_line_and_exit_2(tmp_path):
    result = _run(["--conditioner", "nope"], tmp_path)
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "unknown conditioner 'nope'" in lines[0] and "random" in lines[0]


def test_bad_override_key_is_one_line_and_exit_2(tmp_path):
    result = _run(["-o", "learning_rate=1"], tmp_path)
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "unknown config key 'learning_rate'" in lines[0] and "lr" in lines[0]


def test_short_real_run_writes_a_valid_record(tmp_path, cache):
    result = _run(["--budget", "512", "--eval-every", "256", "--json", *TINY], tmp_path)
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout[: result.stdout.rindex("}") + 1])
    assert record["status"] == "completed"
    assert record["device"]["type"] == "cpu" and record["device"]["count"] == 1
    assert set(record["device_seconds"]) == {"prepare", "train", "eval", "compile"}
    assert record["device_seconds"]["prepare"] == 0  # random has no prepare step: nothing is charged to it
    assert [e["images_seen"] for e in record["evals"]] == [256, 512]
    key = "intra-kid[digits-evaluator]"  # digits' primary metric: it sees labels, unbiased at any sample count
    assert all(math.isfinite(e["metrics"][k]) for e in record["evals"]
               for k in (key, "intra-fid[digits-evaluator]", "fid[digits-evaluator]"))
    assert record["best"]["metric"] == key
    assert record["best"]["value"] == min(e["metrics"][key] for e in record["evals"])
    run_dir = Path(record["path"])
    config = json.loads((run_dir / "config.json").read_text())
    assert config["config"]["options"]["denoiser"]["base_channels"] == 8
    assert config["plugins"]["conditioner:random"]["version"]
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    assert events[0]["event"] == "start" and events[-1]["event"] == "end"
    assert (run_dir / "samples.png").exists()
    ckpt = json.loads((run_dir / "checkpoints" / "latest.json").read_text())
    tensors = load_file(str(run_dir / "checkpoints" / ckpt["file"]))
    assert any(k.startswith("ema.") for k in tensors) and "rng.train" in tensors
    # running the same command again finds the completed run and does not train again
    again = _run(["--budget", "512", "--eval-every", "256", "--json", *TINY], tmp_path)
    assert json.loads(again.stdout[: again.stdout.rindex("}") + 1])["evals"] == record["evals"]


def test_toml_config_and_flags(tmp_path, cache):
    toml = tmp_path / "run.toml"
    toml.write_text('budget = 256\neval_every = 256\n[options.denoiser]\nbase_channels = 8\n[options.sampler]\nsteps = 2\n')
    result = _run(["--config", str(toml), "--eval-samples", "20", "--quiet", "--json", "-o", "lr=1e-3"], tmp_path)
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout[: result.stdout.rindex("}") + 1])
    assert record["config"]["options"]["sampler"]["steps"] == 2 and record["config"]["lr"] == 1e-3


def test_nan_loss_stops_the_run_and_keeps_checkpoints(tmp_path, cache):
    # a huge learning rate makes the loss overflow within a few steps
    args = ["--budget", "25600", "--eval-every", "256", "-o", "lr=1e12", "-o", "grad_clip=0", *TINY]
    result = _run(args, tmp_path)
    assert result.exit_code == 3, result.output
    assert "loss became" in result.output and "at step" in result.output
    run_dir = next((tmp_path / "runs").iterdir())
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    assert events[-1]["event"] == "failed" and "step" in events[-1]


@pytest.mark.slow
def test_kill_9_and_resume_reaches_the_unstopped_result(tmp_path, cache):
    """Stop a run with SIGKILL after its first checkpoint; rerunning resumes to the same weights."""
    args = ["--budget", "1536", "--eval-every", "512", *TINY, "-o", "log_every=1"]
    env = {**os.environ, "PROTOBENCH_CACHE": str(cache)}
    straight = tmp_path / "straight"
    subprocess.run([sys.executable, "-m", "protobench", "run", *args, "--out", str(straight)], env=env, check=True,
                   capture_output=True)
    stopped = tmp_path / "stopped"
    proc = subprocess.Popen([sys.executable, "-m", "protobench", "run", *args, "--out", str(stopped)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and not list(stopped.glob("runs/*/checkpoints/latest.json")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    run_dir = next((stopped / "runs").iterdir())
    assert json.loads((run_dir / "checkpoints" / "latest.json").read_text())["images_seen"] < 1536
    subprocess.run([sys.executable, "-m", "protobench", "run", *args, "--out", str(stopped)], env=env, check=True,
                   capture_output=True)

    def final(out):
        d = next((out / "runs").iterdir())
        meta = json.loads((d / "checkpoints" / "latest.json").read_text())
        return meta, load_file(str(d / "checkpoints" / meta["file"]))

    (m1, t1), (m2, t2) = final(straight), final(stopped)
    assert m1["images_seen"] == m2["images_seen"] == 1536
    for key in t1:
        if key.startswith(("model.", "ema.")):
            assert torch.equal(t1[key], t2[key]), key
    fid = [e["metrics"]["fid[digits-evaluator]"] for e in m1["evals"]]
    assert fid == [e["metrics"]["fid[digits-evaluator]"] for e in m2["evals"]]
