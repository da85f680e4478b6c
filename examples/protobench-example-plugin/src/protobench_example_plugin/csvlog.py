"""A logger: every evaluation's metrics (with their standard errors, when recorded) as rows of a CSV file
that a spreadsheet can follow while the run trains."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from protobench import Logger


class CSVMetrics(Logger):
    name = "csv-metrics"

    def __init__(self, run_dir: Path, filename: str = "metrics.csv"):
        self.path = Path(run_dir) / filename

    def log(self, event: dict[str, Any]) -> None:
        if event.get("event") != "eval":
            return  # losses, checkpoints and kinds this logger does not know pass by
        new = not self.path.exists()
        with self.path.open("a", newline="") as fh:
            writer = csv.writer(fh)
            if new:
                writer.writerow(["images_seen", "metric", "value", "standard_error"])
            se = event.get("metrics_se") or {}
            for key, value in sorted(event.get("metrics", {}).items()):
                writer.writerow([event["images_seen"], key, value, se.get(key, "")])

    def close(self) -> None:
        pass  # each row is written and closed at once: nothing to flush
