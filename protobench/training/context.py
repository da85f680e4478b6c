"""Where a run happens and whom it tells: its folder, this process (rank, device), its events and loggers."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from protobench.config import RunConfig
from protobench.device import pick_device
from protobench.events import append_event, make_event
from protobench.ledger import Ledger
from protobench.loggers import RunLoggers
from protobench.plugins import Registry
from protobench.rank import agree, current_dist
from protobench.runfolder import RunFolder


class RunContext:
    """One run's place: `dir` (validated: a name, never a path), this process's `dist` and `device`, the
    person at the terminal (`say`), the append-only events (`event`) and live loggers they feed."""

    def __init__(self, cfg: RunConfig, registry: Registry, out: Path, show_progress: bool = True,
                 progress: Callable[[int, int, float], None] | None = None):
        self.cfg = cfg
        self.registry = registry
        self.out = Path(out)
        self.folder = RunFolder(self.out, cfg.run_id())
        self.dir = self.folder.path
        self.show_progress = show_progress
        #: called on the main process after each step with (images_seen, budget, mse): how a sweep shows progress
        self.progress = progress
        self.dist = current_dist()
        self.device = pick_device(self.dist)
        self.loggers: RunLoggers | None = None  # live loggers (main process), fed every event

    def say(self, text: str) -> None:
        """One line for the person at the terminal (stderr; the main process only)."""
        if self.dist.main and self.show_progress:
            print(text, file=sys.stderr, flush=True)

    def event(self, kind: str, **fields: Any) -> None:
        if self.dist.main:
            record = make_event(kind, **fields)
            append_event(self.folder.events_path, record)
            if self.loggers is not None:
                self.loggers.log(record)

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def fork_rng(self):
        """A context that leaves the global RNG (and this device's) as it found them."""
        return torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else [])

    def agree(self, flag: bool) -> bool:
        """A decision every rank takes together (a checkpoint is a collective under ZeRO)."""
        return agree(flag, self.dist, self.device)

    def charge_prepare(self, ledger: Ledger, work: dict[str, float], pctx) -> None:
        """Book a prepare step's reused device-seconds and its work in machine-independent units."""
        ledger.add("prepare", pctx.cached_device_seconds)
        work["images"] += pctx.work_images
        work["flops"] += pctx.work_flops
