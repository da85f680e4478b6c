"""Start one run: in this process, or under the DeepSpeed launcher when its config asks for several processes."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def execute(cfg, registry, out: Path, show_progress: bool = True, hostfile: Path | None = None,
            threads: int | None = None) -> dict[str, Any]:
    """Run one config in this process, or under the DeepSpeed launcher when it asks for several processes."""
    if cfg.gpus > 1 and int(os.environ.get("WORLD_SIZE", "1")) == 1:
        from protobench.data_parallel import launch

        return launch(cfg, out, show_progress=show_progress, hostfile=hostfile)
    from protobench.device import apply_threads
    from protobench.training.run import Run

    apply_threads(threads)
    return Run(cfg, registry, out, show_progress=show_progress).execute()
