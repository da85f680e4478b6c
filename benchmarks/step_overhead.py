"""What the engine adds to a training step: `Run`'s own step (batch drawing, DiffusionModel forward with the
conditioner and the loss, backward, gradient clipping, AdamW, EMA, loss logging) against a bare
forward/backward/AdamW loop on the same denoiser and a batch of the same size, alternated in one process.

    python -m benchmarks.step_overhead [--quick] [--batch 128] [-o key=value ...]

The run is set up by protobench.training itself (parts, `run.train_state`, `loop.compile_step`, batches,
`loop.train_step`), so what is timed is what `protobench run` executes. The last line is one JSON object;
`ratio` is engine / bare seconds per step (1.0 = no overhead).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

from benchmarks._common import alternate, emit, matmul_probe, median, one_thread, progress


def engine_run(overrides: dict, out: Path):
    """A digits run's pieces set up as `protobench run` sets them up (parts, the train state with its prepare
    step, the compiled step with `-o compile`, batches), before its training loop: (ctx, parts, state, batches)."""
    from protobench.config import build_config
    from protobench.ledger import Ledger
    from protobench.plugins import get_registry
    from protobench.training.batches import Batches
    from protobench.training.context import RunContext
    from protobench.training.loop import compile_step
    from protobench.training.parts import build_parts, load_data
    from protobench.training.run import train_state

    registry = get_registry()
    cfg = build_config(overrides, registry)
    ctx = RunContext(cfg, registry, out, show_progress=False)
    torch.manual_seed(cfg.seed * 1000)
    parts = build_parts(cfg, registry, load_data(cfg, registry), ctx.out, ctx.device)
    ctx.dir.mkdir(parents=True, exist_ok=True)
    state = train_state(ctx, parts, Ledger(devices=1), None)
    compile_step(ctx, state)
    return ctx, parts, state, Batches(cfg, parts.data.train_split, ctx.dist, state.train_gen)


def bare_step(denoiser, conditioner, batch):
    """The loop a user would write by hand: forward, MSE, backward, AdamW (its multi-tensor path)."""
    x_t, t, labels, noise = batch
    params = [p for m in (denoiser, conditioner) for p in m.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=2e-4, foreach=True)

    def step():
        denoiser.train()
        optimizer.zero_grad(set_to_none=True)
        F.mse_loss(denoiser(x_t, t, conditioner(labels)), noise).backward()
        optimizer.step()

    return step


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.step_overhead", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None, help="steps per round")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("-o", dest="overrides", action="append", default=[], help="run option, as for `protobench run`")
    args = parser.parse_args(argv)
    one_thread()
    from protobench.config import parse_overrides

    rounds = args.rounds or (3 if args.quick else 5)
    steps = args.steps or (4 if args.quick else 10)
    user = {"dataset": "digits", "batch_size": args.batch, "budget": 10**9, **parse_overrides(args.overrides)}
    with tempfile.TemporaryDirectory() as tmp:
        from protobench.training.loop import train_step

        ctx, parts, state, batches = engine_run(user, Path(tmp) / "a")
        x0, labels, t, noise = batches(state.step)
        x_t = parts.schedule.q_sample(x0, t, noise)
        contenders = {"engine": lambda: train_step(ctx, state, batches(state.step)),
                      "bare": bare_step(parts.denoiser, parts.conditioner, (x_t, t, labels, noise))}
        times, probes = alternate(contenders, rounds=rounds, steps=steps, probe=matmul_probe)
        progress(f"engine ran {state.step} steps, {state.images_seen} images")
    engine_s, bare_s = median(times["engine"]), median(times["bare"])
    emit({"benchmark": "step_overhead", "threads": torch.get_num_threads(), "device": "cpu",
          "dataset": state.cfg.dataset, "batch": state.cfg.batch_size, "rounds": rounds, "steps_per_round": steps,
          "engine_ms": round(engine_s * 1000, 1), "bare_ms": round(bare_s * 1000, 1),
          "engine_images_per_s": round(state.cfg.batch_size / engine_s, 1),
          "bare_images_per_s": round(state.cfg.batch_size / bare_s, 1),
          "probe_gflops": round(median(probes) / 1e9, 1), "ratio": round(engine_s / bare_s, 3)})


if __name__ == "__main__":
    main()
