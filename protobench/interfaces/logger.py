"""Logger: receives a run's events as they happen (losses, evaluations with their errors, sample grids).

A logger observes; it never changes a run. The core calls it on the main process only, and a logger that
raises is reported once (one warning line) and dropped while the run goes on (protobench/loggers.py).
"""

from __future__ import annotations

from typing import Any, ClassVar


class Logger:
    """Subclass, set `name`, implement `log`. Built with the user's `-o logger.<key>=value` options plus the
    context its __init__ asks for: `run_dir` (the run's folder), `run_id`, `run_config` (the resolved config)."""

    name: ClassVar[str] = ""

    def log(self, event: dict[str, Any]) -> None:
        """One event as it is appended to the run's events.jsonl: {"event": kind, "time": ..., **fields}.

        Kinds a logger usually wants: `loss` (step, images_seen, loss, mse), `eval` (images_seen, metrics,
        metrics_se when recorded, samples: how many were scored, grid: the sample grid's path relative to the
        run folder), `end` / `failed`."""
        raise NotImplementedError

    def close(self) -> None:
        """Flush and release what `log` opened; called once when the run ends, however it ends."""
