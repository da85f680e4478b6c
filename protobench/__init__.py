"""protobench: benchmark ways of conditioning class-conditional diffusion models.

A plugin author's whole import surface is this module and `protobench.kit` (what the built-ins use from the core).
"""

from protobench.errors import UsageError as UsageError
from protobench.hookspecs import hookimpl as hookimpl

# the plugin interfaces are torch modules: imported on first use, so that `protobench --help` and plugin
# discovery start without torch (PEP 562); the one list of their names lives in protobench.vocabulary
from protobench.vocabulary import INTERFACES as _INTERFACES


def __getattr__(name: str):
    if name in _INTERFACES:
        from protobench import interfaces

        value = getattr(interfaces, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'protobench' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)


__version__ = "0.1.0"

__all__ = sorted([*_INTERFACES, "UsageError", "__version__", "hookimpl"])
