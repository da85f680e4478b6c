"""The import graph: records are read without the training loop, and the core never reaches into a built-in plugin."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORE = ROOT / "protobench"
PLUGINS = ROOT / "plugins"

#: back-edges issue 14 names that are still being removed; each must still exist (so the list shrinks to empty)
PENDING = {
}


def _pending(here: str, name: str) -> bool:
    return any(here == h and (name == n or name.startswith(n + ".")) for h, n in PENDING)


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = rel.parts[1:] if rel.parts[0] == "plugins" else rel.parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _sources() -> dict[str, Path]:
    files = list(CORE.rglob("*.py")) + list(PLUGINS.rglob("*.py"))
    return {_module_name(p): p for p in files}


def imports_of(path: Path) -> set[str]:
    """Every module imported anywhere in the file (top level and inside functions), absolute names."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)  # `from pkg import module`
    return found


def reachable(start: str, sources: dict[str, Path]) -> dict[str, str]:
    """Local modules reachable from `start` by imports: {module: the module that imported it}."""
    seen = {start: ""}
    todo = [start]
    while todo:
        here = todo.pop()
        for name in imports_of(sources[here]):
            if _pending(here, name):
                continue
            if name in sources and name not in seen:
                seen[name] = here
                todo.append(name)
    return seen


def _chain(seen: dict[str, str], end: str) -> str:
    chain = [end]
    while seen[chain[-1]]:
        chain.append(seen[chain[-1]])
    return " <- ".join(chain)


def test_the_import_reader_sees_function_level_and_relative_imports(tmp_path):
    pkg = tmp_path / "protobench"
    pkg.mkdir()
    f = pkg / "x.py"
    f.write_text("def g():\n    from protobench.engine import Run\nfrom . import io\n")
    global ROOT
    old, ROOT = ROOT, tmp_path
    try:
        assert {"protobench.engine", "protobench.io"} <= imports_of(f)
    finally:
        ROOT = old


def test_results_modules_do_not_import_the_training_loop():
    sources = _sources()
    for module in ("protobench.report", "protobench.store", "protobench.plots", "protobench.records",
                   "protobench.generation", "protobench.checkpoints"):
        seen = reachable(module, sources)
        assert "protobench.engine" not in seen, _chain(seen, "protobench.engine")
    # the results commands import the CLI module (which can start runs), but not the loop themselves
    assert not any(n.startswith("protobench.engine") and not _pending("protobench.cli_results", n)
                   for n in imports_of(sources["protobench.cli_results"]))


def test_engine_and_launcher_import_each_other_in_one_direction_only():
    sources = _sources()
    assert "protobench.distributed" not in reachable("protobench.engine", sources)


def test_core_does_not_import_builtin_plugins():
    plugin_packages = {p.name for p in PLUGINS.iterdir() if (p / "__init__.py").exists()}
    assert plugin_packages, "no built-in plugin packages found"
    offenders = []
    for path in sorted(CORE.rglob("*.py")):
        for name in imports_of(path):
            if name.split(".")[0] in plugin_packages and not _pending(_module_name(path), name):
                offenders.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not offenders, "\n".join(offenders)


def test_pending_back_edges_still_exist():
    """When a pending back-edge is removed, drop it from PENDING so that it cannot come back."""
    sources = _sources()
    for here, name in PENDING:
        assert name in imports_of(sources[here]), f"{here} no longer imports {name}: remove it from PENDING"


def test_every_cache_goes_through_the_one_cache_helper():
    """Stage I, the evaluator, the real features and the aux classifier: one integrity scheme (protobench.cache)."""
    sources = _sources()
    for module in ("protobench_conditioners.stage1", "protobench_metrics.evaluator", "protobench_metrics.extractors",
                   "protobench_conditioners.aux_classifier"):
        names = imports_of(sources[module])
        assert any(n == "protobench.cache" or n.startswith("protobench.cache.") for n in names), module
        assert "safetensors.torch.save_file" not in names, f"{module} writes cache files itself"
