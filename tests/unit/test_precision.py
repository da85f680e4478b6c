"""Mixed precision as a run uses it (protobench.training.precision): bf16 gives the fp32 loss of the digits U-Net to
within bf16's precision, fp16 trains through its gradient scaler, and the scaler's state survives a
checkpoint (JSON). GPU variants are marked `gpu` (deselected by tox's default environment)."""

from __future__ import annotations

import json

import pytest
import torch
from protobench_conditioners.basic import RandomEmbedding
from protobench_denoisers.unet import UNet

from protobench.diffusion import NoiseSchedule
from protobench.training.objective import DiffusionModel
from protobench.training.precision import Precision


def digits_net(device="cpu"):
    """The run's model: conditioner + digits U-Net + schedule, whose forward is the training loss."""
    torch.manual_seed(0)
    conditioner = RandomEmbedding(10)
    unet = UNet((1, 8, 8), cond=conditioner.spec)  # the digits default
    return DiffusionModel(conditioner, unet, NoiseSchedule("linear", 1000)).to(device)


def batch(device="cpu", n=32):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(n, 1, 8, 8, generator=gen)
    t = torch.randint(0, 1000, (n,), generator=gen)
    labels = torch.randint(-1, 10, (n,), generator=gen)
    noise = torch.randn(n, 1, 8, 8, generator=gen)
    return tuple(v.to(device) for v in (x, t, labels, noise))


def loss_of(net, data, precision: Precision):
    """The training loss as a run computes it: the engine's model forward under the run's autocast."""
    x, t, labels, noise = data
    with precision.autocast():
        loss, _mse = net(x, labels, t, noise)
    return loss


def train_steps(precision: Precision, device: str, steps: int = 3):
    net = digits_net(device)
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3)
    before = [p.detach().clone() for p in net.parameters()]
    data = batch(device)
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        loss = loss_of(net, data, precision)
        precision.backward(loss)
        precision.step(optimizer, net.parameters(), max_norm=1.0)
    assert torch.isfinite(loss)
    assert all(p.dtype == torch.float32 for p in net.parameters()), "weights stay fp32 under autocast"
    moved = sum(not torch.equal(a, b.detach()) for a, b in zip(before, net.parameters(), strict=True))
    assert moved > 0.9 * len(before), "the steps updated the weights"
    return precision


def check_bf16_loss_matches_fp32(device: str):
    net = digits_net(device).eval()  # no dropout: the same function in both precisions
    data = batch(device)
    fp32 = loss_of(net, data, Precision("fp32", device))
    bf16 = loss_of(net, data, Precision("bf16", device))
    assert bf16.dtype == torch.float32
    # bf16 keeps 8 bits of mantissa (relative error ~0.4% per op); the loss is an average, so 2% is ample
    torch.testing.assert_close(bf16, fp32, rtol=2e-2, atol=0)
    assert not torch.equal(bf16, fp32), "autocast really ran in bf16"


def test_bf16_loss_matches_fp32_on_cpu():
    check_bf16_loss_matches_fp32("cpu")


def test_bf16_trains_on_cpu():
    precision = train_steps(Precision("bf16", "cpu"), "cpu")
    assert precision.state_dict() == {}, "bf16 has fp32's range: no loss scaling, nothing to checkpoint"


def test_fp16_with_scaler_trains_and_checkpoints_its_scale():
    try:
        with torch.autocast("cpu", dtype=torch.float16):
            torch.nn.functional.conv2d(torch.randn(1, 1, 4, 4), torch.randn(1, 1, 3, 3))
        torch.amp.GradScaler("cpu")
    except (RuntimeError, ValueError) as exc:
        pytest.skip(f"this torch has no fp16 autocast / GradScaler on CPU: {exc}")
    precision = train_steps(Precision("fp16", "cpu"), "cpu")
    state = json.loads(json.dumps(precision.state_dict()))  # what a checkpoint's JSON holds
    assert state["scale"] > 0
    resumed = Precision("fp16", "cpu")
    resumed.load_state_dict(state)
    assert resumed.scaler.get_scale() == precision.scaler.get_scale()


def test_fp32_is_plain_training():
    precision = Precision("fp32", "cpu")
    assert not precision.enabled and precision.state_dict() == {}
    train_steps(precision, "cpu", steps=1)


def test_unknown_precision_is_one_clear_error():
    with pytest.raises(ValueError, match="fp32, bf16, fp16"):
        Precision("fp8")


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.gpu
@cuda
def test_bf16_loss_matches_fp32_on_gpu():
    check_bf16_loss_matches_fp32("cuda")


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("kind", ["bf16", "fp16"])
def test_mixed_precision_trains_on_gpu(kind):
    train_steps(Precision(kind, "cuda"), "cuda")
