"""`protobench plot prototypes RUN`: a 2-D PCA of the Stage-I features and the prototypes (ProtoDiffusion Fig. 2)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from protobench.errors import UsageError
from protobench.events import read_events


def stage1_record(run_dir: Path) -> dict[str, Any]:
    """The Stage-I results a prototype-learning conditioner left in the run's events (where its artefacts live)."""
    run_dir = Path(run_dir)
    config_path = run_dir / "config.json"
    if not config_path.exists():
        raise UsageError(f"not a run directory (no config.json): {run_dir}")
    meta = json.loads(config_path.read_text())
    conditioner = meta.get("config", {}).get("conditioner", "?")
    stage1 = None
    for ev in read_events(run_dir / "events.jsonl"):
        if ev.get("event") == "prepare" and ev.get("component", "conditioner") == "conditioner":
            stage1 = (ev.get("results") or {}).get("stage1", stage1)
    if stage1 is None:
        if _learns_prototypes(conditioner):
            raise UsageError(f"run {meta.get('run_id', run_dir.name)} has no Stage-I record yet (it stopped before its prepare step ended)")
        raise UsageError(f"run {meta.get('run_id', run_dir.name)} is not a proto run (conditioner {conditioner!r}); "
                         "prototypes exist only for proto-frozen and proto-unfrozen")
    return stage1


def _learns_prototypes(conditioner: str) -> bool:
    """Whether the conditioner plugin declares that its prepare step learns prototypes (an unknown one: no)."""
    from protobench.errors import PluginError
    from protobench.plugins import get_registry

    try:
        return bool(get_registry().get("conditioner", conditioner).attribute("learns_prototypes", False))
    except (UsageError, PluginError):
        return False


def pca_2d(features, prototypes):
    """Project features and prototypes onto the two principal axes of the features."""
    import torch

    mean = features.mean(0, keepdim=True)
    _, _, vh = torch.linalg.svd(features - mean, full_matrices=False)
    axes = vh[:2].T
    return (features - mean) @ axes, (prototypes - mean) @ axes


def plot_prototypes(run_dir: Path, output: Path) -> Path:
    """Write a PNG of the test split's Stage-I features and the class prototypes, coloured by class."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from safetensors.torch import load_file

    run_dir, output = Path(run_dir), Path(output)
    stage1 = stage1_record(run_dir)
    weights = Path(stage1["artefacts"]) / "stage1.safetensors"
    if not weights.exists():
        raise UsageError(f"Stage-I artefacts of run {run_dir.name} are gone ({weights} is missing; was the cache cleared?); "
                         "rerun it to recreate them")
    tensors = load_file(str(weights))
    features, labels, prototypes = tensors["test_features"].float(), tensors["test_labels"], tensors["prototypes"].float()
    xy, proto_xy = pca_2d(features, prototypes)
    num_classes = prototypes.shape[0]
    cmap = plt.get_cmap("tab10" if num_classes <= 10 else "tab20" if num_classes <= 20 else "hsv")
    colour = [cmap(k if num_classes <= 20 else k / num_classes) for k in range(num_classes)]

    fig, ax = plt.subplots(figsize=(7, 6), dpi=120)
    for k in range(num_classes):
        pts = xy[labels == k]
        ax.scatter(pts[:, 0], pts[:, 1], s=6, alpha=0.5, color=colour[k], label=str(k) if num_classes <= 20 else None)
    ax.scatter(proto_xy[:, 0], proto_xy[:, 1], s=180, marker="*", c=colour, edgecolors="black", linewidths=1.0, zorder=3)
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.set_title(f"Stage-I features (test split) and prototypes\n{run_dir.name}: "
                 f"nearest-prototype accuracy {100 * stage1['test_accuracy']:.1f}%", fontsize=9)
    star = Line2D([], [], marker="*", linestyle="", markersize=11, markerfacecolor="lightgrey", markeredgecolor="black")
    if num_classes <= 20:
        handles, names = ax.get_legend_handles_labels()
        ax.legend(handles + [star], names + ["prototypes"], fontsize=7, loc="best", ncol=2)
    else:
        ax.legend([star], ["prototypes"], fontsize=7, loc="best")
    fig.tight_layout()
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.stem}.{os.getpid()}.tmp.png")
    try:
        fig.savefig(tmp, format="png")
        os.replace(tmp, output)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)
    return output
