"""The clock: device-seconds per phase (wall seconds × devices in use)."""

from __future__ import annotations

import time
from contextlib import contextmanager

PHASES = ("prepare", "train", "eval")


class Ledger:
    def __init__(self, devices: int = 1, seconds: dict[str, float] | None = None):
        self.devices = devices
        self.device_seconds = {p: 0.0 for p in PHASES}
        if seconds:
            self.device_seconds.update({k: float(v) for k, v in seconds.items() if k in PHASES})

    @contextmanager
    def phase(self, name: str, sync=None):
        if name not in PHASES:
            raise ValueError(f"unknown phase {name!r}; known: {', '.join(PHASES)}")
        if sync:
            sync()
        start = time.perf_counter()
        try:
            yield
        finally:
            if sync:
                sync()
            self.add(name, (time.perf_counter() - start) * self.devices)

    def add(self, name: str, device_seconds: float) -> None:
        self.device_seconds[name] += device_seconds

    def snapshot(self) -> dict[str, float]:
        return dict(self.device_seconds)
