"""What a person watching a run sees when it is not a terminal: plain lines, or nothing.

The live table for terminals is in ``livetable.py``, so that runs into a pipe or a log
never load rich.
"""

from __future__ import annotations

import shutil
import sys
import textwrap
import time
from collections.abc import Sequence
from typing import Any, TextIO

from ..holds import amount
from ..runner import TaskRun
from ..tasks import TaskStatus


def totals(runs: Sequence[TaskRun]) -> str:
    counts = {s: 0 for s in TaskStatus}
    for run in runs:
        counts[run.status] += 1
    return " · ".join(f"{n} {s.value}" for s, n in counts.items() if n) + f" · {len(runs)} tasks"


HINT = "gadugi status (from another terminal) shows this run; Ctrl-C stops every task"


def header(
    orchestration_id: str | None, started_at: float | None, runs: Sequence[TaskRun], now: float
) -> str:
    """The live view's first line: which orchestration, for how long, how many tasks are
    where (counts of none left out, so it fits), and what the agents have spent."""
    counts = {s: 0 for s in TaskStatus}
    for run in runs:
        counts[run.status] += 1
    counts[TaskStatus.FAILED] += counts.pop(TaskStatus.TIMEOUT)
    words = {TaskStatus.COMPLETED: "done"}
    where = ", ".join(
        f"{n} {words.get(s, s.value)}" for s, n in counts.items() if n or s is TaskStatus.RUNNING
    )
    spent = cost(runs)
    parts = [
        orchestration_id or "gadugi",
        clock(now - started_at) if started_at is not None else None,
        where,
        f"${spent:.3f}" if spent is not None else None,
    ]
    return " · ".join(p for p in parts if p)


def cost(runs: Sequence[TaskRun]) -> float | None:
    """What the agents have reported spending so far, or None if none reports cost."""
    reported = (amount(r.agent_info.get("cost_usd")) for r in runs)
    values = [value for value in reported if value is not None]
    return sum(values) if values else None


def clock(seconds: float) -> str:
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def terminal_width(stream: TextIO = sys.stdout) -> int | None:
    """The width lines must fit in when ``stream`` is a terminal; None for pipes and files."""
    try:
        if not stream.isatty():
            return None
    except (AttributeError, ValueError):
        return None
    return shutil.get_terminal_size().columns


def fit(text: str, width: int | None, indent: str = "") -> list[str]:
    """``text`` as lines of at most ``width`` characters, wrapped between words only; a word
    longer than a whole line is cut with an ellipsis. ``indent`` starts the lines after
    the first. Without a width (not a terminal), the text as it is."""
    if width is None or len(text) <= width:
        return [text]
    lead = text[: len(text) - len(text.lstrip(" "))]
    lines = textwrap.wrap(
        text.strip(" "),
        width,
        initial_indent=lead,
        subsequent_indent=indent,
        break_long_words=False,
        break_on_hyphens=False,
    )
    return [line if len(line) <= width else line[: width - 1] + "…" for line in lines]


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
