"""The plugin registry as a plugin author and a user meet it: real distributions with real entry points
(a dist-info folder on sys.path / PYTHONPATH), the real `protobench` command line."""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner

import protobench.plugins as plugins_module
from protobench.cli import main
from protobench.errors import PluginError, UsageError
from protobench.plugins import get_registry, load_registry

CONDITIONER_SOURCE = '''
from protobench import hookimpl, Conditioner, ConditionSpec, Conditioning


class {cls}(Conditioner):
    name = "{name}"

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.spec = ConditionSpec()

    def forward(self, labels):
        return Conditioning()


@hookimpl
def register_conditioners(register):
    register({cls})
'''


def make_distribution(root: Path, dist: str, version: str, modules: dict[str, str]) -> dict[str, str]:
    """Write `modules` and a dist-info declaring each as a `protobench` entry point of the same name.

    Module names are made unique per test (sys.modules outlives a test); returns entry-point name -> module."""
    root.mkdir(parents=True, exist_ok=True)
    suffix = uuid.uuid4().hex[:8]
    names = {}
    for ep_name, source in modules.items():
        module = f"{ep_name.replace('-', '_')}_{suffix}"
        (root / f"{module}.py").write_text(textwrap.dedent(source))
        names[ep_name] = module
    info = root / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(
        "[protobench]\n" + "".join(f"{ep} = {module}\n" for ep, module in names.items()))
    return names


@pytest.fixture
def site(tmp_path, monkeypatch):
    """A folder on sys.path for fake-but-real distributions, and a registry reloaded for the test."""
    root = tmp_path / "site"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.setattr(plugins_module, "_REGISTRY", None)
    for var in ("PROTOBENCH_LOAD_PLUGINS", "PROTOBENCH_DISABLE_PLUGINS", "PROTOBENCH_TRACE_PLUGINS"):
        monkeypatch.delenv(var, raising=False)
    return root


def cli(*args: str):
    return CliRunner().invoke(main, list(args))


def one_error_line(result) -> str:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


# -- names --------------------------------------------------------------------------------------


def test_duplicate_name_is_an_error_naming_both_plugins(site, monkeypatch):
    make_distribution(site, "protobench-dupe", "0.3", {"dupe": CONDITIONER_SOURCE.format(cls="Dupe", name="random")})
    line = one_error_line(cli("plugins"))
    assert "conditioner 'random' is registered twice" in line
    assert "plugin 'conditioners'" in line and "plugin 'dupe'" in line
    # the way out the message gives works
    monkeypatch.setenv("PROTOBENCH_DISABLE_PLUGINS", "dupe")
    monkeypatch.setattr(plugins_module, "_REGISTRY", None)
    assert cli("plugins", "--json").exit_code == 0


def test_unknown_plugin_name_exits_2_listing_the_known_names():
    line = one_error_line(cli("run", "--conditioner", "nope"))
    assert "unknown conditioner 'nope'" in line
    for name in get_registry().names("conditioner"):
        assert name in line
    line = one_error_line(cli("run", "--metric", "fid", "--metric", "nope-metric"))
    assert "unknown metric 'nope-metric'" in line and "fid" in line


def test_bad_config_key_or_option_exits_2_listing_the_known_ones():
    line = one_error_line(cli("run", "-o", "learning_rate=1e-4"))
    assert "unknown config key 'learning_rate'" in line
    for key in ("batch_size", "lr", "budget", "label_dropout", "conditioner.<option>"):
        assert key in line
    line = one_error_line(cli("run", "--conditioner", "random", "-o", "conditioner.dimension=64"))
    assert "conditioner.dimension" in line and "dim" in line and "null" in line
    line = one_error_line(cli("run", "-o", "lr=fast"))
    assert "bad value for lr" in line


def test_a_plugin_class_is_checked_when_registered():
    class NotAConditioner:
        name = "x"

    class Plugin:
        @staticmethod
        @plugins_module.hookspecs.hookimpl
        def register_conditioners(register):
            register(NotAConditioner)

    with pytest.raises(PluginError, match="plugin 'odd' registered .*NotAConditioner.* not a subclass of Conditioner"):
        load_registry(extra_plugins={"odd": Plugin})


# -- broken plugins -----------------------------------------------------------------------------


