"""What a person watching a run sees when it is not a terminal: plain lines, or nothing.

The live table for terminals is in ``livetable.py``, so that runs into a pipe or a log
never load rich.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, TextIO

from ..runner import TaskRun
from ..tasks import TaskStatus


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
