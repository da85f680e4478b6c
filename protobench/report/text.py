"""The report as rich tables on the terminal: numbers to three significant figures, 80 columns by default."""

from __future__ import annotations

from typing import Any

from protobench.report.rows import BASELINE
from protobench.report.work import CLOCKS, INTERPOLATION, clock_unit
from protobench.stats import METHOD_NAME
from protobench.vocabulary import AXES


def num(x: float | None, digits: int = 3) -> str:
    """`x` in `digits` significant figures (scientific past 1e5 or under 1e-3); — for None."""
    if x is None:
        return "—"
    if abs(x) < 1e-10:  # rounding noise of a spread that is zero
        x = 0.0
    if x != 0 and (abs(x) >= 1e5 or abs(x) < 1e-3):
        return f"{x:.{digits - 1}e}"
    return f"{x:#.{digits}g}".rstrip(".")  # significant zeros kept: 8.00, not 8


def fmt_stat(stat: dict[str, Any], digits: int = 3) -> str:
    """mean ± 95% half-width, in `digits` significant figures (the half-width in two)."""
    if stat.get("mean") is None:
        return "—"
    text = num(stat["mean"], digits)
    if stat.get("ci95") is not None:
        text += f"±{num(stat['ci95'], 2)}"
    return text


def fmt_work(stat: dict[str, Any], clock: str) -> str:
    if clock == "images" and stat.get("mean") is not None:
        text = f"{stat['mean'] / 1000:.3g}k"
        if stat.get("ci95") is not None:
            text += f"±{stat['ci95'] / 1000:.2g}k"
        return text
    return fmt_stat(stat, 3)


def fmt_interval(iv: dict[str, Any] | None, ratio: bool = False, digits: int = 3) -> str:
    """value [low, high]; a ratio gets ×."""
    if not iv or iv.get("value") is None:
        return "—"
    mark = "×" if ratio else ""
    sign = "" if ratio else "+" if iv["value"] > 0 else ""
    text = f"{sign}{num(iv['value'], digits)}{mark}"
    if iv.get("low") is not None:
        text += f" [{num(iv['low'], digits)}, {num(iv['high'], digits)}]"
    return text


def _crossed(row: dict[str, Any]) -> str:
    c = row["crossings"]
    if row["target"] is None:
        return "—"
    return f"{c['between'] + c['at_first']}/{c['at_last']}/{c['never']}"


def _speedup(row: dict[str, Any], work_ratio: dict[str, Any] | None) -> str:
    if row["conditioner"] == BASELINE and row.get("baseline") == row["combination"]:
        return "baseline"
    if not row.get("paired") or not work_ratio or work_ratio.get("value") is None:
        return "—"
    p = row["paired"]
    text = fmt_interval(work_ratio, ratio=True)
    if p["seeds_reached"] < p["seeds"]:
        text += f" ({p['seeds_reached']}/{p['seeds']})"  # censored seeds left out
    elif row["crossings"]["at_last"]:
        text += "*"  # rests on crossings at the last evaluation
    return text


class _Group:
    """The rows of one (device type, metric) and what their tables share: the arm names, the axes that vary
    between the rows, and which optional columns (acceptance, diagnostics) they need."""

    def __init__(self, rows: list[dict[str, Any]], device_type: str, key: str, title: str, clocks: list[str],
                 wide: bool):
        from rich.markup import escape

        self.rows, self.device_type, self.key, self.clocks = rows, device_type, key, clocks
        self.escape = escape
        arrow = "↑" if rows[0]["higher_is_better"] else "↓"
        shared = [a for a in AXES if a != "conditioner" and len({r[a] for r in rows}) == 1]
        self.varying = [a for a in AXES if a != "conditioner" and a not in shared]
        setting = ", ".join(f"{a} {rows[0][a]}" for a in shared)
        self.finals = sorted({k for r in rows for k in r["final"] if k != key}) if wide else []
        self.accepting = any(r.get("acceptance_rate") for r in rows)
        self.diagnosed = any(r.get("diagnostics") for r in rows)
        self.head = f"{escape(key)} {arrow} — {escape(setting)}"
        self.title = title

    def table(self, name: str):
        from rich import box
        from rich.table import Table

        t = Table(title=name, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1))
        for col in (*self.varying, "arm"):
            t.add_column(col, no_wrap=True, overflow="fold")
        return t

    def names(self, r: dict[str, Any]) -> list[str]:
        arm = r["conditioner"] + (" †" if r.get("pretrained") else "") + \
            (f"\n{self.escape(r['variant'])}" if r.get("variant") else "")
        return [*(str(r[a]) for a in self.varying), arm]

    def notes(self, r: dict[str, Any]) -> list[str]:
        return [fmt_stat(r["acceptance_rate"]) if r.get("acceptance_rate") else "—"] if self.accepting else []

    @staticmethod
    def diagnostics(r: dict[str, Any]) -> str:
        return "\n".join(f"{k} {fmt_stat(v)}" for k, v in (r.get("diagnostics") or {}).items()) or "—"

    def unit(self, clock: str) -> str:
        return clock_unit(clock, self.device_type)


