"""Evaluation sampler: DDIM-50 against cheaper candidates on one trained digits model, same seeds.

    python -m benchmarks.sampling [--out DIR] [--n 500] [--candidate dpm-solver++:10[:spacing=time] ...]
                                   [--no-speed | --no-quality] [--device cpu|cuda]
    python -m benchmarks.sampling --speed-only [--dataset digits|cifar10] [--device cuda] [--batch 500]

Trains one digits model into --out the first time (`--budget`; reused afterwards). Quality: FID and
intra-class FID (`intra-fid`; Miyato & Koyama 2018) of `--n` samples on the built-in digits
evaluator, for every sampler with the same seeds (`--seeds`); the spread of DDIM-50's values over those
seeds is the metric's sampling noise at this n. Scores are kept in DIR/sampling-scores.json, so a timed
invocation (`/work/timing ... --no-quality` after a `--no-speed` one) only measures speed: images/s with
the samplers alternated within each round, so that machine load hits all alike.

With `--speed-only` (what benchmarks/gpu_check.sh runs, e.g. `--device cuda --speed-only --dataset cifar10`):
no training and no FID, only the evaluation's images/s of the preset's own sampler and guidance (DPM-Solver++
with CFG, one batched call per step) on an untrained net of the preset's size (speed does not depend on the
weights), eager against compiled (protobench.training.compiled, as `-o compile=on` samples), and the compile seconds.

The default is the fewest-step candidate at least twice as fast as DDIM-50 whose mean FID and mean
intra-class FID are each no worse than DDIM-50's by more than that noise. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from benchmarks._common import alternate, emit, one_thread, progress

DATASET = "digits"
BASELINE = "ddim:50"
CANDIDATES = ["dpm-solver++:8", "dpm-solver++:10", "dpm-solver++:15", "ddim:25"]
METRICS = ("fid", "intra_fid")


def trained_run(out: Path, budget: int, quiet: bool) -> Path:
    """The run folder of one completed digits model of `budget` images under `out` (trained here the first
    time; one trained under older defaults is reused, so that its kept scores are too)."""
    from protobench.config import build_config
    from protobench.plugins import get_registry
    from protobench.training.run import Run

    for done in sorted((out / "runs").glob("*/checkpoints/latest.json")):
        config = json.loads((done.parent.parent / "config.json").read_text())["config"]
        if config["dataset"] == DATASET and config["budget"] == budget:
            return done.parent.parent
    registry = get_registry()
    cfg = build_config({"dataset": DATASET, "budget": budget, "eval_every": budget, "eval_samples": 100,
                        "seed": 0}, registry)
    run_dir = out / "runs" / cfg.run_id()
    if not (run_dir / "checkpoints" / "latest.json").is_file():
        progress(f"training {cfg.run_id()} for {budget} images into {out}")
        record = Run(cfg, registry, out, show_progress=not quiet).execute()
        if record["status"] != "completed":
            raise SystemExit(f"training failed: {record.get('error')}")
    return run_dir


def parse_key(key: str) -> tuple[str, dict]:
    """'dpm-solver++:10' or 'dpm-solver++:10:spacing=time' -> (sampler name, options)."""
    name, steps, *rest = key.split(":")
    options = dict(kv.split("=", 1) for kv in rest)
    return name, {"steps": int(steps), **options}


#: (classes, image shape) of the presets --speed-only builds a net for (no data is read)
SHAPES = {"digits": (10, (1, 8, 8)), "cifar10": (10, (3, 32, 32)), "stl10": (10, (3, 64, 64)),
          "tiny-imagenet": (200, (3, 64, 64))}


def speed_only(args) -> None:
    """Evaluation images/s, eager against compiled, of the preset's sampler and guidance on an untrained net."""
    import time

    import torch

    from benchmarks._common import sync
    from protobench.config import build_config
    from protobench.diffusion import NoiseSchedule
    from protobench.interfaces import ConditionedNet
    from protobench.plugins import get_registry
    from protobench.training.compiled import CompiledNet, mode_for
    from protobench.training.generation import generate

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    registry = get_registry()
    cfg = build_config({"dataset": args.dataset}, registry)
    classes, shape = SHAPES[args.dataset]
    ctx = {"num_classes": classes, "image_shape": shape}
    torch.manual_seed(0)
    conditioner = registry.build("conditioner", cfg.conditioner, cfg.options["conditioner"], ctx)
    denoiser = registry.build("denoiser", cfg.denoiser, cfg.options["denoiser"], {**ctx, "cond": conditioner.spec})
    net = ConditionedNet(conditioner.to(device).eval(), denoiser.to(device).eval(), classes)
    guidance = registry.build("guidance", cfg.guidance, cfg.options["guidance"], ctx)
    sampler = registry.build("sampler", cfg.sampler, cfg.options["sampler"], ctx)
    schedule = NoiseSchedule(cfg.schedule, cfg.timesteps)
    nets = {"eager": net}
    if not args.no_compile:
        nets["compiled"] = CompiledNet(net, device)

    def draw(eps_net):
        return lambda: generate(eps_net, guidance, sampler, schedule, args.batch, classes, shape, seed=0, device=device,
                                batch_size=args.batch)

    first: dict[str, float] = {}
    for key, eps_net in nets.items():  # the first call compiles (and captures CUDA graphs): timed apart
        sync(device)
        start = time.perf_counter()
        draw(eps_net)()
        sync(device)
        first[key] = time.perf_counter() - start
        progress(f"{key}: first batch of {args.batch} in {first[key]:.1f} s")
    times, _ = alternate({k: draw(v) for k, v in nets.items()}, rounds=args.rounds, steps=1, warmup=1, device=device)
    images_per_s = {k: args.batch / statistics.median(t) for k, t in times.items()}
    spread = {k: args.batch / max(t) for k, t in times.items()}  # the slowest round: the figure's floor
    result = {"benchmark": "sampling-speed", "dataset": args.dataset, "sampler": cfg.sampler,
              "sampler_options": cfg.options["sampler"], "guidance": cfg.guidance,
              "guidance_options": cfg.options["guidance"], "batch": args.batch, "rounds": args.rounds,
              "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
              "eager_images_per_s": round(images_per_s["eager"], 1),
              "eager_images_per_s_slowest_round": round(spread["eager"], 1)}
    if "compiled" in nets:
        result.update({"compile_mode": mode_for(device), "compile_s": round(first["compiled"], 1),
                       "compiled_images_per_s": round(images_per_s["compiled"], 1),
                       "compiled_images_per_s_slowest_round": round(spread["compiled"], 1),
                       "speedup": round(images_per_s["compiled"] / images_per_s["eager"], 3)})
    emit(result)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/protobench-bench-sampling"))
    parser.add_argument("--budget", type=int, default=30_000, help="images seen by the model (trained once)")
    parser.add_argument("--n", type=int, default=500, help="samples per FID")
    parser.add_argument("--seeds", default="1,2,3", help="sampling seeds for the FIDs (comma list)")
    parser.add_argument("--batch", type=int, default=50, help="samples per timed call")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--candidate", action="append", default=None,
                        help=f"sampler:steps[:option=value] to try as the default (repeatable; default {', '.join(CANDIDATES)})")
    parser.add_argument("--no-speed", action="store_true", help="only compute (and keep) the FIDs")
    parser.add_argument("--no-quality", action="store_true", help="FIDs from the kept scores only")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if there is one)")
    parser.add_argument("--speed-only", action="store_true",
                        help="evaluation images/s only, eager and compiled, on an untrained net of --dataset's preset")
    parser.add_argument("--dataset", default=DATASET, choices=sorted(SHAPES), help="the preset for --speed-only")
    parser.add_argument("--no-compile", action="store_true", help="--speed-only: the eager sampler alone")
    args = parser.parse_args(argv)
    one_thread()
    if args.device:
        import os

        os.environ["PROTOBENCH_DEVICE"] = args.device  # the trained run's parts are built there
    if args.speed_only:
        speed_only(args)
        return

    import torch

    from protobench.config import build_config, build_metrics
    from protobench.interfaces import Reference
    from protobench.io import atomic_write_json, json_digest
    from protobench.paths import cache_dir
    from protobench.plugins import get_registry
    from protobench.training.generation import load_trained

    run_dir = trained_run(args.out, args.budget, args.quiet)
    registry = get_registry()
    trained = load_trained(run_dir, registry)
    run = trained.parts
    num_classes, image_shape = run.dataset.num_classes, tuple(run.dataset.image_shape)
    keys = [BASELINE, *(args.candidate or CANDIDATES)]
    samplers = {key: registry.build("sampler", *parse_key(key), {}) for key in keys}
    seeds = [int(s) for s in args.seeds.split(",")]

    def draw(sampler, n: int, seed: int):
        return trained.draw(n, seed, sampler=sampler, batch_size=args.batch)

    # quality, kept per (model, evaluator, sampler, n, seed) so that the timed invocation need not sample
    cfg = build_config({"dataset": DATASET, "metrics": "fid,intra-fid"}, registry)
    metrics = build_metrics(cfg, registry, {"num_classes": num_classes, "image_shape": image_shape})
    reference = Reference(run.dataset, cache_dir(args.out), run.device, seed=0)
    for metric in metrics:
        metric.prepare(reference)
    evaluator = json_digest(metrics[0].instruments(reference), 8)

    def where(key: str, seed: int) -> str:
        return f"{run_dir.name}|{evaluator}|{key}|n{args.n}|s{seed}"

    scores_path = args.out / "sampling-scores.json"
    kept = json.loads(scores_path.read_text()) if scores_path.is_file() else {}
    missing = [(k, s) for k in keys for s in seeds if where(k, s) not in kept]
    if missing and args.no_quality:
        raise SystemExit(f"no kept scores for {missing[0]}: run once without --no-quality first")
    for key, seed in missing:
        images, labels, _ = draw(samplers[key], args.n, seed)
        values: dict[str, float] = {}
        for metric in metrics:
            values.update(metric.compute(images, labels, reference))
        kept[where(key, seed)] = {"fid": next(v for k, v in values.items() if k.startswith("fid[")),
                                  "intra_fid": next(v for k, v in values.items() if k.startswith("intra-fid["))}
        progress(f"{key} seed {seed}: " + ", ".join(f"{m} {v:.2f}" for m, v in kept[where(key, seed)].items()))
        atomic_write_json(scores_path, kept)
    per_seed = {k: {m: [kept[where(k, s)][m] for s in seeds] for m in METRICS} for k in keys}
    mean = {k: {m: statistics.mean(v) for m, v in per_seed[k].items()} for k in keys}
    noise = {m: max(per_seed[BASELINE][m]) - min(per_seed[BASELINE][m]) for m in METRICS}
    if args.no_speed:
        return

    # speed: one batch per call, the samplers alternated within each round
    contenders = {key: (lambda s=s: draw(s, args.batch, seed=0)) for key, s in samplers.items()}
    times, _ = alternate(contenders, rounds=args.rounds, steps=1, warmup=1)
    images_per_s = {key: args.batch / statistics.median(t) for key, t in times.items()}

    def qualifies(key: str) -> bool:
        fast = images_per_s[key] >= 2 * images_per_s[BASELINE]
        return fast and all(mean[key][m] <= mean[BASELINE][m] + noise[m] for m in METRICS)

    chosen = [key for key in keys[1:] if qualifies(key)]
    default = min(chosen, key=lambda k: parse_key(k)[1]["steps"]) if chosen else None
    shown = default or keys[1]
    result = {
        "default_sampler": parse_key(shown)[0], "steps": parse_key(shown)[1]["steps"],
        "options": {k: v for k, v in parse_key(shown)[1].items() if k != "steps"},
        "qualifies": default is not None,
        "ddim50_images_per_s": round(images_per_s[BASELINE], 2),
        "default_images_per_s": round(images_per_s[shown], 2),
        "ratio": round(images_per_s[shown] / images_per_s[BASELINE], 3),
        "fid_ddim50": round(mean[BASELINE]["fid"], 3), "fid_default": round(mean[shown]["fid"], 3),
        "intra_fid_ddim50": round(mean[BASELINE]["intra_fid"], 3),
        "intra_fid_default": round(mean[shown]["intra_fid"], 3),
        "fid_noise": round(noise["fid"], 3), "intra_fid_noise": round(noise["intra_fid"], 3),
        "candidates": {key: {"images_per_s": round(images_per_s[key], 2),
                             "ratio": round(images_per_s[key] / images_per_s[BASELINE], 3),
                             **{m: [round(v, 3) for v in per_seed[key][m]] for m in METRICS}} for key in keys},
        "n": args.n, "seeds": seeds, "evaluator": evaluator,
        "model": {"run_id": run_dir.name, "images_seen": trained.checkpoint["images_seen"]},
        "device": str(run.device), "threads": torch.get_num_threads(),
    }
    emit(result)


if __name__ == "__main__":
    main()
