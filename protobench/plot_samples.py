"""`protobench plot samples RUN`: a grid sampled from a trained run, one row per class (the training side)."""

from __future__ import annotations

from pathlib import Path


def plot_samples(run_dir: Path, output: Path, per_class: int = 10) -> None:
    """Sample from the run's last checkpoint (EMA weights, the run's guidance and sampler), one row per class."""
    import torch

    from protobench.generation import generate, load_trained, save_grid
    from protobench.plugins import get_registry

    run, net, _meta = load_trained(Path(run_dir), get_registry())
    cfg, num_classes = run.cfg, run.dataset.num_classes
    shown = min(num_classes, 10)
    labels = torch.arange(shown).repeat_interleave(per_class)
    with torch.no_grad():
        samples, labels, _ = generate(net, run.guidance, run.sampler, run.schedule, labels.numel(), num_classes,
                                      tuple(run.dataset.image_shape), seed=cfg.seed + 54321, device=run.device,
                                      labels=labels)
    save_grid(samples, labels, num_classes, Path(output), per_class=per_class,
              class_names=tuple(run.dataset.class_names))
