"""`--logger tensorboard`: the loss, every evaluation's metrics with their standard errors, and the sample
grids, written through torch.utils.tensorboard; the step of every point is images seen, the report's clock."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from protobench import Logger


class TensorBoardLogger(Logger):
    name = "tensorboard"

    def __init__(self, run_dir: Path, run_id: str, dir: str | None = None):
        # a folder the user names holds one sub-folder per run, so a sweep's runs show side by side
        self.run_dir = Path(run_dir)
        self.log_dir = Path(dir) / run_id if dir else self.run_dir / "tensorboard"
        self._writer = None
        self._purge_step: int | None = None

    @property
    def writer(self):
        if self._writer is None:  # opened on the first event: a run that never logs leaves no empty file
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(self.log_dir), purge_step=self._purge_step)
        return self._writer

    def log(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == "resume":
            # what was logged after the checkpoint is logged again: TensorBoard drops the first copy
            self.close()
            self._purge_step = int(event["images_seen"]) + 1
        elif kind == "loss":
            step = int(event["images_seen"])
            self.writer.add_scalar("train/loss", float(event["loss"]), step)
            self.writer.add_scalar("train/mse", float(event["mse"]), step)
        elif kind == "eval":
            step = int(event["images_seen"])
            for key, value in (event.get("metrics") or {}).items():
                if isinstance(value, (int, float)):
                    self.writer.add_scalar(f"eval/{key}", float(value), step)
            for key, value in (event.get("metrics_se") or {}).items():
                if isinstance(value, (int, float)):
                    self.writer.add_scalar(f"eval_se/{key}", float(value), step)
            seconds = event.get("device_seconds") or {}
            if "train" in seconds:
                self.writer.add_scalar("work/device_hours", (seconds.get("prepare", 0.0) + seconds["train"]) / 3600, step)
            grid = self.run_dir / event["grid"] if event.get("grid") else None
            if grid is not None and grid.is_file():
                import numpy as np
                from PIL import Image

                with Image.open(grid) as image:
                    pixels = np.asarray(image.convert("RGB"))
                self.writer.add_image("samples", pixels, step, dataformats="HWC")
            self.writer.flush()  # an evaluation is what a person watching waits for
        elif kind in ("end", "failed", "interrupted"):
            self.writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
