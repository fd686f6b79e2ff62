"""What a person watching a run sees: a live table on a terminal, plain lines otherwise."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, TextIO

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from .runner import TaskRun
from .tasks import TaskStatus

_STYLE = {
    TaskStatus.QUEUED: "dim",
    TaskStatus.RUNNING: "cyan",
    TaskStatus.COMPLETED: "green",
    TaskStatus.FAILED: "red",
    TaskStatus.TIMEOUT: "red",
    TaskStatus.CANCELLED: "yellow",
}
REFRESH_S = 0.25


def totals(runs: Sequence[TaskRun]) -> str:
    counts = {s: 0 for s in TaskStatus}
    for run in runs:
        counts[run.status] += 1
    return " · ".join(f"{n} {s.value}" for s, n in counts.items() if n) + f" · {len(runs)} tasks"


def agent_summary(info: dict[str, Any]) -> str:
    """Turns, the last tool and the cost so far, as far as the agent reports them."""
    parts = []
    if info.get("num_turns") is not None:
        parts.append(f"turn {info['num_turns']}")
    if info.get("last_tool"):
        parts.append(str(info["last_tool"]))
    if info.get("cost_usd") is not None:
        parts.append(f"${float(info['cost_usd']):.3f}")
    return " · ".join(parts)


def elapsed(run: TaskRun, now: float) -> str:
    if run.started_at is None:
        return ""
    seconds = int((run.completed_at or now) - run.started_at)
    return f"{seconds // 60}:{seconds % 60:02d}"


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


class PlainLines:
    """One line per state change, for logs and pipes."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.seen: dict[str, TaskStatus] = {}
        self.note: str | None = None

    def changed(self, task: TaskRun) -> None:
        before = self.seen.get(task.task_id, TaskStatus.QUEUED)
        if before is task.status:
            return
        self.seen[task.task_id] = task.status
        stamp = time.strftime("%H:%M:%S")
        detail = ""
        if task.status is TaskStatus.RUNNING:
            detail = f" (attempt {task.attempt}, branch {task.branch})"
        elif task.status.finished and task.error:
            detail = f": {task.error.removeprefix(task.status.value + ': ')}"
        self.out.write(f"{stamp} {task.task_id} {task.status.value}{detail}\n")
        self.out.flush()

    def ticked(self, runs: Sequence[TaskRun], now: float, note: str | None = None) -> None:
        if note != self.note:
            self.note = note
            if note:
                self.out.write(f"{time.strftime('%H:%M:%S')} {note}\n")
                self.out.flush()

    def close(self) -> None:
        return


class Silent:
    def changed(self, task: TaskRun) -> None:
        return

    def ticked(self, runs: Sequence[TaskRun], now: float, note: str | None = None) -> None:
        return

    def close(self) -> None:
        return
