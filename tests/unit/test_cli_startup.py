"""`protobench --help` and `protobench plugins` answer without importing torch (or DeepSpeed, torch-fidelity,
timm, matplotlib): the command line starts at once, and plugin discovery costs no heavy import. Lazily
registered plugins still resolve to their classes when a run needs them."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("torch", "deepspeed", "torch_fidelity", "timm", "matplotlib", "sklearn", "diffusers")

PROBE = """
import json, sys
from protobench.cli import main
try:
    main(sys.argv[1:], standalone_mode=False)
finally:
    print(json.dumps(sorted(m for m in {heavy!r} if m in sys.modules)), file=sys.stderr)
"""


def heavy_imports(*args: str) -> tuple[list[str], str]:
    """The heavy modules imported by running `protobench ARGS` in a fresh interpreter, and its stdout."""
    proc = subprocess.run([sys.executable, "-c", PROBE.format(heavy=HEAVY), *args], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stderr.strip().splitlines()[-1]), proc.stdout


@pytest.mark.parametrize("args", [["--help"], ["plugins"], ["plugins", "--json"], ["run", "--help"]])
def test_cli_answers_without_heavy_imports(args):
    imported, _ = heavy_imports(*args)
    assert imported == [], f"`protobench {' '.join(args)}` imported {imported}"


def test_plugins_lists_every_builtin_without_torch():
    imported, out = heavy_imports("plugins", "--json")
    listed = json.loads(out)
    assert imported == []
    assert "broken" not in listed
    assert {e["name"] for e in listed["denoiser"]} >= {"unet"}
    assert {e["name"] for e in listed["dataset"]} >= {"digits", "cifar10"}


def test_lazy_entries_resolve_to_their_classes():
    from protobench.interfaces import BASES, KINDS
    from protobench.plugins import KINDS as DISCOVERED_KINDS
    from protobench.plugins import get_registry

    assert DISCOVERED_KINDS == KINDS, "one hook per kind, in the interfaces' order"
    registry = get_registry()
    for kind in KINDS:
        for name in registry.names(kind):
            cls = registry.get(kind, name).cls
            assert issubclass(cls, BASES[kind]) and cls.name == name


def test_lazy_entry_with_a_wrong_name_is_one_clear_error():
    from protobench.errors import PluginError
    from protobench.plugins import Registry

    registry = Registry()
    registry.add("denoiser", "protobench_denoisers.unet:UNet", "mine", "1.0", name="not-unet")
    with pytest.raises(PluginError, match="its `name` is 'unet'"):
        _ = registry.get("denoiser", "not-unet").cls
    registry.add("denoiser", "protobench_denoisers.nowhere:UNet", "mine", "1.0", name="gone")
    with pytest.raises(PluginError, match="does not import"):
        _ = registry.get("denoiser", "gone").cls
