"""The one progress display: every long stage names itself and shows done/total, a rate and an ETA on stderr.

    with progress.stage("Stage I: prototypes", total=steps, unit="steps", show=ctx.show_progress) as bar:
        for ...:
            bar.advance(1, note=f"loss {loss:.3f}")

The line appears as soon as the stage starts (before the first step finishes), so no wait goes unexplained.
With show=False nothing is printed and every call is a no-op.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class Stage:
    """A running stage: `advance` and `update` move it; `note` is shown after the stage's name."""

    def __init__(self, description: str, progress: Any = None, task: Any = None):
        self.description = description
        self._progress = progress
        self._task = task

    def _fields(self, note: str | None) -> dict[str, Any]:
        return {} if note is None else {"description": f"{self.description}, {note}" if note else self.description}

    def advance(self, n: float = 1, note: str | None = None) -> None:
        if self._progress is not None:
            self._progress.update(self._task, advance=n, **self._fields(note))

    def update(self, completed: float | None = None, note: str | None = None, total: float | None = None) -> None:
        if self._progress is not None:
            fields = self._fields(note)
            if completed is not None:
                fields["completed"] = completed
            if total is not None:
                fields["total"] = total
            self._progress.update(self._task, **fields)


def _columns(unit: str) -> list[Any]:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        ProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class RateColumn(ProgressColumn):
        """Units per second (or seconds per unit when slower than one a second)."""

        def render(self, task) -> Text:
            speed = task.finished_speed or task.speed
            if not speed:
                return Text(f"– {unit}/s", style="progress.data.speed")
            if speed >= 1:
                return Text(f"{speed:,.1f} {unit}/s", style="progress.data.speed")
            return Text(f"{1 / speed:,.1f} s/{unit.rstrip('s') or unit}", style="progress.data.speed")

    return [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn(unit), RateColumn(),
            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn()]


def make_progress(unit: str = "steps", show: bool = True, console: Any = None):
    """A rich Progress on stderr with the standard columns (for callers that drive several tasks)."""
    from rich.console import Console
    from rich.progress import Progress

    return Progress(*_columns(unit), console=console or Console(stderr=True), transient=True, refresh_per_second=4,
                    disable=not show)


@contextmanager
def stage(description: str, total: float | None, unit: str = "steps", show: bool = True,
          completed: float = 0) -> Iterator[Stage]:
    """Show one named stage for the duration of the block (nothing when `show` is false)."""
    if not show:
        yield Stage(description)
        return
    progress = make_progress(unit)
    task = progress.add_task(description, total=total, completed=completed)
    progress.start()
    progress.refresh()  # visible now, not after the first step
    try:
        yield Stage(description, progress, task)
    finally:
        progress.stop()
