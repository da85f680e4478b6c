"""The pytest plugin (entry point `pytest11`): fixtures for testing protobench plugins with real parts.

Loaded by pytest whenever protobench is installed, so it imports nothing heavy until a fixture is used.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="session")
def protobench_registry():
    """The plugin registry, loaded once per session (as the CLI loads it)."""
    from protobench.plugins import get_registry

    return get_registry()


@pytest.fixture(scope="session")
def protobench_cache_dir(tmp_path_factory) -> Path:
    """A cache directory shared by the session (evaluator networks, real-data statistics, prototypes)."""
    return tmp_path_factory.mktemp("protobench-cache")


@pytest.fixture
def protobench_cache(monkeypatch, protobench_cache_dir) -> Path:
    """Point PROTOBENCH_CACHE at the session's temporary cache (and keep Hugging Face offline)."""
    monkeypatch.setenv("PROTOBENCH_CACHE", str(protobench_cache_dir))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return protobench_cache_dir


@pytest.fixture(scope="session")
def tiny_dataset(protobench_registry):
    """20 training and 10 test images per class of the real digits data (1×8×8, 10 classes), in memory."""
    from protobench.testing.tiny import TinyDataset

    return TinyDataset(protobench_registry.build("dataset", "digits", {}, {}))


@pytest.fixture
def tiny_denoiser(protobench_registry, tiny_dataset) -> Callable[..., Any]:
    """`tiny_denoiser(cond=ConditionSpec(emb_dim=8))`: a small untrained U-Net for the tiny dataset's images."""
    from protobench.interfaces import ConditionSpec
    from protobench.testing.tiny import TINY_OPTIONS, accepted

    def make(cond: ConditionSpec = ConditionSpec(), name: str = "unet", **options: Any):
        known = accepted(protobench_registry, "denoiser", name)
        small = {k.split(".", 1)[1]: v for k, v in TINY_OPTIONS.items()
                 if k.startswith("denoiser.") and k.split(".", 1)[1] in known}
        context = {"num_classes": tiny_dataset.num_classes, "image_shape": tiny_dataset.image_shape, "cond": cond}
        return protobench_registry.build("denoiser", name, {**small, **options}, context)

    return make


@pytest.fixture
def tiny_net(protobench_registry, tiny_dataset):
    """An untrained `net(x_t, t, labels) -> ε` (learned class table + small U-Net), what guidance wraps."""
    from protobench.testing.tiny import tiny_net as make

    return make(protobench_registry, tiny_dataset.num_classes, tiny_dataset.image_shape)


@pytest.fixture
def prepare_context(tiny_dataset, tmp_path):
    """A PrepareContext on the tiny dataset, with a fresh cache directory."""
    from protobench.testing.conformance import prepare_context as make

    return make(tiny_dataset, tmp_path / "prepare-cache")


@pytest.fixture
def tiny_run(protobench_cache, protobench_registry, tmp_path) -> Callable[..., dict[str, Any]]:
    """`tiny_run("--conditioner", "onehot", ...)`: `protobench run --json` with a budget of a few seconds,
    results under tmp_path, cache in the session's temporary cache. Returns the run record.

    It goes through the real command line (in this process). Without `--metric` the run computes FID
    with the digits evaluator, which is trained once per session (about half a minute on a laptop CPU).
    """
    from click.testing import CliRunner

    from protobench.cli import main
    from protobench.testing.tiny import TINY_RUN_ARGS, tiny_overrides

    def run(*args: str, expect_exit: int = 0) -> dict[str, Any]:
        args = tuple(shlex.split(args[0])) if len(args) == 1 and " " in args[0] else args
        chosen = {kind: args[i + 1] for i, a in enumerate(args[:-1])
                  for kind in ("denoiser", "sampler") if a == f"--{kind}"}
        small = [x for k, v in tiny_overrides(protobench_registry, chosen).items() for x in ("-o", f"{k}={v}")]
        argv = ["run", "--json", "--quiet", "--out", str(tmp_path / "protobench-runs"), *TINY_RUN_ARGS, *small, *args]
        result = CliRunner().invoke(main, argv, catch_exceptions=False)
        assert result.exit_code == expect_exit, f"protobench {shlex.join(argv)} exited {result.exit_code}:\n{result.stderr}"
        if result.exit_code != 0:
            return {"exit_code": result.exit_code, "stderr": result.stderr}
        return json.loads(result.stdout)

    return run
