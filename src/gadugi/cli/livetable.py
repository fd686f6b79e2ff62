"""The live table a person sees on a terminal: one row per task, redrawn in place."""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from ..runner import TaskRun
from ..tasks import TaskStatus
from .liveview import agent_summary, elapsed, totals

_STYLE = {
    TaskStatus.QUEUED: "dim",
    TaskStatus.RUNNING: "cyan",
    TaskStatus.COMPLETED: "green",
    TaskStatus.FAILED: "red",
    TaskStatus.TIMEOUT: "red",
    TaskStatus.CANCELLED: "yellow",
}
REFRESH_S = 0.25


class LiveTable:
    """A table of tasks redrawn in place, at most four times a second."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.live = Live(console=console, auto_refresh=False, transient=False)
        self.last = 0.0
        self.started = False

    def changed(self, task: TaskRun) -> None:
        return

    def ticked(self, runs: Sequence[TaskRun], now: float, note: str | None = None) -> None:
        if not self.started:
            self.live.start()
            self.started = True
        if now - self.last >= REFRESH_S or all(r.status.finished for r in runs):
            self.last = now
            self.live.update(self.render(runs, now, note), refresh=True)

    def render(self, runs: Sequence[TaskRun], now: float, note: str | None = None) -> Group:
        table = Table(expand=True, show_edge=False, pad_edge=False)
        table.add_column("task", no_wrap=True, max_width=32)
        table.add_column("state", no_wrap=True)
        table.add_column("time", justify="right", no_wrap=True)
        table.add_column("agent", no_wrap=True)
        table.add_column("last output", no_wrap=True, overflow="ellipsis", ratio=1)
        room = max(5, self.console.height - 6)
        shown = _most_relevant(runs, room)
        for run in shown:
            note = run.error if run.status.finished and run.error else run.last_line
            if run.status is TaskStatus.QUEUED and run.waiting_reason:
                note = run.waiting_reason
            table.add_row(
                run.task_id,
                Text(run.status.value, style=_STYLE[run.status]),
                elapsed(run, now),
                agent_summary(run.agent_info),
                note or "",
            )
        hidden = len(runs) - len(shown)
        footer = totals(runs) + (f" ({hidden} not shown)" if hidden else "")
        footer += f"\n{note}" if note else ""
        return Group(table, Text(footer, style="bold"))

    def close(self) -> None:
        if self.started:
            self.live.stop()


def _most_relevant(runs: Sequence[TaskRun], room: int) -> list[TaskRun]:
    """Running first, then the most recently finished, then the next queued."""
    if len(runs) <= room:
        return list(runs)
    order = {
        TaskStatus.RUNNING: 0,
        TaskStatus.FAILED: 1,
        TaskStatus.TIMEOUT: 1,
        TaskStatus.CANCELLED: 2,
        TaskStatus.COMPLETED: 3,
        TaskStatus.QUEUED: 4,
    }
    ranked = sorted(runs, key=lambda r: (order[r.status], -(r.completed_at or 0)))
    keep = set(map(id, ranked[:room]))
    return [r for r in runs if id(r) in keep]
