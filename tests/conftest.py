"""Fixtures shared by the test modules (protobench.testing's fixtures come from its pytest plugin)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def env(protobench_cache_dir) -> dict[str, str]:
    """The environment of a `protobench` subprocess: the session's cache (or $PROTOBENCH_CACHE), one thread,
    offline, and this interpreter's scripts first on PATH (the `protobench` command of the install under test)."""
    cache = os.environ.get("PROTOBENCH_CACHE") or str(protobench_cache_dir)
    scripts = str(Path(sys.executable).parent)
    return {**os.environ, "PROTOBENCH_CACHE": cache, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
            "PATH": scripts + os.pathsep + os.environ.get("PATH", "")}
