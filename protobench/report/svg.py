"""The report page's figures, drawn by hand as inline SVG (no script, no external namespace): curves with their
bands and target crossings, and the Stage-I prototypes on their first two principal axes."""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any

from protobench.report.work import finite

#: one colour per arm (Tableau 10), in row order
PALETTE = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f",
           "#bab0ac")


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo]
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step) + 1)]


def _tick_text(v: float) -> str:
    return f"{v:.3g}" if v != 0 else "0"


def svg_plot(series: list[dict[str, Any]], target: float | None, xlabel: str, ylabel: str, title: str,
             width: int = 460, height: int = 300) -> str:
    """Lines (mean) with bands (interval), a dashed target line and a marker per run's crossing."""
    left, right, top, bottom = 58, 12, 26, 44
    xs = [x for s in series for x, *_ in s["points"]] + [c for s in series for c in s["crossings"]]
    ys = [y for s in series for _, m, lo, hi in s["points"] for y in (m, lo, hi)] + ([target] if target is not None else [])
    if not xs or not ys:
        return f'<svg width="{width}" height="60" role="img"><text x="8" y="30">{html.escape(title)}: no points</text></svg>'
    x0, x1 = min(0.0, min(xs)), max(xs) or 1.0
    y0, y1 = min(ys), max(ys)
    if y1 == y0:
        y0, y1 = y0 - 1, y1 + 1
    pad = (y1 - y0) * 0.05
    y0, y1 = y0 - pad, y1 + pad
    if x1 == x0:
        x1 = x0 + 1

    def sx(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * (width - left - right)

    def sy(y: float) -> float:
        return top + (y1 - y) / (y1 - y0) * (height - top - bottom)

    parts = [f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
             f'aria-label="{html.escape(title)}">',
             f'<rect x="{left}" y="{top}" width="{width - left - right}" height="{height - top - bottom}" '
             'fill="#fff" stroke="#999"/>',
             f'<text x="{left}" y="16" style="font-weight:bold">{html.escape(title)}</text>']
    for t in _ticks(x0, x1):
        parts.append(f'<line x1="{sx(t):.1f}" y1="{height - bottom}" x2="{sx(t):.1f}" y2="{top}" stroke="#eee"/>'
                     f'<text x="{sx(t):.1f}" y="{height - bottom + 14}" text-anchor="middle">{_tick_text(t)}</text>')
    for t in _ticks(y0, y1):
        parts.append(f'<line x1="{left}" y1="{sy(t):.1f}" x2="{width - right}" y2="{sy(t):.1f}" stroke="#eee"/>'
                     f'<text x="{left - 4}" y="{sy(t) + 4:.1f}" text-anchor="end">{_tick_text(t)}</text>')
    parts.append(f'<text x="{(left + width - right) / 2}" y="{height - 8}" text-anchor="middle">{html.escape(xlabel)}</text>')
    parts.append(f'<text transform="translate(12 {(top + height - bottom) / 2}) rotate(-90)" text-anchor="middle">'
                 f'{html.escape(ylabel)}</text>')
    if target is not None:
        parts.append(f'<line x1="{left}" y1="{sy(target):.1f}" x2="{width - right}" y2="{sy(target):.1f}" '
                     'stroke="#000" stroke-dasharray="5 4"/>'
                     f'<text x="{width - right - 4}" y="{sy(target) - 4:.1f}" text-anchor="end">target {target:.4g}</text>')
    for s in series:
        pts = s["points"]
        if len(pts) > 1 and any(hi > lo for _, _, lo, hi in pts):
            band = [f"{sx(x):.1f},{sy(hi):.1f}" for x, _, _, hi in pts] + \
                   [f"{sx(x):.1f},{sy(lo):.1f}" for x, _, lo, _ in reversed(pts)]
            parts.append(f'<polygon points="{" ".join(band)}" fill="{s["color"]}" fill-opacity="0.18" stroke="none"/>')
        line = " ".join(f"{sx(x):.1f},{sy(m):.1f}" for x, m, _, _ in pts)
        parts.append(f'<polyline points="{line}" fill="none" stroke="{s["color"]}" stroke-width="2"/>')
        for x, m, _, _ in pts:
            parts.append(f'<circle cx="{sx(x):.1f}" cy="{sy(m):.1f}" r="2.5" fill="{s["color"]}"/>')
        if target is not None:
            for c in s["crossings"]:  # one marker per run that reached the target
                cx, cy = sx(c), sy(target)
                parts.append(f'<path d="M{cx:.1f} {cy - 6:.1f} L{cx + 5:.1f} {cy + 4:.1f} L{cx - 5:.1f} {cy + 4:.1f} Z" '
                             f'fill="{s["color"]}" stroke="#000" stroke-width="0.6"><title>{html.escape(s["label"])}: '
                             f'reached at {c:.4g}</title></path>')
    for i, s in enumerate(series):  # legend, top right inside the axes
        y = top + 12 + 14 * i
        parts.append(f'<rect x="{width - right - 150}" y="{y - 8}" width="10" height="10" fill="{s["color"]}"/>'
                     f'<text x="{width - right - 136}" y="{y + 1}">{html.escape(s["label"][:26])}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _pca_2d(features, prototypes):
    import numpy as np

    mean = features.mean(0, keepdims=True)
    _, _, vh = np.linalg.svd(features - mean, full_matrices=False)
    axes = vh[:2].T
    return (features - mean) @ axes, (prototypes - mean) @ axes


def prototypes_svg(run: dict[str, Any], width: int = 460, height: int = 380) -> str:
    """Stage-I features of the test split and the class prototypes, on their first two principal axes."""
    import numpy as np
    from safetensors.numpy import load_file

    from protobench.plot_prototypes import stage1_record

    stage1 = stage1_record(Path(run["path"]))
    weights = Path(stage1["artefacts"]) / "stage1.safetensors"
    if not weights.is_file():
        raise FileNotFoundError(f"{weights} is gone (cache cleared?)")
    tensors = load_file(str(weights))
    features = tensors["test_features"].astype(np.float64)
    labels = tensors["test_labels"].astype(np.int64)
    prototypes = tensors["prototypes"].astype(np.float64)
    xy, pxy = _pca_2d(features, prototypes)
    allxy = np.concatenate([xy, pxy])
    (xmin, ymin), (xmax, ymax) = allxy.min(0), allxy.max(0)
    m = 16

    def sx(x: float) -> float:
        return m + (x - xmin) / max(xmax - xmin, 1e-12) * (width - 2 * m)

    def sy(y: float) -> float:
        return height - m - 20 - (y - ymin) / max(ymax - ymin, 1e-12) * (height - 2 * m - 20)

    parts = [f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
             f'aria-label="prototypes of {html.escape(run["run_id"])}"><rect width="{width}" height="{height}" '
             'fill="#fff" stroke="#999"/>']
    for (x, y), k in zip(xy, labels, strict=True):
        parts.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2" fill="{PALETTE[int(k) % len(PALETTE)]}" '
                     'fill-opacity="0.5"/>')
    for k, (x, y) in enumerate(pxy):
        cx, cy = sx(x), sy(y)
        star = " ".join(f"{cx + r * math.sin(a * math.pi / 5):.1f},{cy - r * math.cos(a * math.pi / 5):.1f}"
                        for a, r in zip(range(10), [9, 4] * 5, strict=True))
        parts.append(f'<polygon points="{star}" fill="{PALETTE[k % len(PALETTE)]}" stroke="#000"><title>prototype of '
                     f'class {k}</title></polygon><text x="{cx + 8:.1f}" y="{cy - 6:.1f}">{k}</text>')
    acc = stage1.get("test_accuracy")
    note = f"nearest-prototype accuracy {100 * acc:.1f}%" if finite(acc) and not isinstance(acc, bool) else ""
    parts.append(f'<text x="{m}" y="{height - 8}">PC 1 × PC 2 of the Stage-I test features (dots) and the '
                 f"prototypes (stars); {note}</text></svg>")
    return "".join(parts)
