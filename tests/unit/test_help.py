"""`--help` shows the defaults a user gets, and a flag left at its default does not override a TOML file."""

from __future__ import annotations

import re

import pytest
from click.testing import CliRunner

from protobench.cli import SHOWN_DEFAULTS, main
from protobench.config import RunConfig, parse_size
from protobench.plugins import get_registry


@pytest.mark.parametrize("command", ["run", "sweep"])
def test_help_shows_the_default_datasets_budget_and_evaluation_cadence(command):
    result = CliRunner().invoke(main, [command, "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    presets = get_registry().get("dataset", RunConfig().dataset).cls.presets
    for name in SHOWN_DEFAULTS:
        flag = "--" + name.replace("_", "-")
        shown = re.search(rf"^\s*{flag} .*\[default: ([^\]]+)\]", result.output, flags=re.M)
        assert shown, f"{flag} shows no default:\n{result.output}"
        expected = presets.get(name, getattr(RunConfig(), name))
        assert parse_size(shown.group(1)) == expected


class Resolved(Exception):
    pass


def test_a_flag_at_its_default_leaves_the_toml_value(tmp_path, monkeypatch):
    def execute(cfg, *args, **kwargs):
        raise Resolved(cfg)

    monkeypatch.setattr("protobench.launch.execute", execute)
    config = tmp_path / "run.toml"
    config.write_text("budget = 640\neval_every = 320\n")
    result = CliRunner().invoke(main, ["run", "--config", str(config), "--eval-samples", "20"])
    assert isinstance(result.exception, Resolved), result.output
    cfg = result.exception.args[0]
    assert (cfg.budget, cfg.eval_every, cfg.eval_samples) == (640, 320, 20)
