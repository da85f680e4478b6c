"""`-o compile=auto|on|off` (protobench.training.compiled): a compiled training step computes the eager step's maths, the
compiled sampler's ε is the eager one's, `auto` on a CPU is the eager path with nothing charged to compile,
and a bad value is one line. The compiled tests run CPU inductor (gcc) on a tiny U-Net."""

from __future__ import annotations

import contextlib
import copy
import json
import shutil

import pytest
import torch
from protobench_conditioners.basic import RandomEmbedding
from protobench_denoisers.unet import UNet

from protobench.diffusion import NoiseSchedule
from protobench.interfaces import ConditionedNet
from protobench.training import compiled
from protobench.training.objective import DiffusionModel

needs_compiler = pytest.mark.skipif(shutil.which("gcc") is None and shutil.which("cc") is None,
                                    reason="CPU inductor needs a C compiler")


def tiny_model() -> DiffusionModel:
    torch.manual_seed(0)
    conditioner = RandomEmbedding(10, dim=8)
    # one level, one block, no attention, no dropout: the smallest U-Net, and a deterministic step
    unet = UNet((1, 8, 8), cond=conditioner.spec, base_channels=8, channel_mult=(1,), num_res_blocks=1,
                attention_resolutions=(), dropout=0.0)
    return DiffusionModel(conditioner, unet, NoiseSchedule("linear", 1000))


def tiny_batch(n: int = 8):
    gen = torch.Generator().manual_seed(3)
    return (torch.rand(n, 1, 8, 8, generator=gen) * 2 - 1, torch.randint(-1, 10, (n,), generator=gen),
            torch.randint(0, 1000, (n,), generator=gen), torch.randn(n, 1, 8, 8, generator=gen))


def one_step(model: DiffusionModel, batch) -> float:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    loss, _ = model(*batch)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    return float(loss.detach())


@pytest.mark.slow
@needs_compiler
def test_a_compiled_step_computes_the_eager_steps_maths():
    eager = tiny_model()
    fused = copy.deepcopy(eager)
    clock = compiled.compile_model(fused, torch.device("cpu"))
    batch = tiny_batch()
    with clock.call():
        loss_compiled = one_step(fused, batch)
    loss_eager = one_step(eager, batch)
    assert loss_compiled == pytest.approx(loss_eager, rel=1e-4)
    for (name, a), b in zip(eager.named_parameters(), fused.parameters(), strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5, msg=name)
    assert clock.take() > 0, "the compiling step is charged to compile"
    assert set(dict(fused.state_dict())) == set(dict(eager.state_dict())), "checkpoints keep their keys"

    # the sampler's ε: the compiled inference graph against the eager net, under no_grad as sampling runs
    net = ConditionedNet(eager.conditioner, eager.denoiser, 10)
    fast = compiled.CompiledNet(net, torch.device("cpu"))
    x, labels, t, _ = tiny_batch(6)
    with torch.no_grad():
        torch.testing.assert_close(fast(x, t, labels), net(x, t, labels), rtol=1e-4, atol=1e-5)
    assert fast.clock.take() > 0


def test_auto_compiles_on_a_gpu_only():
    assert not compiled.enabled("auto", torch.device("cpu"))
    assert compiled.enabled("auto", torch.device("cuda"))
    assert compiled.enabled("on", torch.device("cpu")) and not compiled.enabled("off", torch.device("cuda"))


def run_record(tmp_path, capsys, budget: int, every: int, *options: str) -> dict:
    """A real tiny digits run through the command line (`-o` options added): its --json record."""
    from protobench.cli import main

    with pytest.raises(SystemExit) as done:
        main(["run", "--dataset", "digits", "--budget", str(budget), "--eval-every", str(every), "--eval-samples",
              "50", "--metric", "fid", "-o", "denoiser.base_channels=8", *(x for o in options for x in ("-o", o)),
              "--out", str(tmp_path), "--json"], standalone_mode=True)
    assert done.value.code == 0
    return json.loads(capsys.readouterr().out)


def test_compile_auto_on_a_cpu_runs_the_eager_step_and_charges_no_compile(tmp_path, capsys):
    record = run_record(tmp_path, capsys, 256, 256, "compile=auto")
    assert record["config"]["compile"] == "auto"
    assert record["device_seconds"]["compile"] == 0.0 and record["device_seconds"]["train"] > 0
    assert all(ev["device_seconds"]["compile"] == 0.0 for ev in record["evals"])
    events = (tmp_path / "runs" / record["run_id"] / "events.jsonl").read_text()
    assert "compile (" not in events, "nothing was compiled"


def test_a_bad_compile_value_is_one_line_and_writes_nothing(tmp_path):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "protobench", "run", "--dataset", "digits", "-o", "compile=fast",
                           "--out", str(tmp_path / "out")], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["error: compile must be auto, on or off, got 'fast'"]
    assert not (tmp_path / "out").exists()


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.gpu
@cuda
def test_on_a_gpu_compiled_steps_with_cuda_graphs_compute_the_eager_steps():
    device = torch.device("cuda")
    eager = tiny_model().to(device)
    fused = copy.deepcopy(eager)
    clock = compiled.compile_model(fused, device)
    opt_eager = torch.optim.AdamW(eager.parameters(), lr=1e-3, fused=True)
    opt_fused = torch.optim.AdamW(fused.parameters(), lr=1e-3, fused=True)
    for step in range(4):  # compile, CUDA graphs' warm-up, capture, then replays
        batch = tuple(v.to(device) for v in tiny_batch())
        losses = []
        for model, optimizer in ((eager, opt_eager), (fused, opt_fused)):
            with clock.call() if model is fused else contextlib.nullcontext():
                loss, _ = model(*batch)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                losses.append(float(loss.detach()))
        assert losses[1] == pytest.approx(losses[0], rel=1e-3), f"step {step}"
    for (name, a), b in zip(eager.named_parameters(), fused.parameters(), strict=True):
        torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-4, msg=name)
    assert clock.take() > 0


@pytest.mark.gpu
@cuda
def test_on_a_gpu_auto_compiles_the_run_and_charges_compile_apart(tmp_path, capsys):
    record = run_record(tmp_path, capsys, 2560, 1280, "precision=bf16")
    seconds = record["device_seconds"]
    assert record["status"] == "completed" and seconds["compile"] > 0 and seconds["train"] > 0
    best = next(ev for ev in record["evals"] if ev["images_seen"] == record["best"]["images_seen"])
    ds = best["device_seconds"]
    assert ds["compile"] > 0, "the compiling steps were charged before the evaluation"
    assert record["best"]["device_hours"] * 3600 == pytest.approx(ds["prepare"] + ds["compile"] + ds["train"])


def test_compile_auto_keeps_run_ids_and_on_or_off_is_another_arm():
    from protobench.config import RunConfig, build_config
    from protobench.plugins import get_registry

    registry = get_registry()
    auto = build_config({}, registry)
    before = auto.to_dict()
    before.pop("compile")  # a config.json written before the option existed
    assert RunConfig.from_dict(before).run_id() == auto.run_id()
    for choice in ("on", "off"):
        other = build_config({"compile": choice}, registry)
        assert other.run_id() != auto.run_id() and other.combination() != auto.combination()
