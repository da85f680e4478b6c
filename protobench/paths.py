"""Where results and caches live: `--out` (or $PROTOBENCH_OUT) and its cache (or $PROTOBENCH_CACHE)."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "PROTOBENCH_CACHE"


def default_out() -> Path:
    return Path(os.environ.get("PROTOBENCH_OUT", "protobench-runs"))


def cache_dir(out: Path) -> Path:
    return Path(os.environ.get(CACHE_ENV, out / "cache"))
