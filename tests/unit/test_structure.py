"""The import graph, read from the sources: no circle among protobench's modules, plugins use only the public
surface (`protobench`, `protobench.kit`), reading results never reaches training, and the core never reaches
into a built-in plugin."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CORE = ROOT / "protobench"
PLUGINS = ROOT / "plugins"

#: what a plugin may import from protobench: the package (interfaces, hookimpl, UsageError) and the kit
PUBLIC = ("protobench", "protobench.kit", "protobench.testing")
#: the modules that run training (and import torch): reading results never reaches them (every module of
#: protobench.training, and these outside it)
TRAINING = ("protobench.training", "protobench.rank", "protobench.data_parallel", "protobench.worker",
            "protobench.diffusion", "protobench.plot_samples")
#: the modules that read results: run folders, events, records, the index, the report, the curves, status
RESULTS = ("protobench.report", "protobench.records", "protobench.store", "protobench.plots", "protobench.units",
           "protobench.runfolder", "protobench.events", "protobench.status")


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = rel.parts[1:] if rel.parts[0] == "plugins" else rel.parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _sources() -> dict[str, Path]:
    files = list(CORE.rglob("*.py")) + list(PLUGINS.rglob("*.py"))
    return {_module_name(p): p for p in files}


def imports_of(path: Path, known: frozenset[str] | set[str] = frozenset()) -> set[str]:
    """Every module imported anywhere in the file (top level and inside functions), absolute names.
    `from pkg import name` is the module pkg.name when that is one of `known`, else pkg."""
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
            for alias in node.names:
                full = f"{base}.{alias.name}"
                found.add(full if full in known else base)
    return found


def graph(sources: dict[str, Path]) -> dict[str, set[str]]:
    """module -> the local modules it imports."""
    known = set(sources)
    return {m: {n for n in imports_of(p, known) if n in known and n != m} for m, p in sources.items()}


def circles(edges: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(component)
    return found


def reachable(start: str, edges: dict[str, set[str]]) -> dict[str, str]:
    """Local modules reachable from `start` by imports: {module: the module that imported it}."""
    seen = {start: ""}
    todo = [start]
    while todo:
        here = todo.pop()
        for name in edges[here]:
            if name not in seen:
                seen[name] = here
                todo.append(name)
    return seen


def _chain(seen: dict[str, str], end: str) -> str:
    chain = [end]
    while seen[chain[-1]]:
        chain.append(seen[chain[-1]])
    return " <- ".join(chain)


def test_the_import_reader_sees_function_level_relative_and_module_imports(tmp_path):
    global ROOT
    old, ROOT = ROOT, tmp_path
    try:
        pkg = tmp_path / "protobench"
        pkg.mkdir()
        f = pkg / "x.py"
        f.write_text("def g():\n    from protobench.engine import Run\nfrom . import io\nfrom protobench import kit\n")
        assert {"protobench.engine", "protobench.io", "protobench.kit"} <= imports_of(f, {"protobench.io", "protobench.kit"})
        assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]
    finally:
        ROOT = old


def test_no_import_circle_among_protobench_modules():
    edges = {m: deps for m, deps in graph(_sources()).items() if m.startswith("protobench.") or m == "protobench"}
    found = [sorted(c) for c in circles(edges)]
    assert not found, f"import circles: {found}"


def test_nothing_below_the_command_line_imports_it():
    """The CLI calls down (launch, sweep, status, evaluation); nothing calls back up into it."""
    known = set(_sources())
    allowed = ("protobench.cli", "protobench.__main__", "protobench.testing")
    offenders = []
    for path in sorted(CORE.rglob("*.py")) + sorted(PLUGINS.rglob("*.py")):
        module = _module_name(path)
        if module.startswith(allowed):
            continue
        for name in imports_of(path, known):
            if name == "protobench.cli" or name.startswith("protobench.cli."):
                offenders.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not offenders, "\n".join(offenders)


def test_plugins_import_only_the_public_surface():
    offenders = []
    for path in sorted(PLUGINS.rglob("*.py")):
        for name in imports_of(path):
            if name.split(".")[0] == "protobench" and name not in PUBLIC and not name.startswith("protobench.testing."):
                offenders.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not offenders, "use protobench or protobench.kit:\n" + "\n".join(offenders)


def test_reading_results_never_reaches_training():
    edges = graph(_sources())
    for module in RESULTS:
        seen = reachable(module, edges)
        for training in sorted(m for m in seen if m in TRAINING or m.startswith("protobench.training.")):
            raise AssertionError(_chain(seen, training))
    # the commands start no run themselves (run and sweep go through launch.execute)
    for command in ("protobench.cli.run", "protobench.cli.sweep", "protobench.cli.results"):
        assert "protobench.training.run" not in edges[command], command


def test_engine_and_launcher_import_each_other_in_one_direction_only():
    """A run does not know how it was launched: the training package reaches no launching module."""
    reached = reachable("protobench.training.run", graph(_sources()))
    for launcher in ("protobench.launch", "protobench.worker", "protobench.sweep_runner", "protobench.slurm",
                     "protobench.slurm_sweep", "protobench.pool"):
        assert launcher not in reached, launcher


def test_core_does_not_import_builtin_plugins():
    plugin_packages = {p.name for p in PLUGINS.iterdir() if (p / "__init__.py").exists()}
    assert plugin_packages, "no built-in plugin packages found"
    offenders = []
    for path in sorted(CORE.rglob("*.py")):
        for name in imports_of(path):
            if name.split(".")[0] in plugin_packages:
                offenders.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not offenders, "\n".join(offenders)


def test_every_cache_goes_through_the_one_cache_helper():
    """Stage I, the evaluator, the real features and the aux classifier: one integrity scheme (kit.cache)."""
    sources = _sources()
    for module in ("protobench_conditioners.stage1", "protobench_metrics.evaluator", "protobench_metrics.extractors",
                   "protobench_conditioners.aux_classifier"):
        tree = ast.parse(sources[module].read_text())
        names = {(n.module, a.name) for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
        assert ("protobench.kit", "cache") in names, module
        assert ("safetensors.torch", "save_file") not in names, f"{module} writes cache files itself"


def test_the_kit_exports_what_it_documents_without_torch():
    import subprocess
    import sys

    code = ("import sys, protobench.kit as kit; before = 'torch' in sys.modules; "
            "[getattr(kit, n) for n in kit.__all__]; print(before, sorted(kit.__all__) == sorted(dir(kit)))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["False", "True"], done.stderr
    doc = (ROOT / "docs" / "writing-plugins.md").read_text()
    import protobench.kit as kit

    missing = [n for n in kit.__all__ if f"`{n}" not in doc]
    assert not missing, f"docs/writing-plugins.md does not document protobench.kit's {missing}"
