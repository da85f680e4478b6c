"""`protobench plot samples RUN`: a grid sampled from a trained run, one row per class (the training side)."""

from __future__ import annotations

from pathlib import Path


def plot_samples(run_dir: Path, output: Path, per_class: int = 10) -> None:
    """Sample from the run's last checkpoint (EMA weights, the run's guidance and sampler), one row per class."""
    import torch

    from protobench.plugins import get_registry
    from protobench.training.generation import load_trained, save_grid

    trained = load_trained(Path(run_dir), get_registry())
    dataset = trained.parts.dataset
    labels = torch.arange(min(dataset.num_classes, 10)).repeat_interleave(per_class)
    with torch.no_grad():
        samples, labels, _ = trained.draw(labels.numel(), trained.parts.cfg.seed + 54321, labels=labels)
    save_grid(samples, labels, dataset.num_classes, Path(output), per_class=per_class,
              class_names=tuple(dataset.class_names))
