"""What `protobench run` prints at the end: its evaluations in a table that a standard 80-column terminal shows
whole (no value folded into "…"), the headline metric first, every value with its standard error."""

from __future__ import annotations

import re
import subprocess
import sys

TINY = ["-o", "denoiser.base_channels=8", "-o", "sampler.steps=3", "--eval-samples", "20", "--quiet"]


def test_run_table_fits_80_columns_with_errors(tmp_path, env, protobench_cache):
    cmd = [sys.executable, "-m", "protobench", "run", "--budget", "512", "--eval-every", "256", *TINY,
           "--out", str(tmp_path)]
    proc = subprocess.run(cmd, env={**env, "COLUMNS": "80"}, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stderr.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert "…" not in proc.stderr
    header = next(line for line in lines if "images" in line and "CPU-hours" in line)
    columns = [c.strip() for c in re.split(r"[┃│|]", header) if c.strip()]
    assert columns[:2] == ["images", "intra-kid"]  # digits' headline metric first, evaluator named once below
    rows = [line for line in lines if re.match(r"^│\s+\d", line)]
    assert [r.split("│")[1].strip() for r in rows] == ["256", "512"]
    assert all(cell.count("±") == 1 for r in rows for cell in r.split("│")[2:-2])  # value±se per metric
    assert any("metrics by digits-evaluator" in line for line in lines)
    assert any(line.startswith("best intra-kid[digits-evaluator] = ") and "±" in line for line in lines)
