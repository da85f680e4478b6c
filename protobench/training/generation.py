"""Sampling from a trained net: balanced class-conditional samples (sharded over ranks), PNG grids, and a trained
run loaded from its folder to draw from (what `sample`, `plot samples` and benchmarks/sampling.py share)."""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from protobench.config import RunConfig
from protobench.device import pick_device
from protobench.errors import UsageError
from protobench.interfaces import ConditionedNet
from protobench.io import atomic_write_bytes
from protobench.rank import Dist, current_dist, gather_to_main
from protobench.training.checkpoints import load_latest, strip
from protobench.training.parts import Parts, build_parts, load_data, prepare_context


def to_uint8(x: Tensor) -> Tensor:
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


@torch.no_grad()
def _sample_batch(net, guidance, sampler, schedule, labels: Tensor, image_shape, generator, device) -> Tensor:
    def eps_fn(x_t: Tensor, t: Tensor) -> Tensor:
        return guidance.eps(net, x_t, t, labels)

    return sampler.sample(eps_fn, schedule, (labels.shape[0], *image_shape), generator).to(device)


def generate(net, guidance, sampler, schedule, n: int, num_classes: int, image_shape, seed: int,
             device: torch.device, dist: Dist = Dist(), batch_size: int = 500, labels: Tensor | None = None,
             max_rounds: int = 10) -> tuple[Tensor, Tensor, float | None]:
    """Up to n uint8 samples with balanced labels (i mod C), sharded over ranks, gathered on every rank.

    With rejection sampling (guidance.accept), rejected samples are redrawn (up to `max_rounds`); those never
    accepted are dropped, so fewer than n may come back (the caller counts them). Returns (samples, labels,
    acceptance rate: accepted / drawn, None when the guidance does not reject).
    """
    if labels is None:
        labels = torch.arange(n) % num_classes
    per_rank = math.ceil(n / dist.world)
    padded = torch.cat([labels, labels[: per_rank * dist.world - n]]) if per_rank * dist.world > n else labels
    mine = padded[dist.rank * per_rank:(dist.rank + 1) * per_rank].to(device)
    generator = torch.Generator(device=device if device.type == "cuda" else "cpu").manual_seed(seed * 7919 + dist.rank)
    out = torch.empty((per_rank, *image_shape), dtype=torch.uint8, device=device)
    kept = torch.zeros(per_rank, dtype=torch.bool, device=device)
    drawn = accepted = 0
    rejecting = False  # set when the guidance actually judged samples (accept returned a mask)
    for start in range(0, per_rank, batch_size):
        want = mine[start:start + batch_size]
        pending = torch.arange(want.shape[0], device=device)
        for _ in range(max_rounds):
            x0 = _sample_batch(net, guidance, sampler, schedule, want[pending], image_shape, generator, device)
            keep = guidance.accept(net, x0, want[pending])
            rejecting = rejecting or keep is not None
            if keep is None:
                keep = torch.ones(pending.numel(), dtype=torch.bool, device=device)
            drawn += pending.numel()
            accepted += int(keep.sum())
            out[start + pending[keep]] = to_uint8(x0[keep])
            kept[start + pending[keep]] = True
            pending = pending[~keep]
            if pending.numel() == 0:
                break
    # never accepted: dropped, not scored (Graikos et al. sample until accepted; the round cap bounds the cost)
    kept = gather_to_main(kept, dist)[:n].cpu()
    samples = gather_to_main(out, dist)[:n].cpu()[kept]
    all_labels = gather_to_main(mine, dist)[:n].cpu()[kept]
    rate = None
    if rejecting:
        counts = torch.tensor([float(accepted), float(drawn)], device=device if device.type == "cuda" else "cpu")
        if dist.world > 1:
            import torch.distributed as tdist

            tdist.all_reduce(counts)
        rate = float(counts[0] / counts[1].clamp(min=1))
    return samples, all_labels, rate


