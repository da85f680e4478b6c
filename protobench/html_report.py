"""`protobench report --html FILE`: one self-contained HTML file built from the run records alone.

It opens offline: inline CSS, figures as inline SVG or data-URI PNGs, no script and no http(s) resource.
It holds the report's table (every field of every `report --json` row, rendered generically, so fields
added to the rows appear without changes here), the curves of every arm on each clock, a sample grid per
arm at its best evaluation (the grid the run saved then), the prototypes of proto arms (from the Stage-I
artefacts, with numpy), and the provenance of every run. Reading results never imports torch or training.
"""

from __future__ import annotations

import base64
import html
import json
import math
import time
from pathlib import Path
from typing import Any

from protobench.report import AXES, CLOCKS, clock_at, clock_unit, summarize

#: one colour per arm (Tableau 10), in row order
PALETTE = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f",
           "#bab0ac")

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px;color:#222;max-width:1400px}
h1{font-size:1.4em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd}h3{font-size:1.05em}
table{border-collapse:collapse;font-size:12px;margin:8px 0}
th,td{border:1px solid #ccc;padding:2px 6px;text-align:left;vertical-align:top}
td.num{text-align:right;font-variant-numeric:tabular-nums}
thead th{background:#f3f3f3;position:sticky;top:0}
th.key{font-family:ui-monospace,monospace;font-weight:normal;background:#fafafa}
.scroll{overflow-x:auto}.figs{display:flex;flex-wrap:wrap;gap:16px}
figure{margin:0}figure img{width:360px;height:auto}figcaption{font-size:12px;color:#444;max-width:520px}
.note{font-size:12px;color:#555;max-width:900px}svg text{font-size:11px;fill:#333}
"""


# ---------------------------------------------------------------------------------------------
# the table: every leaf of every row


def leaves(value: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """(dotted path, value) for every leaf of a JSON row; a list of plain values is one leaf."""
    if isinstance(value, dict):
        out: list[tuple[str, Any]] = []
        for key, sub in value.items():
            out.extend(leaves(sub, f"{prefix}.{key}" if prefix else str(key)))
        return out
    if isinstance(value, list) and any(isinstance(v, (dict, list)) for v in value):
        out = []
        for i, sub in enumerate(value):
            out.extend(leaves(sub, f"{prefix}.{i}"))
        return out
    return [(prefix, value)]


def format_cell(value: Any) -> str:
    """The text of a table cell: numbers to 6 significant digits (the exact value is the cell's data-value)."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, list):
        return ", ".join(format_cell(v) for v in value)
    return str(value)


def _json_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows exactly as `report --json` prints them (same serialisation, same numbers)."""
    return json.loads(json.dumps(rows, default=str))


def arm_label(row: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    varying = [a for a in AXES if a != "conditioner" and len({r.get(a) for r in rows}) > 1]
    parts = [str(row.get(a)) for a in varying] + [str(row.get("conditioner"))]
    if row.get("variant"):
        parts.append(str(row["variant"]))
    return " / ".join(parts)


def table_html(rows: list[dict[str, Any]]) -> str:
    """One column per report row, one line per field (the union of the rows' fields, in their order)."""
    data = _json_rows(rows)
    per_row = [dict(leaves(r)) for r in data]
    keys: list[str] = []
    for flat in per_row:
        keys.extend(k for k in flat if k not in keys)
    head = "".join(f'<th data-row="{i}" style="border-top:4px solid {PALETTE[i % len(PALETTE)]}">'
                   f"{html.escape(arm_label(r, data))}</th>" for i, r in enumerate(data))
    body = []
    for key in keys:
        cells = []
        for i, flat in enumerate(per_row):
            if key not in flat:
                cells.append(f'<td class="absent" data-row="{i}"></td>')
                continue
            value = flat[key]
            cls = ' class="num"' if isinstance(value, (int, float)) and not isinstance(value, bool) else ""
            cells.append(f'<td{cls} data-row="{i}" data-key="{html.escape(key)}" '
                         f'data-value="{html.escape(json.dumps(value))}">{html.escape(format_cell(value))}</td>')
        body.append(f'<tr><th class="key">{html.escape(key)}</th>{"".join(cells)}</tr>')
    return (f'<div class="scroll"><table id="report"><thead><tr><th>field</th>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div>')


# ---------------------------------------------------------------------------------------------
# the runs behind each row


def _evaluator(record: dict[str, Any]) -> str | None:
    from protobench.report import _evaluator as evaluator

    return evaluator(record)


def runs_of(row: dict[str, Any], records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The completed records a report row summarises (same combination, device type, evaluator, metric)."""
    found = [r for r in records
             if r.get("status") == "completed" and r.get("combination") == row.get("combination")
             and r["device"]["type"] == row.get("device_type") and _evaluator(r) == row.get("evaluator")
             and any(row["metric"] in e.get("metrics", {}) for e in r.get("evals", []))]
    seeds = row.get("seeds")
    if isinstance(seeds, list):
        found = [r for r in found if r["config"].get("seed") in seeds]
    return sorted(found, key=lambda r: r["config"].get("seed", 0))


def _good(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def crossing(record: dict[str, Any], target: float | None, key: str, up: bool, clock: str) -> float | None:
    """Work at which the run first reached `target`: interpolated between the evaluations that bracket it
    (the report's own definition where it has one, so the marks agree with its to-target numbers)."""
    if target is None:
        return None
    from protobench import report

    if hasattr(report, "crossing"):
        return report.crossing(record, target, key, clock)["work"]
    prev = None
    for ev in sorted(record["evals"], key=lambda e: e["images_seen"]):
        value, work = ev["metrics"].get(key), clock_at(ev, clock)
        if not _good(value) or work is None:
            continue
        if (value >= target) if up else (value <= target):
            if prev is None or prev[1] == value:
                return work
            frac = (target - prev[1]) / (value - prev[1])
            return prev[0] + frac * (work - prev[0])
        prev = (work, value)
    return None


def curve(runs: list[dict[str, Any]], key: str, clock: str) -> list[tuple[float, float, float, float]]:
    """Per evaluation point (images seen): (mean work, mean value, low, high), the band being the 95% interval
    of the mean over seeds (Student's t; the mean alone with one seed)."""
    by_images: dict[int, list[tuple[float, float]]] = {}
    for r in runs:
        for ev in r["evals"]:
            value, work = ev["metrics"].get(key), clock_at(ev, clock)
            if _good(value) and work is not None:
                by_images.setdefault(ev["images_seen"], []).append((work, value))
    points = []
    for images in sorted(by_images):
        works, values = zip(*by_images[images], strict=True)
        stat = summarize(list(values))
        mean = sum(values) / len(values)
        half = stat["ci95"] or 0.0
        points.append((sum(works) / len(works), mean, mean - half, mean + half))
    return points


# ---------------------------------------------------------------------------------------------
# SVG figures (drawn by hand: no script, no external namespace)


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


def curves_html(rows: list[dict[str, Any]], records: list[dict[str, Any]]) -> str:
    data = _json_rows(rows)
    out = []
    for device_type, key in sorted({(r["device_type"], r["metric"]) for r in rows}):
        group = [(i, r) for i, r in enumerate(rows) if r["device_type"] == device_type and r["metric"] == key]
        up = bool(group[0][1].get("higher_is_better"))
        targets = {r.get("target") for _, r in group}
        target = next(iter(targets)) if len(targets) == 1 else None
        figs = []
        for clock in CLOCKS:
            series = []
            for i, row in group:
                runs = runs_of(row, records)
                crossings = [c for c in (crossing(r, row.get("target"), key, up, clock) for r in runs) if c is not None]
                series.append({"label": arm_label(data[i], data), "color": PALETTE[i % len(PALETTE)],
                               "points": curve(runs, key, clock), "crossings": crossings})
            unit = clock_unit(clock, device_type)
            figs.append(f"<figure>{svg_plot(series, target, f'{unit} (prepare + train)', key, f'{key} vs {unit}')}"
                        "</figure>")
        arrow = "higher is better" if up else "lower is better"
        out.append(f"<h3>{html.escape(key)} on {html.escape(device_type)} ({arrow})</h3>"
                   f'<div class="figs">{"".join(figs)}</div>')
    out.append('<p class="note">Line: the mean over seeds at each evaluation; band: its 95% interval (Student\'s t '
               "over seeds); dashed: the target; triangles: where each run first reached the target (interpolated "
               "between the evaluations that bracket it).</p>")
    return "".join(out)


# ---------------------------------------------------------------------------------------------
# pictures saved by the runs


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def best_grid(row: dict[str, Any], runs: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any], Path] | None:
    """(run, its best evaluation, the sample grid saved at it) for the arm's best seed."""
    key, up = row["metric"], bool(row.get("higher_is_better"))
    scored = [(r, e) for r in runs for e in r["evals"] if _good(e["metrics"].get(key))]
    for run, ev in sorted(scored, key=lambda p: ((-1 if up else 1) * p[1]["metrics"][key], p[1]["images_seen"])):
        grid = Path(run["path"]) / "samples" / f"{ev['images_seen']:09d}.png"
        if grid.is_file():
            return run, ev, grid
    return None


def samples_html(rows: list[dict[str, Any]], records: list[dict[str, Any]]) -> str:
    data = _json_rows(rows)
    figs = []
    for i, row in enumerate(rows):
        label = html.escape(arm_label(data[i], data))
        found = best_grid(row, runs_of(row, records))
        if found is None:
            figs.append(f"<figure><figcaption>{label}: no sample grid saved</figcaption></figure>")
            continue
        run, ev, grid = found
        caption = (f"{label} — seed {run['config'].get('seed')}, at {ev['images_seen']:,} images: "
                   f"{row['metric']} = {ev['metrics'][row['metric']]:.4g}; one row per class (named at the left)")
        figs.append(f'<figure><img alt="{label} samples" src="{_data_uri(grid)}" style="image-rendering:pixelated">'
                    f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    return f'<div class="figs">{"".join(figs)}</div>'


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
    note = f"nearest-prototype accuracy {100 * acc:.1f}%" if _good(acc) else ""
    parts.append(f'<text x="{m}" y="{height - 8}">PC 1 × PC 2 of the Stage-I test features (dots) and the '
                 f"prototypes (stars); {note}</text></svg>")
    return "".join(parts)


def prototypes_html(rows: list[dict[str, Any]], records: list[dict[str, Any]]) -> str:
    data = _json_rows(rows)
    figs = []
    for i, row in enumerate(rows):
        # arms whose prepare step recorded Stage-I prototypes (the record says so; no plugin is named here)
        runs = [r for r in runs_of(row, records) if (r.get("prepare") or {}).get("stage1")]
        label = html.escape(arm_label(data[i], data))
        if not runs:
            continue
        try:
            svg = prototypes_svg(runs[0])
            figs.append(f"<figure>{svg}<figcaption>{label} — seed {runs[0]['config'].get('seed')}</figcaption></figure>")
        except Exception as exc:  # the artefacts live in the cache, which may have been cleared
            figs.append(f"<figure><figcaption>{label}: prototypes unavailable ({html.escape(str(exc))})"
                        "</figcaption></figure>")
    if not figs:
        return '<p class="note">No arm in this report learned prototypes (Stage I).</p>'
    return f'<div class="figs">{"".join(figs)}</div>'


# ---------------------------------------------------------------------------------------------
# provenance


def _protobench_version_of(run: dict[str, Any]) -> str:
    try:
        return str(json.loads((Path(run["path"]) / "config.json").read_text()).get("protobench_version", "?"))
    except (OSError, ValueError):
        return "?"


def provenance_html(rows: list[dict[str, Any]], records: list[dict[str, Any]]) -> str:
    from protobench import __version__

    data = _json_rows(rows)
    lines = []
    for i, row in enumerate(rows):
        for run in runs_of(row, records):
            device = run.get("device") or {}
            plugins = ", ".join(f"{k} ({v.get('plugin')} {v.get('version')})" for k, v in sorted(run["plugins"].items()))
            evaluators = ", ".join(f"{k} {v}" for k, v in sorted((run.get("instruments") or {}).items())) or "—"
            cells = [arm_label(data[i], data), run["run_id"], str(run["config"].get("seed")),
                     _protobench_version_of(run), run.get("config_hash", "?"),
                     f"{device.get('count', '?')} × {device.get('name', device.get('type', '?'))} ({device.get('type', '?')})",
                     evaluators, plugins]
            lines.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>")
    head = "".join(f"<th>{h}</th>" for h in ("arm", "run", "seed", "protobench", "config hash", "device",
                                              "evaluator (digest)", "plugins (package version)"))
    return (f'<p class="note">This page was written by protobench {html.escape(__version__)} on '
            f"{time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}.</p>"
            f'<div class="scroll"><table id="provenance"><thead><tr>{head}</tr></thead><tbody>{"".join(lines)}'
            "</tbody></table></div>")


# ---------------------------------------------------------------------------------------------
# the page


def build_html(rows: list[dict[str, Any]], records: list[dict[str, Any]], title: str = "protobench report",
               out: Path | None = None) -> str:
    """The page. With `out`, each run's files are read from <out>/runs/<run_id> (a results folder that was
    moved or copied since it was indexed), else from the path its record names."""
    if out is not None:
        records = [{**r, "path": str(Path(out) / "runs" / r["run_id"])} for r in records]
    clock = rows[0].get("clock", "device-hours") if rows else "device-hours"
    sections = [
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="note">{len(rows)} arm(s) over {sum(len(runs_of(r, records)) for r in rows)} completed run(s); '
        f"clock of the table: {html.escape(str(clock))}. Every field of <code>protobench report --json</code> is a line "
        "of the table; numbers are shown to 6 significant digits (hover: the exact value is the cell's data).</p>",
        "<h2>Report</h2>", table_html(rows) if rows else "<p>No completed runs with a quality metric.</p>",
        "<h2>Curves</h2>", curves_html(rows, records) if rows else "",
        "<h2>Samples at each arm's best evaluation</h2>", samples_html(rows, records),
        "<h2>Prototypes (Stage I)</h2>", prototypes_html(rows, records),
        "<h2>Provenance</h2>", provenance_html(rows, records),
    ]
    return ('<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<title>{html.escape(title)}</title><link rel="icon" href="data:,"><style>{CSS}</style></head>'
            f"<body>{''.join(sections)}</body></html>\n")


def write_html(path: Path, rows: list[dict[str, Any]], records: list[dict[str, Any]],
               title: str = "protobench report", out: Path | None = None) -> Path:
    """Write the page atomically; returns its path."""
    from protobench.io import atomic_write_bytes

    path = Path(path)
    atomic_write_bytes(path, build_html(rows, records, title, out).encode("utf-8"))
    return path
