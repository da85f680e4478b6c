"""What `protobench eval` and `protobench sample` do: score any generator's samples against a dataset, and draw
samples from a trained run."""

from __future__ import annotations

import io
import os
import time
import zipfile
from pathlib import Path
from typing import Any

from protobench.errors import UsageError

DEFAULT_METRICS = ("fid", "kid", "precision-recall")
LABELLED_METRICS = ("class-accuracy",)  # added by default when the file has labels


def load_samples(path: Path) -> tuple[Any, Any]:
    """(images uint8 N×C×H×W, labels int64 N or None) from an .npz; any problem is one UsageError line."""
    import numpy as np
    import torch

    if not path.is_file():
        raise UsageError(f"samples file not found: {path}")
    try:
        data = np.load(path, allow_pickle=False)
        if not hasattr(data, "files"):
            raise UsageError(f"{path}: not an .npz archive (a single .npy array)")
        with data:
            if "images" not in data.files:
                raise UsageError(f"{path}: no 'images' array (found: {', '.join(data.files) or 'none'})")
            images = data["images"]
            labels = data["labels"] if "labels" in data.files else None
    except UsageError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise UsageError(f"{path}: not a readable .npz file ({type(exc).__name__})") from None
    if images.dtype != np.uint8:
        raise UsageError(f"{path}: 'images' must be uint8 (0..255), got {images.dtype}")
    if images.ndim != 4:
        raise UsageError(f"{path}: 'images' must be N×H×W×C or N×C×H×W (rank 4), got shape {images.shape}")
    if images.shape[0] == 0 or 0 in images.shape:
        raise UsageError(f"{path}: 'images' is empty (shape {images.shape})")
    channels_first, channels_last = images.shape[1] in (1, 3), images.shape[-1] in (1, 3)
    if channels_last and not channels_first:
        images = images.transpose(0, 3, 1, 2)
    elif not channels_first:
        raise UsageError(f"{path}: cannot tell the channel axis of shape {images.shape} (expected 1 or 3 channels)")
    tensor = torch.from_numpy(np.ascontiguousarray(images))
    if labels is None:
        return tensor, None
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise UsageError(f"{path}: 'labels' must have one entry per image ({images.shape[0]}), got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise UsageError(f"{path}: 'labels' must be integers, got {labels.dtype}")
    return tensor, torch.from_numpy(labels.astype(np.int64))


def evaluate_file(samples: Path, dataset_name: str, metric_names: tuple[str, ...], inception_weights: Path | None,
                  data_root: str | None, out: Path, overrides: tuple[str, ...] = (), show_progress: bool = True
                  ) -> dict[str, Any]:
    """Score an .npz of samples against a dataset: the record `protobench eval --json` prints."""
    from protobench.config import build_config, build_metrics, parse_overrides
    from protobench.device import device_info, pick_device
    from protobench.interfaces import Reference
    from protobench.parts import inception_weights as weights_from_config
    from protobench.paths import cache_dir
    from protobench.plugins import get_registry
    from protobench.rank import current_dist

    registry = get_registry()
    images, labels = load_samples(samples)
    user = parse_overrides(overrides)
    unknown = [k for k in user if not k.startswith(("dataset.", "metric."))]
    if unknown:
        raise UsageError(f"eval accepts -o dataset.<option> and metric.<option>, got {unknown[0]!r}")
    if not metric_names:
        metric_names = DEFAULT_METRICS + (LABELLED_METRICS if labels is not None else ())
    for name in metric_names:
        if getattr(registry.get("metric", name).cls, "needs_labels", False) and labels is None:
            raise UsageError(f"metric {name!r} needs class labels: add a 'labels' array to {samples}")
    # the same resolution as a run's: options checked and typed, unknown ones named
    cfg = build_config({**user, "dataset": dataset_name, "metrics": ",".join(metric_names)}, registry)
    data_root = data_root or os.environ.get("PROTOBENCH_DATA_ROOT")
    dataset = registry.build("dataset", dataset_name, cfg.options["dataset"], {"data_root": data_root})
    dataset.load()
    if labels is not None and len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= dataset.num_classes):
        raise UsageError(f"{samples}: labels must be in [0, {dataset.num_classes}) for {dataset_name}, "
                         f"got {int(labels.min())}..{int(labels.max())}")
    try:
        images = dataset.resize(images)
    except ValueError as exc:
        raise UsageError(f"{samples}: {exc}") from None
    built = build_metrics(cfg, registry, {"num_classes": dataset.num_classes, "image_shape": tuple(dataset.image_shape)})
    metrics = list(zip(cfg.metrics, built, strict=True))
    device = pick_device(current_dist())
    inception_weights = inception_weights or weights_from_config(cfg)
    reference = Reference(dataset, cache_dir(out), device, seed=0, inception_weights=inception_weights,
                          show_progress=show_progress)
    start = time.perf_counter()
    for _name, metric in metrics:
        metric.prepare(reference)
    prepare_seconds = time.perf_counter() - start
    values: dict[str, float] = {}
    seconds: dict[str, float] = {}
    for name, metric in metrics:
        t0 = time.perf_counter()
        values.update(metric.compute(images, labels, reference))
        seconds[name] = time.perf_counter() - t0
    record: dict[str, Any] = {
        "samples": str(samples), "dataset": dataset_name, "dataset_checksum": dataset.checksum(),
        "n": int(images.shape[0]), "labels": labels is not None, "metrics": values,
        "metric_seconds": seconds, "prepare_seconds": prepare_seconds, "device": device_info(device, 1),
        "inception_weights": str(inception_weights) if inception_weights else None,
    }
    # the measuring instruments, through the metric interface: their digests, and how good each one is
    instruments: dict[str, str] = {}
    details: dict[str, dict] = {}
    for _name, metric in metrics:
        instruments.update(metric.instruments(reference))
        details.update(metric.instrument_details(reference))
    record["instruments"] = instruments
    evaluator = next((d for label, d in details.items() if label.endswith("-evaluator")), None)
    if evaluator is not None:
        record["evaluator"] = evaluator
    return record


