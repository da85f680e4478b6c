"""protobench: benchmark ways of conditioning class-conditional diffusion models.

A plugin author's whole import surface is this module.
"""

from protobench.errors import UsageError
from protobench.hookspecs import hookimpl
from protobench.interfaces import (
    NULL_LABEL,
    ConditionedNet,
    Conditioner,
    Conditioning,
    ConditionSpec,
    Dataset,
    DataSplit,
    Denoiser,
    EpsFn,
    Guidance,
    LossContext,
    Metric,
    PrepareContext,
    Reference,
    Sampler,
)

__version__ = "0.1.0"

__all__ = [
    "NULL_LABEL",
    "ConditionSpec",
    "ConditionedNet",
    "Conditioner",
    "Conditioning",
    "DataSplit",
    "Dataset",
    "Denoiser",
    "EpsFn",
    "Guidance",
    "LossContext",
    "Metric",
    "PrepareContext",
    "Reference",
    "Sampler",
    "UsageError",
    "__version__",
    "hookimpl",
]