def test_a_plugin_failing_to_import_is_listed_broken_and_the_rest_work(tmp_path):
    """In a real process: PYTHONPATH holds a distribution with one broken and one working entry point."""
    root = tmp_path / "site"
    names = make_distribution(root, "protobench-mixed", "1.2", {
        "brokenplug": "raise RuntimeError('libfoo is missing')\n",
        "goodplug": CONDITIONER_SOURCE.format(cls="Good", name="good-one"),
    })
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
           "PROTOBENCH_TRACE_PLUGINS": "1"}
    env.pop("PROTOBENCH_LOAD_PLUGINS", None)
    env.pop("PROTOBENCH_DISABLE_PLUGINS", None)
    proc = subprocess.run(["protobench", "plugins", "--json"], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    listed = json.loads(proc.stdout)
    assert {"plugin": "brokenplug", "error": "RuntimeError: libfoo is missing"} in listed["broken"]
    assert {"name": "good-one", "plugin": "goodplug", "version": "1.2"} in listed["conditioner"]
    assert {"name": "digits", "plugin": "datasets", "version": listed["dataset"][0]["version"]} in listed["dataset"]
    assert "random" in {e["name"] for e in listed["conditioner"]}
    # PROTOBENCH_TRACE_PLUGINS: one stderr line per plugin, naming the failure with its entry point
    assert f"[protobench plugins] failed to import brokenplug ({names['brokenplug']}): libfoo is missing" in proc.stderr
    assert "[protobench plugins] loaded goodplug 1.2" in proc.stderr


def test_human_listing_shows_broken_plugins(site):
    make_distribution(site, "protobench-broken", "0.1", {"halfway": "import no_such_module_here\n"})
    result = cli("plugins")
    assert result.exit_code == 0
    text = " ".join(result.stderr.split())  # rich wraps long lines
    assert "broken plugin halfway: ModuleNotFoundError: No module named 'no_such_module_here'" in text
    assert "digits" in text and "random" in text


def test_a_plugin_whose_hook_raises_is_broken_and_the_rest_work(site):
    source = '''
    from protobench import hookimpl

    @hookimpl
    def register_metrics(register):
        raise ValueError("needs a licence file")
    '''
    make_distribution(site, "protobench-raises", "0.1", {"raiser": source})
    registry = get_registry()
    assert registry.broken["raiser"] == "ValueError: needs a licence file"
    assert "fid" in registry.names("metric") and "unet" in registry.names("denoiser")


def test_a_misspelt_hook_is_reported_not_ignored(site):
    source = '''
    from protobench import hookimpl

    @hookimpl
    def register_conditioner(register):
        pass
    '''
    make_distribution(site, "protobench-typo", "0.1", {"typo": source})
    error = get_registry().broken["typo"]
    assert error.startswith("unknown hook register_conditioner; known hooks:") and "register_conditioners" in error


# -- environment variables ----------------------------------------------------------------------


def test_load_plugins_is_an_allow_list(site, monkeypatch):
    make_distribution(site, "protobench-extra", "0.1", {"extra": CONDITIONER_SOURCE.format(cls="Extra", name="extra")})
    monkeypatch.setenv("PROTOBENCH_LOAD_PLUGINS", "datasets, conditioners")
    registry = load_registry()
    assert set(registry.loaded) == {"datasets", "conditioners"}
    assert registry.names("denoiser") == [] and "extra" not in registry.names("conditioner")
    assert "random" in registry.names("conditioner")
    line = one_error_line(cli("run"))
    assert line == "error: unknown denoiser 'unet'; known denoisers: (none)"


def test_disable_plugins_skips_them_broken_ones_included(site, monkeypatch):
    make_distribution(site, "protobench-broken", "0.1", {"broken": "raise ImportError('nope')\n"})
    assert "broken" in load_registry().broken
    monkeypatch.setenv("PROTOBENCH_DISABLE_PLUGINS", "broken,samplers")
    registry = load_registry()
    assert "broken" not in registry.broken
    assert registry.names("sampler") == [] and "unet" in registry.names("denoiser")
    with pytest.raises(UsageError, match="unknown sampler 'ddim'; known samplers: \\(none\\)"):
        registry.get("sampler", "ddim")


def test_trace_plugins_says_what_was_loaded_and_skipped(site, monkeypatch, capsys):
    monkeypatch.setenv("PROTOBENCH_TRACE_PLUGINS", "1")
    monkeypatch.setenv("PROTOBENCH_DISABLE_PLUGINS", "metrics")
    load_registry()
    err = capsys.readouterr().err
    assert "[protobench plugins] skipped metrics" in err
    assert "[protobench plugins] loaded conditioners" in err
    monkeypatch.delenv("PROTOBENCH_TRACE_PLUGINS")
    load_registry()
    assert capsys.readouterr().err == ""


# -- commands -----------------------------------------------------------------------------------

COMMAND_SOURCE = '''
import click
from protobench import hookimpl


@click.command(name="{name}")
@click.argument("who")
def hello(who):
    """Say hello from a plugin."""
    click.echo(f"hello {{who}} from {name}")


@hookimpl
def register_commands(register):
    register(hello)
'''


def test_a_plugin_adds_a_command_that_runs_and_is_listed(site):
    make_distribution(site, "protobench-hello", "0.1", {"hello": COMMAND_SOURCE.format(name="hello")})
    result = cli("hello", "world")
    assert result.exit_code == 0 and result.stdout == "hello world from hello\n", result.output
    assert "hello" in cli("--help").stdout
    listed = json.loads(cli("plugins", "--json").stdout)
    assert listed["commands"] == [{"name": "hello", "plugin": "hello"}]


def test_a_plugin_command_cannot_shadow_a_builtin_one(site):
    make_distribution(site, "protobench-shadow", "0.1", {"shadow": COMMAND_SOURCE.format(name="report")})
    listed = json.loads(cli("plugins", "--json").stdout)
    assert {"plugin": "shadow", "error": "command 'report' is already taken; not added"} in listed["broken"]
    assert "commands" not in listed
    assert cli("report", "--help").stdout.startswith("Usage: main report [OPTIONS]")  # still protobench's own


def test_registering_something_that_is_not_a_command_makes_the_plugin_broken(site):
    source = '''
    from protobench import hookimpl

    @hookimpl
    def register_commands(register):
        register(print)
    '''
    make_distribution(site, "protobench-notcmd", "0.1", {"notcmd": source})
    error = get_registry().broken["notcmd"]
    assert error.startswith("PluginError: plugin 'notcmd' registered <built-in function print>"), error