def save_grid(samples: Tensor, labels: Tensor, num_classes: int, path: Path, per_class: int = 10,
              class_names: tuple[str, ...] | None = None, gap: int = 2, label_width: int = 64) -> None:
    """A PNG grid: one row per class (up to 10 classes), the class's name in a left margin of `label_width`
    pixels, and `gap` pixels of white between tiles and around them. Tiles are scaled by the whole factor
    `max(1, 64 // H)`; a class with fewer than `per_class` samples leaves its remaining tiles blank.

    Size: width = label_width + per_class·tile_w + (per_class + 1)·gap, height = rows·tile_h + (rows + 1)·gap.
    """
    from PIL import Image, ImageDraw

    c, h, w = samples.shape[1:]
    rows = min(num_classes, 10)
    scale = max(1, 64 // h)
    th, tw = h * scale, w * scale
    mode = "L" if c == 1 else "RGB"
    image = Image.new(mode, (label_width + per_class * tw + (per_class + 1) * gap, rows * th + (rows + 1) * gap),
                      255 if c == 1 else (255, 255, 255))
    draw = ImageDraw.Draw(image)
    for k in range(rows):
        top = gap + k * (th + gap)
        name = str(class_names[k]) if class_names is not None and k < len(class_names) else str(k)
        while name and draw.textlength(name) > label_width - 2 * gap:  # shorten names that do not fit
            name = name[:-1]
        draw.text((gap, top + th // 2), name, fill=0 if c == 1 else (0, 0, 0), anchor="lm")
        for i, tile in enumerate(samples[labels == k][:per_class]):
            arr = tile.repeat_interleave(scale, 1).repeat_interleave(scale, 2).permute(1, 2, 0).numpy()
            image.paste(Image.fromarray(arr[:, :, 0] if c == 1 else arr), (label_width + gap + i * (tw + gap), top))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue())  # refuses a symbolic link at the file or its folder


@dataclass(frozen=True)
class TrainedRun:
    """A trained run loaded for drawing: its parts, its EMA net with the guidance prepared as for evaluation,
    and its latest checkpoint's metadata (`images_seen`, `file`, ...)."""

    dir: Path
    parts: Parts
    net: ConditionedNet
    checkpoint: dict[str, Any]

    def draw(self, n: int, seed: int, labels: Tensor | None = None, sampler: Any = None,
             batch_size: int = 500) -> tuple[Tensor, Tensor, float | None]:
        """`generate` from this run: its guidance, schedule and device, its own sampler unless one is given."""
        dataset = self.parts.dataset
        return generate(self.net, self.parts.guidance, sampler or self.parts.sampler, self.parts.schedule, n,
                        dataset.num_classes, tuple(dataset.image_shape), seed=seed, device=self.parts.device,
                        batch_size=batch_size, labels=labels)


def load_trained(run_dir: Path, registry) -> TrainedRun:
    """A run's parts rebuilt from its config.json, with the EMA weights of its latest checkpoint and its
    guidance prepared as it was for evaluation."""
    run_dir = Path(run_dir)
    cfg = RunConfig.from_dict(json.loads((run_dir / "config.json").read_text())["config"])
    ckpt_dir = run_dir / "checkpoints"
    if not (ckpt_dir / "latest.json").is_file() and not list(ckpt_dir.glob("step-*.json")):
        raise UsageError(f"run {run_dir.name!r} has no checkpoint yet (missing {ckpt_dir / 'latest.json'})")
    parts = build_parts(cfg, registry, load_data(cfg, registry), run_dir.parent.parent, pick_device(current_dist()))
    state = load_latest(ckpt_dir)  # a damaged newest checkpoint is named, and the one before it used
    if state is None:
        raise UsageError(f"run {run_dir.name!r}: none of its checkpoints loads (see the lines above)")
    try:
        ema = strip("ema", state["tensors"])
        parts.conditioner.load_state_dict(strip("conditioner", ema))
        parts.denoiser.load_state_dict(strip("denoiser", ema))
    except (OSError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise UsageError(f"run {run_dir.name!r}: its latest checkpoint does not load: {first}") from None
    parts.conditioner.to(parts.device).eval()
    parts.denoiser.to(parts.device).eval()
    net = ConditionedNet(parts.conditioner, parts.denoiser, parts.dataset.num_classes)
    if parts.guidance.prepares:
        parts.guidance.prepare(prepare_context(parts, show_progress=False, net=net, schedule=parts.schedule))
    del state["tensors"]
    return TrainedRun(run_dir, parts, net, state)
