"""Plugin manager and registry: built-ins and third-party plugins arrive through one entry-point group."""

from __future__ import annotations

import importlib
import importlib.metadata as md
import inspect
import os
import sys
from dataclasses import dataclass, field
from typing import Any

import pluggy

from protobench import hookspecs
from protobench.errors import PluginError, UsageError
from protobench.vocabulary import KINDS

ENTRY_POINT_GROUP = "protobench"


@dataclass(frozen=True)
class Registered:
    kind: str
    name: str
    target: Any  # the class, or "module:qualname" registered with its name, imported on first use
    plugin: str  # entry-point name of the plugin that registered it
    version: str
    #: class attributes a lazy registration states up front (a metric's `higher_is_better`), so that reading
    #: results knows them without importing the class (and torch); checked against the class once imported
    declared: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def cls(self) -> type:
        if isinstance(self.target, str):
            module, _, qualname = self.target.partition(":")
            try:
                obj: Any = importlib.import_module(module)
                for part in qualname.split("."):
                    obj = getattr(obj, part)
            except Exception as exc:
                raise PluginError(f"plugin {self.plugin!r} registered {self.kind} {self.name!r} as {self.target!r}, "
                                  f"which does not import: {type(exc).__name__}: {exc}") from exc
            check_class(self.kind, obj, self.plugin)
            if obj.name != self.name:
                raise PluginError(f"plugin {self.plugin!r} registered {self.target!r} as {self.name!r}, "
                                  f"but its `name` is {obj.name!r}")
            for attr, value in self.declared.items():
                if getattr(obj, attr, None) != value:
                    raise PluginError(f"plugin {self.plugin!r} registered {self.kind} {self.name!r} with {attr}="
                                      f"{value!r}, but {self.target} has {attr}={getattr(obj, attr, None)!r}")
            object.__setattr__(self, "target", obj)
        return self.target

    def attribute(self, attr: str, default: Any = None) -> Any:
        """A class attribute, from the registration when it was declared there (no import), else the class."""
        if isinstance(self.target, str) and attr in self.declared:
            return self.declared[attr]
        return getattr(self.cls, attr, default)

    def where(self) -> str:
        return self.target if isinstance(self.target, str) else f"{self.target.__module__}.{self.target.__name__}"


def check_class(kind: str, cls: Any, plugin: str) -> str:
    """The `name` of a plugin class, after checking that it is one of `kind`'s plugin classes."""
    from protobench.interfaces import BASES

    base = BASES[kind]
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise PluginError(f"plugin {plugin!r} registered {cls!r} as a {kind}, but it is not a subclass of {base.__name__}")
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise PluginError(f"plugin {plugin!r} registered a {kind} class {cls.__name__} without a `name`")
    return name


