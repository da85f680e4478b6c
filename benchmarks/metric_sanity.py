"""What each built-in metric sees: every metric on real and deliberately broken sample sets, for each
built-in dataset whose domain evaluator works offline (digits, shapes).

The sets (each the size of the test split, labelled with the test labels unless said otherwise):

- `train`: as many training images (the FID reference split itself: the floor of every distance);
- `test`: the held-out test split (what a perfect generator would score);
- `test, shuffled labels`: the test images under a random permutation of their labels;
- `one class`: images of class 0 only, asked for as every class (a generator collapsed to one class);
- `blurred test`: the test images under a Gaussian blur (sigma = 1 pixel);
- `uniform noise`: uniform random pixels;
- `all zeros`: black images.

    python -m benchmarks.metric_sanity [--datasets digits,shapes] [--cache DIR]
    python -m benchmarks.metric_sanity --bias [--datasets digits]

Prints one markdown table per dataset and, as its last line, one JSON object
{dataset: {set: {metric key: value}}}. docs/metrics.md ("Sanity table") shows the output.

`--bias` instead measures how intra-FID and intra-KID depend on the number of samples per class, by resampling
the evaluator's features of the real training split (no generator, no sampling): simulated generators that are
perfect (each class's own real features), 85% right class (15% of each class's samples taken from other
classes) and label-blind (any class), at several samples per class; mean ± sd over repeats.
docs/metrics.md ("Bias with the number of samples") shows the output.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

#: (metric plugin, the key shown, its column title); keys are suffixed with [<dataset>-evaluator]
COLUMNS = (
    ("fid", "fid", "FID ↓"),
    ("kid", "kid", "KID ↓"),
    ("precision-recall", "precision", "precision ↑"),
    ("precision-recall", "recall", "recall ↑"),
    ("fid-per-class", "fid-per-class", "FID per class, mean ↓"),
    ("class-accuracy", "class-accuracy", "class accuracy ↑"),
    ("is", "is", "IS ↑"),
)
SETS = ("train", "test", "test, shuffled labels", "one class", "blurred test", "uniform noise", "all zeros")
SEED = 0


def sample_sets(train, test, seed: int = SEED) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The sets above, as (uint8 images N×C×H×W, labels N), N = the test split's size."""
    from torchvision.transforms.functional import gaussian_blur

    gen = torch.Generator().manual_seed(seed)
    n, labels = len(test), test.labels.long()
    pick = torch.randperm(len(train), generator=gen)[:n]
    class0 = test.images[test.labels == 0]
    collapsed = class0[torch.randint(len(class0), (n,), generator=gen)]
    blurred = gaussian_blur(test.images.float(), kernel_size=5, sigma=1.0).round().clamp(0, 255).to(torch.uint8)
    noise = torch.randint(0, 256, tuple(test.images.shape), generator=gen, dtype=torch.uint8)
    return {
        "train": (train.images[pick], train.labels[pick].long()),
        "test": (test.images, labels),
        "test, shuffled labels": (test.images, labels[torch.randperm(n, generator=gen)]),
        "one class": (collapsed, labels),
        "blurred test": (blurred, labels),
        "uniform noise": (noise, labels),
        "all zeros": (torch.zeros_like(test.images), labels),
    }


