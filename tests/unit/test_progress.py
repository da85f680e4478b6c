"""The one progress display: a named stage with done/total, a rate and an ETA, visible from its start."""

from __future__ import annotations

import io
import time

from rich.console import Console

from protobench.progress import make_progress, stage


def _render(progress) -> str:
    console = Console(file=io.StringIO(), width=160, color_system=None)
    console.print(progress.get_renderable())
    return console.file.getvalue()


def test_a_stage_shows_its_name_counts_rate_and_eta():
    progress = make_progress("steps")
    task = progress.add_task("training the digits evaluator", total=40)
    before = _render(progress)
    assert "training the digits evaluator" in before and "0/40" in before and "steps" in before
    assert "ETA" in before and "steps/s" in before  # a rate column from the first frame, not a bare 0/1
    for _ in range(4):
        time.sleep(0.01)
        progress.update(task, advance=1)
    after = _render(progress)
    assert "4/40" in after and "steps/s" in after


def test_a_hidden_stage_is_a_no_op(capsys):
    with stage("Stage I: prototypes", total=3, show=False) as bar:
        bar.advance(1, note="epoch 1/3")
        bar.update(completed=3)
    assert capsys.readouterr() == ("", "")


def test_a_shown_stage_writes_to_stderr_only(capsys):
    with stage("Stage I: prototypes", total=3, unit="steps") as bar:
        bar.advance(1, note="epoch 1/3 loss 0.5")
    out, err = capsys.readouterr()
    assert out == ""
