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
import time
from pathlib import Path
from typing import Any

from protobench.records import CONFIG_NAME, ranked_evals
from protobench.report.rows import evaluator
from protobench.report.svg import PALETTE, prototypes_svg, svg_plot
from protobench.report.work import CLOCKS, clock_at, clock_unit, crossing, finite
from protobench.runfolder import RunFolder
from protobench.stats import summarize
from protobench.vocabulary import AXES

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


def runs_of(row: dict[str, Any], records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The completed records a report row summarises (same combination, device type, evaluator, metric)."""
    found = [r for r in records
             if r.get("status") == "completed" and r.get("combination") == row.get("combination")
             and r["device"]["type"] == row.get("device_type") and evaluator(r) == row.get("evaluator")
             and any(row["metric"] in e.get("metrics", {}) for e in r.get("evals", []))]
    seeds = row.get("seeds")
    if isinstance(seeds, list):
        found = [r for r in found if r["config"].get("seed") in seeds]
    return sorted(found, key=lambda r: r["config"].get("seed", 0))


def curve(runs: list[dict[str, Any]], key: str, clock: str) -> list[tuple[float, float, float, float]]:
    """Per evaluation point (images seen): (mean work, mean value, low, high), the band being the 95% interval
    of the mean over seeds (Student's t; the mean alone with one seed)."""
    by_images: dict[int, list[tuple[float, float]]] = {}
    for r in runs:
        for ev in r["evals"]:
            value, work = ev["metrics"].get(key), clock_at(ev, clock)
            if finite(value) and work is not None:
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
# curves


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
                reached = [crossing(r, row["target"], key, clock)["work"] for r in runs] \
                    if row.get("target") is not None else []
                crossings = [c for c in reached if c is not None]
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
    owner = {id(e): r for r in runs for e in r["evals"]}
    for ev in ranked_evals([e for r in runs for e in r["evals"]], row["metric"]):
        run = owner[id(ev)]
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
        return str(json.loads((Path(run["path"]) / CONFIG_NAME).read_text()).get("protobench_version", "?"))
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
        records = [{**r, "path": str(RunFolder(out, r["run_id"]).path)} for r in records]
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
