"""The benchmarks keep up with the code they measure: every name a benchmark script imports from protobench
(at its top or inside a function) exists, so a refactor that moves one fails here, not when someone next runs
the benchmark. The benchmarks themselves are run by hand (benchmarks/README.md), never by the tests."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def protobench_imports(path: Path) -> list[tuple[str, str | None]]:
    """(module, name) for each `from protobench... import name`, and (module, None) for each `import
    protobench...`, in the file, wherever it is."""
    found: list[tuple[str, str | None]] = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module \
                and node.module.split(".")[0] == "protobench":
            found.extend((node.module, alias.name) for alias in node.names)
        elif isinstance(node, ast.Import):
            found.extend((alias.name, None) for alias in node.names if alias.name.split(".")[0] == "protobench")
    return found


@pytest.mark.parametrize("script", sorted(BENCHMARKS.glob("*.py")), ids=lambda p: p.name)
def test_every_name_a_benchmark_imports_from_protobench_exists(script):
    imports = protobench_imports(script)
    missing = []
    for module, name in imports:
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError:
            missing.append(module)
            continue
        if name is not None and not hasattr(mod, name):
            try:
                importlib.import_module(f"{module}.{name}")  # a submodule
            except ModuleNotFoundError:
                missing.append(f"{module}.{name}")
    assert not missing, f"{script.name} imports names protobench no longer has: {missing}"


def test_the_check_sees_imports_inside_functions(tmp_path):
    script = tmp_path / "b.py"
    script.write_text("def main():\n    from protobench.records import no_such_name\n    import protobench.engine\n")
    assert sorted(protobench_imports(script), key=str) == [("protobench.engine", None),
                                                           ("protobench.records", "no_such_name")]
