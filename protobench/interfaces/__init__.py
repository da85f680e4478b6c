"""The plugin kinds: one small abstract base class per module."""

# ruff: noqa: F401 - a re-export module: the names are listed once, in protobench.vocabulary.INTERFACES
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
from protobench.interfaces.logger import Logger
from protobench.interfaces.metric import Metric, Reference
from protobench.interfaces.sampler import EpsFn, Sampler
from protobench.vocabulary import INTERFACES, KINDS

BASES = {
    "dataset": Dataset,
    "conditioner": Conditioner,
    "denoiser": Denoiser,
    "guidance": Guidance,
    "sampler": Sampler,
    "metric": Metric,
    "logger": Logger,
}

# the names the package re-exports (vocabulary.INTERFACES, the one list) and the kinds
__all__ = ["BASES", "KINDS", *INTERFACES]
