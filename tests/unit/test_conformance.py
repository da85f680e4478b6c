"""Every built-in plugin passes the conformance classes of protobench.testing, the same ones a third-party
plugin author subclasses. The built-ins are discovered from the registry at collection time, so a newly
registered built-in is covered without editing this file."""

from __future__ import annotations

import importlib.metadata as md
import re

import pytest

from protobench.interfaces import KINDS
from protobench.plugins import CONTEXT_KEYS, ENTRY_POINT_GROUP, get_registry, init_parameters, plugin_options
from protobench.testing import CONFORMANCE

#: small settings for options with these names, applied only where a plugin accepts them
SMALL_OPTIONS = {
    "conditioner": {"stage1_epochs": 1, "stage1_batch_size": 128, "classifier_epochs": 1, "dim": 16},
    "denoiser": {"base_channels": 8, "num_res_blocks": 1},
    "guidance": {"fit_epochs": 2, "fit_draws": 1},
    "metric": {"cas_epochs": 1, "kid_subsets": 10, "kid_subset_size": 50, "isc_splits": 2},
    "dataset": {"n_train": 1000, "n_test": 200},
    "sampler": {},
    "logger": {},
}


def builtin_plugins() -> set[str]:
    """Entry-point names that protobench itself declares (outside packages may be installed too)."""
    return {ep.name for ep in md.distribution("protobench").entry_points if ep.group == ENTRY_POINT_GROUP}


def needs_files(cls: type) -> bool:
    """Datasets read from --data-root: there are no such files on a test machine."""
    param = init_parameters(cls).get("data_root")
    return param is not None and param.default in (None, param.empty)


def _conformance_classes() -> dict[str, type]:
    registry = get_registry()
    builtin = builtin_plugins()
    classes: dict[str, type] = {}
    for kind in KINDS:
        for name in registry.names(kind):
            entry = registry.get(kind, name)
            if entry.plugin not in builtin:
                continue
            known = plugin_options(entry.cls, CONTEXT_KEYS)
            options = {k: v for k, v in SMALL_OPTIONS[kind].items() if k in known}
            attrs = {"plugin_name": name, "options": options, "__module__": __name__}
            if kind == "dataset" and needs_files(entry.cls):
                attrs["pytestmark"] = [pytest.mark.skip(reason=f"dataset {name!r} reads files from --data-root")]
            ident = re.sub(r"\W", "_", name)
            cls_name = f"Test{kind.capitalize()}_{ident}"
            classes[cls_name] = type(cls_name, (CONFORMANCE[kind],), attrs)
    return classes


globals().update(_conformance_classes())


def test_every_kind_has_a_builtin_under_test():
    """The discovery above found built-ins of every kind (an empty registry would test nothing)."""
    tested = {cls.kind for name, cls in globals().items() if name.startswith("Test") and isinstance(cls, type)}
    assert tested == set(KINDS)
