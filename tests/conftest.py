"""Fixtures shared by the test modules (protobench.testing's fixtures come from its pytest plugin)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def env(protobench_cache_dir) -> dict[str, str]:
    """The environment of a `protobench` subprocess: the session's cache (or $PROTOBENCH_CACHE), one thread,
    offline, and this interpreter's scripts first on PATH (the `protobench` command of the install under test).
    No $SLURM_* (a test cluster's, or the allocation the tests run in): tests/e2e/test_slurm.py adds its own."""
    cache = os.environ.get("PROTOBENCH_CACHE") or str(protobench_cache_dir)
    scripts = str(Path(sys.executable).parent)
    outside = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    return {**outside, "PROTOBENCH_CACHE": cache, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
            "PATH": scripts + os.pathsep + os.environ.get("PATH", "")}
