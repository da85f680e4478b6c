"""protobench.testing: the checks every built-in plugin passes, for plugin authors to run on theirs.

Subclass one conformance class per plugin, name the subclass ``Test...`` and set ``plugin_name``::

    from protobench.testing import ConditionerTests

    class TestOneHot(ConditionerTests):
        plugin_name = "onehot"
        options = {"scale": 2.0}

The fixtures (``tiny_dataset``, ``tiny_denoiser``, ``tiny_run``, ``protobench_cache``, ...) come from the
pytest plugin ``protobench.testing.plugin``, which pytest loads by itself once protobench is installed.
"""

from protobench.testing.conformance import (
    ConditionerTests,
    DatasetTests,
    DenoiserTests,
    GuidanceTests,
    LoggerTests,
    MetricTests,
    PluginTests,
    SamplerTests,
)
from protobench.testing.tiny import TINY_RUN_ARGS, TinyDataset, tiny_config

CONFORMANCE = {
    "dataset": DatasetTests,
    "conditioner": ConditionerTests,
    "denoiser": DenoiserTests,
    "guidance": GuidanceTests,
    "sampler": SamplerTests,
    "metric": MetricTests,
    "logger": LoggerTests,
}

__all__ = [
    "CONFORMANCE",
    "TINY_RUN_ARGS",
    "ConditionerTests",
    "DatasetTests",
    "DenoiserTests",
    "GuidanceTests",
    "LoggerTests",
    "MetricTests",
    "PluginTests",
    "SamplerTests",
    "TinyDataset",
    "tiny_config",
]