def render_rows(rows: list[dict[str, Any]], title: str = "protobench report", clock: str | None = None,
                wide: bool = False) -> list[Any]:
    """Rich tables (per device type and metric) and a footnote; the CLI prints them. The default layout fits
    80 columns (two tables: per arm, and paired against the baseline); `wide` puts everything in one table,
    with the final evaluation's metrics and, for clock "all", every clock."""
    from rich.text import Text

    if not rows:
        return [Text("no completed runs with a quality metric in this results directory")]
    out: list[Any] = []
    clocks = list(CLOCKS) if clock == "all" else [clock or rows[0]["clock"]]
    for device_type, key in sorted({(r["device_type"], r["metric"]) for r in rows}):
        group = _Group([r for r in rows if r["device_type"] == device_type and r["metric"] == key],
                       device_type, key, title, clocks, wide)
        out.extend(_wide_table(group) if wide else _narrow_tables(group))
        out.append(Text(_footnote(group)))
    return out


def _wide_table(g: _Group) -> list[Any]:
    """One table: every column, one row per arm."""
    t = g.table(f"{g.title}: {g.head}")
    cols = ["n", "best", "best se", f"prepare ({g.unit(g.rows[0]['clock'])})"]
    for c in g.clocks:
        cols += [f"to target ({g.unit(c)})", f"speed-up ({g.unit(c)})"]
    cols += ["crossed", "Δbest [95%]", "mde", *(f"final {g.escape(k.split('[', 1)[0])}" for k in g.finals)]
    cols += ["accepted"] if g.accepting else []
    for col in cols:
        t.add_column(col, justify="right", no_wrap=True)
    if g.diagnosed:
        t.add_column("conditioner (last eval)", no_wrap=True)
    for r in g.rows:
        cells = [str(len(r["seeds"])), fmt_stat(r["best"]), num(r["best"].get("se"), 2),
                 fmt_work(r["prepare"], r["clock"])]
        for c in g.clocks:
            cells += [fmt_work(r["clocks"][c]["to_target"], c),
                      _speedup(r, r["clocks"][c].get("work_ratio") or (r.get("paired") or {}).get("work_ratio")
                               if c == r["clock"] else r["clocks"][c].get("work_ratio"))]
        p = r.get("paired") or {}
        cells += [_crossed(r), fmt_interval(p.get("best_difference")), num(p.get("mde"), 2)]
        for k in g.finals:
            f = r["final"].get(k)
            cells.append(fmt_stat(f) + (f" (se {num(f['se'], 2)})" if f and f.get("se") is not None else "")
                         if f else "—")
        t.add_row(*g.names(r), *cells, *g.notes(r), *([g.diagnostics(r)] if g.diagnosed else []))
    return [t]


def _narrow_tables(g: _Group) -> list[Any]:
    """Within 80 columns: per arm, the conditioner's diagnostics, and paired with the baseline per clock."""
    t = g.table(f"{g.title}: {g.head}, mean±95% CI")
    clock = g.clocks[0]
    for col in ("n", "best", "se", f"to target, {g.unit(clock)}", "crossed", *(["accepted"] if g.accepting else [])):
        t.add_column(col, justify="right", no_wrap=True)
    for r in g.rows:
        t.add_row(*g.names(r), str(len(r["seeds"])), fmt_stat(r["best"]), num(r["best"].get("se"), 2),
                  fmt_work(r["clocks"][clock]["to_target"], clock), _crossed(r), *g.notes(r))
    out = [t]
    if g.diagnosed:  # multi-line text: a table of its own, so the numbers above stay within 80 columns
        t = g.table("the conditioner at the last evaluation")
        t.add_column("diagnostics", no_wrap=True)
        for r in g.rows:
            t.add_row(*g.names(r), g.diagnostics(r))
        out.append(t)
    for c in g.clocks:
        t = g.table(f"paired with {BASELINE}, seed by seed ({g.unit(c)})")
        for col in ("speed-up [95%]", "Δbest [95%]", "mde"):
            t.add_column(col, justify="right", no_wrap=True)
        for r in g.rows:
            p = r.get("paired") or {}
            t.add_row(*g.names(r), _speedup(r, r["clocks"][c].get("work_ratio")),
                      fmt_interval(p.get("best_difference")), num(p.get("mde"), 2))
        out.append(t)
    return out


def _footnote(g: _Group) -> str:
    """What the columns mean, and the target with where it came from."""
    targets = sorted({(r["target"], r["target_source"], r.get("target_note")) for r in g.rows
                      if r["target"] is not None}, key=str)
    if targets:
        at = "; ".join(f"{num(v, 4)} ({src}{': ' + note if note else ''})" for v, src, note in targets)
    else:
        at = "none (pass --target, or declare one in the dataset's preset): no work to target, no speed-up"
    return (
        f"best: each seed's best {g.key} (its bootstrap se beside it). target {at}. "
        f"to target: work (prepare + train) until the target, interpolated {INTERPOLATION}. "
        "crossed: seeds that reached it before the last evaluation / only at the last / never. "
        "speed-up: the baseline's work to target / the arm's, geometric mean over the seeds both reached "
        "(> 1: faster; * rests on last-evaluation crossings; (k/n): only k of n seeds reached it). "
        f"Δbest: arm − baseline best. Intervals: {METHOD_NAME}, 95%. mde: the Δbest a 5% paired t-test "
        "detects with 80% power at this many seeds. Stage I (prepare) is charged in every clock."
        + (" accepted: the share of draws rejection sampling kept (the rest redrawn, and dropped after 10 "
           "rounds)." if g.accepting else "")
        + (" conditioner: prototype_shift = ‖table − start‖/‖start‖ in diffusion training, stage1_shift the "
           "same in Stage I, prototype_geometry = correlation of the table's pairwise distances with the "
           "Stage-I class means'." if g.diagnosed else "")
        + (" †: a pretrained backbone whose pretraining compute is not charged."
           if any(r.get("pretrained") for r in g.rows) else ""))
