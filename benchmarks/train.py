"""Training throughput of protobench's `unet` against diffusers' `UNet2DModel` at equal FLOPs per image.

Both train the same way in the same process, in alternating rounds: ε-prediction MSE on a fixed noised batch,
class-conditioned (10 classes plus a null label), dropout 0.1, AdamW. FLOPs per step (forward + backward) are
counted with torch.utils.flop_counter; MFU is that rate against a matmul probe taken in every round.

    python -m benchmarks.train [--quick] [--config digits|cifar10|both] [--rounds N]
    python -m benchmarks.train --device cuda --precision bf16 --config cifar10 --batch 128   # on a GPU
    python -m benchmarks.train --device cuda --precision bf16 --config cifar10 --batch 128 --compile   # + compiled

On a GPU, MFU is against the card's dense peak for the precision where the card is known (H100/H200 bf16:
989 TFLOP/s), else against the matmul probe in that precision.

Needs the `bench` extra (diffusers). The last line on stdout is one JSON object; `ratio` is the smaller of
the two configurations' MFU ratios (protobench / diffusers).
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from benchmarks._common import alternate, count_flops, emit, matmul_probe, median, one_thread, progress

NUM_CLASSES = 10
EMB_DIM = 128  # the `random` conditioner's default embedding


def paper_unet_options() -> dict:
    """The CIFAR-10 preset's denoiser options (PAPER_UNET), without the `denoiser.` prefix."""
    from protobench_datasets._local import PAPER_UNET

    return {k.split(".", 1)[1]: v for k, v in PAPER_UNET.items() if k.startswith("denoiser.")}


#: each configuration: image shape, protobench options (the digits default is the unet's own defaults), the
#: diffusers UNet2DModel with the same FLOPs per image (±10%: checked and reported), and the batch sizes
CONFIGS = {
    "digits": {
        "image_shape": (1, 8, 8),
        "protobench": {},
        # base 32, ×(1, 2), attention at 4 px, 2 blocks per level: the same layout
        "diffusers": dict(block_out_channels=(32, 64), down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                          up_block_types=("AttnUpBlock2D", "UpBlock2D"), layers_per_block=2, norm_num_groups=16,
                          attention_head_dim=64),
        "batch": 128, "quick_batch": 128, "steps": 8, "quick_steps": 4,
    },
    "cifar10": {
        "image_shape": (3, 32, 32),
        "protobench": "PAPER_UNET",
        "diffusers": dict(block_out_channels=(128, 128, 256, 256),
                          down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
                          up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
                          layers_per_block=2, norm_num_groups=32, attention_head_dim=128),
        "batch": 8, "quick_batch": 4, "steps": 1, "quick_steps": 1,
    },
}


def protobench_net(config: dict):
    from protobench_conditioners.basic import RandomEmbedding
    from protobench_denoisers.unet import UNet

    opts = paper_unet_options() if config["protobench"] == "PAPER_UNET" else dict(config["protobench"])
    conditioner = RandomEmbedding(NUM_CLASSES, dim=EMB_DIM)
    unet = UNet(config["image_shape"], cond=conditioner.spec, **opts)
    net = torch.nn.ModuleDict({"conditioner": conditioner, "denoiser": unet})

    def eps(x_t, t, labels):
        return unet(x_t, t, conditioner(labels))

    return net, eps


def diffusers_net(config: dict):
    from diffusers import UNet2DModel

    c, h, _ = config["image_shape"]
    net = UNet2DModel(sample_size=h, in_channels=c, out_channels=c, dropout=0.1,
                      num_class_embeds=NUM_CLASSES + 1, **config["diffusers"])

    def eps(x_t, t, labels):
        return net(x_t, t, class_labels=torch.where(labels < 0, NUM_CLASSES, labels)).sample

    return net, eps


def make_step(net, eps, batch, precision=None, compile_mode: str | None = None):
    """One training step (zero_grad, forward, MSE, backward, AdamW) and its forward + backward alone.
    With `compile_mode`, the forward and loss are torch.compile'd as `-o compile=on` compiles a run's."""
    from protobench.training.precision import Precision

    x_t, t, labels, noise = batch
    precision = precision or Precision("fp32", x_t.device)
    optimizer = torch.optim.AdamW(net.parameters(), lr=2e-4, foreach=True)  # the same optimizer for both
    net.train()

    def loss_of(x_t, t, labels, noise):
        return F.mse_loss(eps(x_t, t, labels).float(), noise)

    if compile_mode is not None:
        if x_t.device.type == "cuda":
            net.to(memory_format=torch.channels_last)  # conv weights, as protobench.training.compiled does
        loss_of = torch.compile(loss_of, mode=compile_mode, dynamic=False)

    def forward_backward():
        with precision.autocast():
            loss = loss_of(x_t, t, labels, noise)
        precision.backward(loss)
        return loss

    def step():
        optimizer.zero_grad(set_to_none=True)
        forward_backward()
        precision.step(optimizer)

    return step, forward_backward


def make_batch(image_shape, batch: int, seed: int = 0, device="cpu"):
    gen = torch.Generator().manual_seed(seed)
    x_t = torch.randn((batch, *image_shape), generator=gen)
    t = torch.randint(0, 1000, (batch,), generator=gen)
    labels = torch.randint(0, NUM_CLASSES, (batch,), generator=gen)
    labels[torch.rand(batch, generator=gen) < 0.1] = -1  # NULL_LABEL: classifier-free guidance's dropout
    noise = torch.randn((batch, *image_shape), generator=gen)
    return tuple(v.to(device) for v in (x_t, t, labels, noise))


