"""The clock: device-seconds per phase (wall seconds × devices in use).

`compile` holds the seconds of the calls that compiled the step or the sampler (protobench.training.compiled), apart
from `train` and `eval` so that compiled and eager arms compare phase by phase; it is charged like them."""

from __future__ import annotations

import time
from contextlib import contextmanager

PHASES = ("prepare", "train", "eval", "compile")
#: the phases charged to reach a quality (GPU-hours to best FID): everything but evaluation
CHARGED = ("prepare", "compile", "train")


def charged_seconds(device_seconds: dict[str, float]) -> float:
    """Device-seconds charged to reach an evaluation: prepare + compile + train (records before `compile`: 0)."""
    return sum(float(device_seconds.get(p, 0.0)) for p in CHARGED)


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
