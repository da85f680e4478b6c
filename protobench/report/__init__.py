"""The report: rows over seeds (`build_rows`), printed as tables (`render_rows`) or one HTML page
(`write_html`), and `compare` of two runs or sweeps."""

from protobench.report.compare import compare_sides, load_side, render_comparison
from protobench.report.html import write_html
from protobench.report.rows import BASELINE, build_rows
from protobench.report.text import render_rows
from protobench.report.work import CLOCKS, crossing, hours_to_target

__all__ = ["BASELINE", "CLOCKS", "build_rows", "compare_sides", "crossing", "hours_to_target", "load_side",
           "render_comparison", "render_rows", "write_html"]
