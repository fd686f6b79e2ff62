"""The live table a person sees on a terminal: one row per task, redrawn in place."""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from ..runner import TaskRun
from ..tasks import TaskStatus
from ..transcript import LastOutput
from .liveview import HINT, agent_summary, elapsed, header, totals

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
        self.orchestration_id: str | None = None
        self.started_at: float | None = None
        self.outputs: dict[str, LastOutput] = {}  # tasks whose agents write events

    def began(self, orchestration_id: str, started_at: float) -> None:
        """The orchestration the loop drives, for the header."""
        self.orchestration_id, self.started_at = orchestration_id, started_at

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
        table.add_column("task", no_wrap=True, max_width=32, overflow="ellipsis")
        table.add_column("state", no_wrap=True)
        table.add_column("time", justify="right", no_wrap=True)
        table.add_column("agent", no_wrap=True, overflow="ellipsis", max_width=24)
        table.add_column("last output", no_wrap=True, overflow="ellipsis", ratio=1)
        room = max(5, self.console.height - 8)
        shown = _most_relevant(runs, room)
        for run in shown:
            said = run.error if run.status.finished and run.error else self._last_output(run)
            if run.status is TaskStatus.QUEUED and run.waiting_reason:
                said = run.waiting_reason
            table.add_row(
                run.task_id,
                Text(run.status.value, style=_STYLE[run.status]),
                elapsed(run, now),
                agent_summary(run.agent_info),
                said or "",
            )
        hidden = len(runs) - len(shown)
        top = header(self.orchestration_id, self.started_at, runs, now)
        parts: list[RenderableType] = [
            Text(top, style="bold", no_wrap=True, overflow="ellipsis"),
            table,
            Text(totals(runs) + (f" ({hidden} not shown)" if hidden else ""), style="bold"),
        ]
        if note:
            # Wrapped between words; a word wider than the terminal is cut, never folded.
            parts.append(Text(note, overflow="ellipsis"))
        parts.append(Text(HINT, style="dim", overflow="ellipsis"))
        return Group(*parts)

    def _last_output(self, run: TaskRun) -> str:
        """The agent's last text or tool call where it writes events, else its last line."""
        ctx = run.ctx
        if ctx is not None and ctx.events_file.exists() and ctx.events_file.stat().st_size:
            reader = self.outputs.get(run.task_id)
            if reader is None:
                reader = self.outputs[run.task_id] = LastOutput(ctx.events_file)
            return reader.read() or run.last_line
        return run.last_line

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
