"""The six plugin kinds: one small abstract base class per module."""

from protobench.interfaces.conditioner import (
    NULL_LABEL,
    Conditioner,
    Conditioning,
    ConditionSpec,
    LossContext,
    PrepareContext,
)
from protobench.interfaces.dataset import Dataset, DataSplit
from protobench.interfaces.denoiser import Denoiser
from protobench.interfaces.guidance import ConditionedNet, Guidance
from protobench.interfaces.metric import Metric, Reference
from protobench.interfaces.sampler import EpsFn, Sampler

KINDS = ("dataset", "conditioner", "denoiser", "guidance", "sampler", "metric")
BASES = {
    "dataset": Dataset,
    "conditioner": Conditioner,
    "denoiser": Denoiser,
    "guidance": Guidance,
    "sampler": Sampler,
    "metric": Metric,
}

__all__ = [
    "BASES",
    "KINDS",
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
]
