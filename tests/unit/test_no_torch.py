"""Reading results needs no torch: `report`, `compare` and `plot curves` run on run folders without importing it
(torch is most of their start-up time and memory), nor scipy (`import scipy.special` alone took 0.23 to 0.34 s on the 2-core machine)."""

from __future__ import annotations

import json
import subprocess
import sys

from test_report import baseline_and_proto

#: runs a command in a fresh interpreter, then lists the torch and scipy modules it imported
PROBE = """
import json, sys
from protobench.cli import main
try:
    main(sys.argv[1:], standalone_mode=False)
finally:
    loaded = [m for m in sys.modules if m.split(".")[0] in ("torch", "scipy")]
    print(json.dumps(loaded), file=sys.stderr)
"""


def _loaded(*args: str) -> list[str]:
    done = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stderr.strip().splitlines()[-1])


def test_report_compare_and_plot_curves_import_no_torch_nor_scipy(tmp_path):
    baseline_and_proto(tmp_path)
    assert _loaded("report", "--out", str(tmp_path), "--json") == []
    assert _loaded("compare", str(tmp_path), str(tmp_path), "--json") == []
    assert _loaded("plot", "curves", "--out", str(tmp_path), "--output", str(tmp_path / "c.png")) == []
    assert (tmp_path / "c.png").stat().st_size > 0


def test_the_config_schema_and_the_records_import_without_torch():
    code = ("import sys; import protobench.config, protobench.records, protobench.report, protobench.store, "
            "protobench.plots; print('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "False", done.stderr


def test_a_metric_that_declares_its_direction_wrongly_is_refused_when_imported():
    from protobench.errors import PluginError
    from protobench.plugins import Registry

    registry = Registry()
    # FID goes down; declaring it higher-is-better would rank runs backwards without ever importing the class
    registry.add("metric", "protobench_metrics.fidelity_metrics:FID", "t", "0", name="fid", higher_is_better=True)
    assert registry.get("metric", "fid").attribute("higher_is_better") is True  # stated, not imported
    try:
        _ = registry.get("metric", "fid").cls
    except PluginError as exc:
        assert "higher_is_better=True" in str(exc)
    else:
        raise AssertionError("a wrong declared direction was accepted")
