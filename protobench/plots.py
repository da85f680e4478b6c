"""PNG figures from run records: a metric against device-hours per combination (no torch: reading results)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from protobench.errors import UsageError
from protobench.ledger import charged_seconds
from protobench.units import hours_label


def curve_points(runs: list[dict[str, Any]]) -> list[tuple[float, float, float, float]]:
    """Per evaluation cadence point: (mean device-hours, mean, min, max of the run's ranked metric) over the seeds."""
    by_images: dict[int, list[tuple[float, float]]] = {}
    for r in runs:
        key = r["best"]["metric"]
        for ev in r["evals"]:
            value = ev["metrics"].get(key)
            if isinstance(value, (int, float)):
                ds = ev["device_seconds"]
                by_images.setdefault(ev["images_seen"], []).append((charged_seconds(ds) / 3600.0, value))
    points = []
    for images in sorted(by_images):
        hours, values = zip(*by_images[images], strict=True)
        points.append((sum(hours) / len(hours), sum(values) / len(values), min(values), max(values)))
    return points


def plot_curves(records: list[dict[str, Any]], output: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in records:
        if r.get("status") == "completed" and r.get("best"):
            groups.setdefault((r["device"]["type"], r["combination"]), []).append(r)
    if not groups:
        raise UsageError("no completed runs with a metric to plot")
    device_types = sorted({d for d, _ in groups})
    fig, axes = plt.subplots(1, len(device_types), figsize=(7 * len(device_types), 5), squeeze=False)
    for ax, device_type in zip(axes[0], device_types, strict=True):
        for (dt, _), runs in sorted(groups.items(), key=lambda kv: kv[1][0]["config"]["conditioner"]):
            if dt != device_type:
                continue
            cfg = runs[0]["config"]
            pts = curve_points(runs)
            x, mean, lo, hi = (list(v) for v in zip(*pts, strict=True))
            label = f"{cfg['conditioner']} / {cfg['guidance']} ({len(runs)} seeds)"
            (line,) = ax.plot(x, mean, marker="o", label=label)
            ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.2)  # band: min..max over seeds
        ax.set_xlabel(f"{hours_label(device_type)} (prepare + train)")
        ax.set_ylabel(runs[0]["best"]["metric"])
        ax.set_title(f"{runs[0]['config']['dataset']}: {runs[0]['best']['metric']} vs {hours_label(device_type)}")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(output)