def _write_npz(path: Path, images, labels) -> None:
    import numpy as np

    from protobench.io import atomic_write_bytes

    buf = io.BytesIO()
    np.savez(buf, images=images.permute(0, 2, 3, 1).numpy(), labels=labels.numpy())  # N×H×W×C, the common layout
    atomic_write_bytes(path, buf.getvalue())


def sample_run(run_id: str, out: Path, class_k: int | None, n: int | None, output: Path | None,
               seed: int = 0) -> dict[str, Any]:
    """Draw samples from a run's latest checkpoint (EMA weights) with its own guidance and sampler."""
    import torch

    from protobench.generation import generate, load_trained, save_grid
    from protobench.plugins import get_registry

    run_dir = out / "runs" / run_id
    cfg_path = run_dir / "config.json"
    if not cfg_path.is_file():
        raise UsageError(f"no run {run_id!r} under {out / 'runs'} (missing {cfg_path})")
    run, net, meta = load_trained(run_dir, get_registry())
    cfg = run.cfg
    num_classes = run.dataset.num_classes
    if class_k is not None and not 0 <= class_k < num_classes:
        raise UsageError(f"--class must be in [0, {num_classes}) for {cfg.dataset}, got {class_k}")
    if n is None:
        n = 10 if class_k is not None else 10 * min(num_classes, 10)
    if n < 1:
        raise UsageError(f"--n must be >= 1, got {n}")
    labels = torch.full((n,), class_k) if class_k is not None else torch.arange(n) % num_classes
    samples, labels, acceptance = generate(net, run.guidance, run.sampler, run.schedule, n, num_classes,
                                           tuple(run.dataset.image_shape), seed=seed, device=run.device,
                                           labels=labels)
    if not len(samples):
        raise UsageError(f"rejection sampling accepted none of the {n} samples (rate 0); nothing written")
    if output is None:
        output = run_dir / f"sample-{'all' if class_k is None else f'class{class_k}'}-n{n}-s{seed}.png"
    if output.suffix == ".npz":
        _write_npz(output, samples, labels)
    elif class_k is not None:  # one class: fill rows of 10 rather than a single class row
        layout = torch.arange(len(samples)) // 10  # rejection may have dropped some
        save_grid(samples[:100], layout[:100], int(layout[:100].max()) + 1, output)
    else:
        save_grid(samples, labels, num_classes, output)
    return {"run_id": run_id, "output": str(output), "n": n, "class": class_k, "images_seen": meta["images_seen"],
            "checkpoint": meta["file"], "guidance": cfg.guidance, "sampler": cfg.sampler,
            "acceptance_rate": acceptance, "samples_dropped": n - len(samples)}