def measure(dataset_name: str, cache: Path) -> dict[str, dict[str, float]]:
    from protobench import Reference
    from protobench.plugins import get_registry

    registry = get_registry()
    dataset = registry.build("dataset", dataset_name, {}, {})
    reference = Reference(dataset, cache, torch.device("cpu"), seed=SEED, show_progress=sys.stderr.isatty())
    names = [m for m in dict.fromkeys(name for name, _, _ in COLUMNS) if m in registry.names("metric")]
    metrics = [registry.build("metric", name, {}, {"num_classes": dataset.num_classes}) for name in names]
    print(f"{dataset_name}: preparing the evaluator and the real statistics (cached after the first time)",
          file=sys.stderr)
    for metric in metrics:
        metric.prepare(reference)
    train, test = dataset.load()
    table: dict[str, dict[str, float]] = {}
    for set_name, (images, labels) in sample_sets(train, test).items():
        start = time.perf_counter()
        values: dict[str, float] = {}
        for metric in metrics:
            values.update(metric.compute(images, labels, reference))
        # per-class entries (".../3") stay in the JSON line; the table shows the headline of each metric
        table[set_name] = {k: v for k, v in values.items() if "/" not in k}
        print(f"  {set_name}: {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return table


def markdown(dataset_name: str, table: dict[str, dict[str, float]]) -> str:
    first = next(iter(table.values()))
    columns = [(f"{key}[{dataset_name}-evaluator]", title) for _, key, title in COLUMNS
               if f"{key}[{dataset_name}-evaluator]" in first]
    lines = [f"| {dataset_name} | " + " | ".join(title for _, title in columns) + " |",
             "|---|" + "---:|" * len(columns)]
    for set_name, values in table.items():
        cells = [f"{values[key]:.3g}" if abs(values[key]) < 1e4 else f"{values[key]:.0f}" for key, _ in columns]
        lines.append(f"| {set_name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


BIAS_COUNTS = (10, 20, 40, 128, 640)
BIAS_REPEATS = 5
GENERATORS = {"perfect": 1.0, "85% right class": 0.85, "label-blind": None}


def bias(dataset_name: str, cache: Path) -> dict[str, dict[str, dict[str, list[float]]]]:
    """{generator: {metric: {samples per class: [value per repeat]}}} from resampled real features."""
    import numpy as np
    from protobench_metrics import bootstrap
    from protobench_metrics.extractors import fid_statistics, real_features, resolve
    from protobench_metrics.fidelity_metrics import frechet_distance

    from protobench import Reference
    from protobench.plugins import get_registry

    dataset = get_registry().build("dataset", dataset_name, {}, {})
    reference = Reference(dataset, cache, torch.device("cpu"), seed=SEED, show_progress=sys.stderr.isatty())
    ext = resolve(reference)
    real = real_features(reference, ext)
    feats, labels = real[ext.layer("fid")].double(), real["labels"].long()
    classes = dataset.num_classes
    by_class = [feats[labels == k] for k in range(classes)]
    stats = [fid_statistics(f) for f in by_class]
    k_rr = [bootstrap.real_term(bootstrap.poly_kernel(f.numpy(), f.numpy())) for f in by_class]
    gen = np.random.default_rng(SEED)
    out: dict[str, dict[str, dict[str, list[float]]]] = {}
    for name, right in GENERATORS.items():
        table = out.setdefault(name, {"intra-fid": {}, "intra-kid": {}})
        for n in BIAS_COUNTS:
            for _ in range(BIAS_REPEATS):
                fid, kid = [], []
                for k in range(classes):
                    if right is None:  # label-blind: any real image, whatever class was asked for
                        pool = [feats[gen.integers(0, len(feats), n)]]
                    else:
                        own = int(round(n * right))
                        others = torch.cat([by_class[j] for j in range(classes) if j != k])
                        pool = [by_class[k][gen.integers(0, len(by_class[k]), own)],
                                others[gen.integers(0, len(others), n - own)]]
                    x = torch.cat(pool)
                    fid.append(frechet_distance(fid_statistics(x), stats[k]))
                    xn, rn = x.numpy(), by_class[k].numpy()
                    kid.append(bootstrap.mmd2_unbiased(bootstrap.poly_kernel(xn, xn), bootstrap.poly_kernel(xn, rn),
                                                       k_rr[k]))
                table["intra-fid"].setdefault(str(n), []).append(float(np.mean(fid)))
                table["intra-kid"].setdefault(str(n), []).append(float(np.mean(kid)))
        print(f"  {name}: done", file=sys.stderr)
    return out


def bias_markdown(dataset_name: str, found: dict) -> str:
    import numpy as np

    head = " | ".join(f"{n} per class" for n in BIAS_COUNTS)
    lines = [f"| {dataset_name}: simulated generator | metric | {head} |", "|---|---|" + "---:|" * len(BIAS_COUNTS)]
    for name, metrics in found.items():
        for metric, values in metrics.items():
            cells = [f"{np.mean(v):.3g} ± {np.std(v, ddof=1):.2g}" for v in values.values()]
            lines.append(f"| {name} | {metric} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", default="digits,shapes", help="comma list of datasets (default: digits,shapes)")
    parser.add_argument("--bias", action="store_true",
                        help="measure intra-FID's and intra-KID's dependence on the samples per class instead")
    parser.add_argument("--cache", type=Path, default=None,
                        help="evaluator and real-feature cache (default: $PROTOBENCH_CACHE or protobench-runs/cache)")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from protobench.paths import cache_dir, default_out

    cache = args.cache or cache_dir(default_out())  # where runs keep their evaluators: trained once, shared
    results = {}
    for name in [d.strip() for d in args.datasets.split(",") if d.strip()]:
        if args.bias:
            results[name] = bias(name, cache)
            print(bias_markdown(name, results[name]) + "\n", flush=True)
            continue
        results[name] = measure(name, cache)
        print(markdown(name, results[name]) + "\n", flush=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
