"""One conformance test class per plugin kind (in the spirit of diffusers' model/scheduler test mixins),
one module per kind, so that a plugin author reads only their own: `dataset`, `conditioner`, `denoiser`,
`guidance`, `sampler`, `metric`, `logger`; what they share (`PluginTests`, helpers) is in `_base`.

A subclass names the plugin (``plugin_name``) and, if needed, small options (``options``); every
``test_*`` method then checks one part of the contract the core relies on. To opt out of one check
for a good reason, set it to None in the subclass (``test_real_beats_noise = None``).
"""

from protobench.testing.conformance._base import (
    ModuleChecks,
    PluginTests,
    assert_same_conditioning,
    conditioning_fields,
    one_line_usage_error,
    overrides,
    prepare_context,
    round_trip,
    unregistered_tensors,
)
from protobench.testing.conformance.conditioner import ConditionerTests, loss_context
from protobench.testing.conformance.dataset import DatasetTests
from protobench.testing.conformance.denoiser import DenoiserTests
from protobench.testing.conformance.guidance import GuidanceTests
from protobench.testing.conformance.logger import LoggerTests, run_events
from protobench.testing.conformance.metric import METRIC_KEY, MetricTests
from protobench.testing.conformance.sampler import SamplerTests

__all__ = [
    "METRIC_KEY",
    "ConditionerTests",
    "DatasetTests",
    "DenoiserTests",
    "GuidanceTests",
    "LoggerTests",
    "MetricTests",
    "ModuleChecks",
    "PluginTests",
    "SamplerTests",
    "assert_same_conditioning",
    "conditioning_fields",
    "loss_context",
    "one_line_usage_error",
    "overrides",
    "prepare_context",
    "round_trip",
    "run_events",
    "unregistered_tensors",
]