@dataclass
class Registry:
    entries: dict[str, dict[str, Registered]] = field(default_factory=lambda: {k: {} for k in KINDS})
    #: plugins that failed to import or to register: name -> error line
    broken: dict[str, str] = field(default_factory=dict)
    #: loaded plugins: name -> version
    loaded: dict[str, str] = field(default_factory=dict)
    #: click commands added by plugins (`register_commands`): (plugin name, command)
    commands: list[tuple[str, Any]] = field(default_factory=list)

    def add(self, kind: str, cls: type | str, plugin: str, version: str, name: str | None = None,
            **declared: Any) -> None:
        """`cls` is a plugin class, or "module:qualname" with its `name` (and any class attributes the
        reading side needs, `declared`), so listing plugins and reading results import nothing."""
        if isinstance(cls, str):
            if not name or ":" not in cls:
                raise PluginError(f"plugin {plugin!r} registered {cls!r}: a lazy {kind} is "
                                  f"register('module:ClassName', name='its-name')")
        else:
            name = check_class(kind, cls, plugin)
        existing = self.entries[kind].get(name)
        if existing is not None:
            raise PluginError(
                f"{kind} {name!r} is registered twice: by plugin {existing.plugin!r} ({existing.where()}) and by "
                f"plugin {plugin!r} ({Registered(kind, name, cls, plugin, version).where()}); "
                f"uninstall one or set PROTOBENCH_DISABLE_PLUGINS={plugin}"
            )
        self.entries[kind][name] = Registered(kind, name, cls, plugin, version, declared)

    def names(self, kind: str) -> list[str]:
        return sorted(self.entries[kind])

    def get(self, kind: str, name: str) -> Registered:
        try:
            return self.entries[kind][name]
        except KeyError:
            known = ", ".join(self.names(kind)) or "(none)"
            raise UsageError(f"unknown {kind} {name!r}; known {kind}s: {known}") from None

    def build(self, kind: str, name: str, options: dict[str, Any], context: dict[str, Any]) -> Any:
        """Construct plugin `name` from the user's `options` plus whatever `context` its __init__ accepts."""
        cls = self.get(kind, name).cls
        check_options(kind, name, cls, options, context)
        accepted = init_parameters(cls)
        takes_kwargs = any(p.kind is p.VAR_KEYWORD for p in _signature(cls).parameters.values())
        kwargs = {k: v for k, v in context.items() if k in accepted or takes_kwargs}
        kwargs.update(options)
        try:
            return cls(**kwargs)
        except (TypeError, ValueError) as exc:
            raise UsageError(f"{kind} {name!r}: {exc}") from exc


def _signature(cls: type) -> inspect.Signature:
    """The constructor signature a plugin author wrote (none if __init__ is object's or nn.Module's)."""
    import torch.nn as nn

    for klass in cls.__mro__:
        if "__init__" in vars(klass):
            if klass in (object, nn.Module):
                return inspect.Signature()
            return inspect.signature(klass.__init__)
    return inspect.Signature()


def init_parameters(cls: type) -> dict[str, inspect.Parameter]:
    params = _signature(cls).parameters
    return {k: p for k, p in params.items() if k != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}


def plugin_options(cls: type, context_keys=()) -> dict[str, Any]:
    """The user-settable options of a plugin class: its keyword parameters with defaults, minus context."""
    return {
        k: p.default
        for k, p in init_parameters(cls).items()
        if k not in context_keys and p.default is not inspect.Parameter.empty
    }


def option_annotations(cls: type, context_keys=()) -> dict[str, Any]:
    """The type annotation of each option of a plugin class, resolved (None where it has none, or names
    something that does not resolve): what `-o` values and TOML values are coerced to (config.coerce)."""
    klass = next((k for k in cls.__mro__ if "__init__" in vars(k)), object)
    namespace = getattr(vars(klass)["__init__"], "__globals__", {}) if klass is not object else {}
    found: dict[str, Any] = {}
    for k, p in init_parameters(cls).items():
        if k in context_keys or p.default is inspect.Parameter.empty:
            continue
        annotation = None if p.annotation is inspect.Parameter.empty else p.annotation
        if isinstance(annotation, str):  # `from __future__ import annotations`: resolved as typing does
            try:
                annotation = eval(annotation, dict(namespace))  # the plugin's own source text
            except Exception:
                annotation = None
        found[k] = annotation
    return found


CONTEXT_KEYS = ("num_classes", "image_shape", "cond", "data_root", "class_names", "run_dir", "run_id", "run_config")


def check_options(kind: str, name: str, cls: type, options: dict[str, Any], context: dict[str, Any]) -> None:
    known = plugin_options(cls, CONTEXT_KEYS)
    for key in options:
        if key not in known:
            listed = ", ".join(sorted(known)) or "(none)"
            raise UsageError(f"unknown option {kind}.{key} for {kind} {name!r}; known options: {listed}")


def _enabled(name: str) -> bool:
    allow = os.environ.get("PROTOBENCH_LOAD_PLUGINS")
    if allow is not None and name not in {n.strip() for n in allow.split(",") if n.strip()}:
        return False
    deny = {n.strip() for n in os.environ.get("PROTOBENCH_DISABLE_PLUGINS", "").split(",") if n.strip()}
    return name not in deny