#: dense (no sparsity) peak TFLOP/s by card and precision, from the vendors' data sheets
PEAK_TFLOPS = {"H100": {"bf16": 989, "fp16": 989, "fp32": 67}, "H200": {"bf16": 989, "fp16": 989, "fp32": 67},
               "A100": {"bf16": 312, "fp16": 312, "fp32": 19.5}}


def gpu_peak(precision: str) -> tuple[float | None, str]:
    name = torch.cuda.get_device_name()
    for card, peaks in PEAK_TFLOPS.items():
        if card in name:
            return peaks[precision] * 1e12, f"{name} dense {precision} peak"
    return None, name


def params_m(net) -> float:
    return sum(p.numel() for p in net.parameters()) / 1e6


def bench_config(name: str, rounds: int, quick: bool, batch: int | None, steps: int | None = None,
                 device: str = "cpu", precision: str = "fp32", compile_mode: str | None = None,
                 diffusers: bool = True) -> dict:
    import time

    from benchmarks._common import sync
    from protobench.training.precision import Precision

    config = CONFIGS[name]
    batch = batch or config["quick_batch" if quick else "batch"]
    steps = steps or config["quick_steps" if quick else "steps"]
    data = make_batch(config["image_shape"], batch, device=device)
    nets = {"protobench": protobench_net(config)}
    if compile_mode is not None:  # the same net and step, compiled (its FLOPs are the eager graph's)
        nets["protobench-compiled"] = protobench_net(config)
    if diffusers:
        nets["diffusers"] = diffusers_net(config)
    steps_fns, flops, params, compile_s = {}, {}, {}, None
    for who, (net, eps) in nets.items():
        torch.manual_seed(0)
        net.to(device)
        compiling = compile_mode if who == "protobench-compiled" else None
        step, fwd_bwd = make_step(net, eps, data, Precision(precision, device), compiling)
        steps_fns[who] = step
        if compiling:
            sync(device)
            start = time.perf_counter()
            for _ in range(3):  # compile, then CUDA graphs' warm-up and capture: what a run charges to `compile`
                step()
            sync(device)
            compile_s = time.perf_counter() - start
            progress(f"{name}: compiled ({compile_mode}) in {compile_s:.1f} s")
            flops[who] = flops["protobench"]
        else:
            flops[who] = count_flops(fwd_bwd)
        params[who] = params_m(net)
    peer = "diffusers" if diffusers else "protobench"
    flop_ratio = flops["protobench"] / flops[peer]
    if not 0.9 <= flop_ratio <= 1.1:
        progress(f"warning: {name}: FLOPs per image differ by more than 10% ({flop_ratio:.3f})")
    progress(f"{name}: batch {batch}, GFLOP/step protobench {flops['protobench'] / 1e9:.1f}, "
             f"{peer} {flops[peer] / 1e9:.1f}")
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    peak, against = gpu_peak(precision) if device == "cuda" else (None, "matmul probe")
    probe_n = 8192 if device == "cuda" else 2048
    times, probes = alternate(steps_fns, rounds=rounds, steps=steps, device=device,
                              probe=lambda: matmul_probe(probe_n, dtype=dtype, device=device))
    probe = median(probes)
    out: dict = {"batch": batch, "rounds": rounds, "steps_per_round": steps, "flop_ratio": round(flop_ratio, 3),
                 "precision": precision, "mfu_against": against if peak else f"{precision} {probe_n}² matmul probe"}
    for who in nets:
        sec = median(times[who])
        achieved = flops[who] / sec
        out[who] = {"params_m": round(params[who], 2), "gflop_per_step": round(flops[who] / 1e9, 2),
                    "gflop_per_image": round(flops[who] / batch / 1e9, 3), "images_per_s": round(batch / sec, 1),
                    "gflops": round(achieved / 1e9, 1), "mfu": round(achieved / (peak or probe), 3)}
    if diffusers:
        out["speed_ratio"] = round(out["protobench"]["images_per_s"] / out["diffusers"]["images_per_s"], 3)
        out["ratio"] = round(out["protobench"]["mfu"] / out["diffusers"]["mfu"], 3)
    if compile_mode is not None:
        out["compile_mode"], out["compile_s"] = compile_mode, round(compile_s, 1)
        out["compiled_speedup"] = round(out["protobench-compiled"]["images_per_s"] / out["protobench"]["images_per_s"], 3)
    out["probe_gflops"] = round(probe / 1e9, 1)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.train", description=__doc__.splitlines()[0])
    parser.add_argument("--config", choices=("digits", "cifar10", "both"), default="both")
    parser.add_argument("--quick", action="store_true", help="fewer rounds and steps, smaller CIFAR batch")
    parser.add_argument("--rounds", type=int, default=None, help="alternating rounds (default 5, --quick 3)")
    parser.add_argument("--batch", type=int, default=None, help="batch size for every configuration")
    parser.add_argument("--steps", type=int, default=None, help="steps per round")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32")
    parser.add_argument("--compile", action="store_true",
                        help="add protobench's step compiled as `-o compile=on` does (protobench.training.compiled's mode)")
    parser.add_argument("--no-diffusers", action="store_true", help="protobench alone (eager, and compiled)")
    args = parser.parse_args(argv)
    one_thread()
    from protobench.training.compiled import mode_for

    rounds = args.rounds or (3 if args.quick else 5)
    names = ["digits", "cifar10"] if args.config == "both" else [args.config]
    mode = mode_for(torch.device(args.device)) if args.compile else None
    results = {name: bench_config(name, rounds, args.quick, args.batch, args.steps, args.device, args.precision,
                                  mode, not args.no_diffusers) for name in names}
    device = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    ratios = [r["ratio"] for r in results.values() if "ratio" in r]
    emit({"benchmark": "train", "threads": torch.get_num_threads(), "device": device, "configs": results,
          "ratio": min(ratios) if ratios else None})


if __name__ == "__main__":
    main()
