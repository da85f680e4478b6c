"""What every conformance class shares: `PluginTests` (registration, options), the nn.Module checks, and helpers."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
from torch import Tensor, nn

from protobench.errors import UsageError
from protobench.interfaces import BASES, Conditioning, PrepareContext
from protobench.testing.tiny import TinyDataset, context_for


def overrides(cls: type, method: str, base: type) -> bool:
    """Does plugin class `cls` implement `method` itself (rather than inherit the base's no-op)?"""
    return getattr(cls, method) is not getattr(base, method)


def unregistered_tensors(module: nn.Module) -> list[str]:
    """Tensor attributes that are neither parameters nor buffers: `.to(device)` would leave them behind."""
    found = []
    for prefix, sub in module.named_modules():
        for attr, value in vars(sub).items():
            if isinstance(value, Tensor):
                found.append(f"{prefix + '.' if prefix else ''}{attr}")
    return found


def round_trip(module: nn.Module, path: Path) -> dict[str, Tensor]:
    """The state dict as a checkpoint stores it: safetensors, every tensor on the CPU and contiguous."""
    from safetensors.torch import load_file, save_file

    save_file({k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}, str(path))
    return load_file(str(path))


def conditioning_fields(c: Conditioning) -> dict[str, Tensor | None]:
    return {"emb": c.emb, "norm": c.norm, "planes": c.planes}


def assert_same_conditioning(a: Conditioning, b: Conditioning, atol: float = 1e-6) -> None:
    for (field, x), y in zip(conditioning_fields(a).items(), conditioning_fields(b).values(), strict=True):
        assert (x is None) == (y is None), f"conditioning.{field}: present in one output only"
        if x is not None:
            torch.testing.assert_close(x, y, atol=atol, rtol=0, msg=f"conditioning.{field} differs")


def one_line_usage_error(excinfo, *must_mention: str) -> str:
    message = str(excinfo.value)
    assert "\n" not in message.strip(), f"the error must be one line, got:\n{message}"
    for word in must_mention:
        assert word in message, f"the error should mention {word!r}: {message}"
    return message


class PluginTests:
    """What every plugin of every kind satisfies. Subclasses set `kind`; authors set `plugin_name`."""

    kind: ClassVar[str] = ""
    plugin_name: ClassVar[str] = ""
    #: user options (`-o <kind>.<key>=value`) to build the plugin with: keep them small
    options: ClassVar[dict[str, Any]] = {}
    #: the dataset whose subset (`TinyDataset`) gives the context: num_classes, image_shape, data
    dataset: ClassVar[str] = "digits"

    # -- fixtures ----------------------------------------------------------------------------
    @pytest.fixture(scope="class")
    def plugin_registry(self, protobench_registry):
        return protobench_registry

    @pytest.fixture(scope="class")
    def plugin_entry(self, plugin_registry):
        if not self.plugin_name:
            pytest.fail(f"{type(self).__name__} must set `plugin_name` to the {self.kind} it tests")
        return plugin_registry.get(self.kind, self.plugin_name)

    @pytest.fixture(scope="class")
    def plugin_dataset(self, plugin_registry, tiny_dataset):
        if self.dataset == "digits":
            return tiny_dataset
        return TinyDataset(plugin_registry.build("dataset", self.dataset, {}, {}))

    @pytest.fixture(scope="class")
    def plugin_context(self, plugin_dataset):
        return context_for(plugin_dataset)

    def build(self, registry, context: dict[str, Any], seed: int = 0, **extra_options):
        torch.manual_seed(seed)
        return registry.build(self.kind, self.plugin_name, {**self.options, **extra_options}, context)

    # -- the contract ------------------------------------------------------------------------
    def test_registered(self, plugin_entry):
        """Registered under its own `name`, as a subclass of the kind's base class, with a version."""
        assert issubclass(plugin_entry.cls, BASES[self.kind])
        assert plugin_entry.cls.name == self.plugin_name
        assert plugin_entry.plugin and plugin_entry.version

    def test_unknown_option_rejected(self, plugin_registry, plugin_entry, plugin_context):
        """A misspelt option is one line naming it and listing the options that exist, at build and in config."""
        from protobench.config import build_config
        from protobench.plugins import CONTEXT_KEYS, plugin_options

        known = sorted(plugin_options(plugin_entry.cls, CONTEXT_KEYS))
        with pytest.raises(UsageError) as excinfo:
            self.build(plugin_registry, plugin_context, no_such_option=1)
        one_line_usage_error(excinfo, "no_such_option", *known)
        selector = {"metrics": self.plugin_name} if self.kind == "metric" else \
            {"loggers": self.plugin_name} if self.kind == "logger" else {self.kind: self.plugin_name}
        with pytest.raises(UsageError) as excinfo:
            build_config({**selector, f"{self.kind}.no_such_option": "1"}, plugin_registry)
        one_line_usage_error(excinfo, "no_such_option", *known)

    def test_options_are_plain_values(self, plugin_entry):
        """Option defaults are what `-o key=value` and TOML can express (the resolved config is JSON)."""
        from protobench.plugins import CONTEXT_KEYS, plugin_options

        for key, value in plugin_options(plugin_entry.cls, CONTEXT_KEYS).items():
            assert value is None or isinstance(value, (bool, int, float, str, tuple)), (
                f"option {key}: default {value!r} cannot be set from the command line")



class ModuleChecks:
    """Checks shared by the nn.Module kinds (conditioner, denoiser)."""

    def test_tensors_are_registered(self, plugin_registry, plugin_context):
        """Every tensor is a parameter or a buffer, so `.to(device)`, EMA and checkpoints carry it."""
        module = self.build(plugin_registry, plugin_context)
        assert isinstance(module, nn.Module)
        assert unregistered_tensors(module) == [], "register these with register_buffer / nn.Parameter"


def prepare_context(dataset, cache_dir: Path, seed: int = 0, **extra: Any) -> PrepareContext:
    train, test = dataset.load()
    from protobench.interfaces.dataset import content_checksum

    return PrepareContext(train=train, test=test, num_classes=dataset.num_classes,
                          image_shape=tuple(dataset.image_shape), dataset_checksum=content_checksum(train, test),
                          seed=seed, device=torch.device("cpu"), cache_dir=Path(cache_dir), **extra)