def _trace(msg: str) -> None:
    if os.environ.get("PROTOBENCH_TRACE_PLUGINS"):
        print(f"[protobench plugins] {msg}", file=sys.stderr)


def make_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager("protobench")
    pm.add_hookspecs(hookspecs)
    return pm


def load_registry(extra_plugins: dict[str, object] | None = None) -> Registry:
    """Load every enabled entry point of the `protobench` group (and `extra_plugins`, used by tests)."""
    registry = Registry()
    pm = make_manager()
    candidates: list[tuple[str, str, Any]] = []
    for ep in sorted(md.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        if not _enabled(ep.name):
            _trace(f"skipped {ep.name} (PROTOBENCH_LOAD_PLUGINS / PROTOBENCH_DISABLE_PLUGINS)")
            continue
        version = ep.dist.version if ep.dist is not None else "unknown"
        try:
            module = ep.load()
        except Exception as exc:  # a broken plugin must not take the others down
            registry.broken[ep.name] = f"{type(exc).__name__}: {exc}"
            _trace(f"failed to import {ep.name} ({ep.value}): {exc}")
            continue
        candidates.append((ep.name, version, module))
    for name, module in (extra_plugins or {}).items():
        candidates.append((name, "local", module))
    known_hooks = sorted([*(f"register_{kind}s" for kind in KINDS), *hookspecs.NOT_KINDS])
    for name, version, module in candidates:
        # a misspelt hook would otherwise be silently ignored and the plugin would register nothing
        unknown = [a for a in dir(module) if hasattr(getattr(module, a, None), "protobench_impl") and a not in known_hooks]
        if unknown:
            registry.broken[name] = f"unknown hook {unknown[0]}; known hooks: {', '.join(known_hooks)}"
            _trace(f"not loaded {name}: {registry.broken[name]}")
            continue
        pm.register(module, name=name)
        registry.loaded[name] = version
        _trace(f"loaded {name} {version}")
    for kind in KINDS:
        hook = getattr(pm.hook, f"register_{kind}s")
        for impl in hook.get_hookimpls():
            plugin_name = impl.plugin_name
            version = registry.loaded.get(plugin_name, "unknown")

            def register(cls, name=None, _kind=kind, _plugin=plugin_name, _version=version, **declared):
                registry.add(_kind, cls, _plugin, _version, name=name, **declared)

            try:
                impl.function(register=register)
            except PluginError:
                raise
            except Exception as exc:
                registry.broken[plugin_name] = f"{type(exc).__name__}: {exc}"
                _trace(f"{plugin_name}.register_{kind}s failed: {exc}")
    _register_commands(pm, registry)
    return registry


def _register_commands(pm: pluggy.PluginManager, registry: Registry) -> None:
    """Collect the click commands plugins add through `register_commands`; a plugin whose hook fails, or that
    passes something other than a click command, is listed as broken."""
    import click

    for impl in pm.hook.register_commands.get_hookimpls():
        added: list[tuple[str, Any]] = []

        def register(command, _plugin=impl.plugin_name, _added=added):
            if not isinstance(command, click.Command) or not command.name:
                raise PluginError(f"plugin {_plugin!r} registered {command!r}: register_commands takes a named "
                                  f"click command")
            _added.append((_plugin, command))

        try:
            impl.function(register=register)
        except Exception as exc:
            registry.broken[impl.plugin_name] = f"{type(exc).__name__}: {exc}"
            _trace(f"{impl.plugin_name}.register_commands failed: {exc}")
            continue
        registry.commands.extend(added)


_REGISTRY: Registry | None = None


def get_registry(refresh: bool = False) -> Registry:
    global _REGISTRY
    if _REGISTRY is None or refresh:
        _REGISTRY = load_registry()
    return _REGISTRY
