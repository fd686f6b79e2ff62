"""Following an agent's JSONL events file: what the structured-output profiles share.

Each attempt's events are appended to the task's one events file (retries add to it), so
a profile notes where an attempt's events begin when it prepares the attempt, and reads
only from there when it judges. The live view reads complete lines as they arrive.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from ..errors import AgentError
from .base import log_tail
from .claude import MAX_PROMPT_ARG_BYTES, read_events

__all__ = [
    "Follower",
    "clip",
    "log_tail",
    "number",
    "prompt_text",
    "read_events",
    "require",
    "size",
]


class Tally(Protocol):
    offset: int

    def add(self, event: dict[str, Any]) -> None: ...

    def live(self) -> dict[str, Any]: ...


T = TypeVar("T", bound=Tally)


class Follower(Generic[T]):
    """Where each attempt's events begin, and a running tally per events file."""

    def __init__(self, fresh: Callable[[], T]) -> None:
        self.fresh = fresh
        self.starts: dict[Path, int] = {}
        self.tallies: dict[Path, T] = {}

    def begin(self, events_path: Path) -> None:
        """An attempt starts now: its events are whatever the file gets from here."""
        self.starts[events_path] = size(events_path)

    def finish(self, events_path: Path) -> T:
        """The tally of the attempt that just ended (the whole file if its start is unknown,
        e.g. after a restart: each profile's tally resets on an attempt's opening event)."""
        start = self.starts.pop(events_path, 0)
        self.tallies.pop(events_path, None)
        tally = self.fresh()
        for event in read_events(events_path, start):
            tally.add(event)
        return tally

    def progress(self, events_path: Path, offset: int) -> tuple[int, dict[str, Any]]:
        """Read the events written since byte ``offset``; return the new offset and a summary.

        Only complete lines are consumed, so a line being written is read on a later call.
        """
        tally = self.tallies.get(events_path)
        if tally is None or tally.offset != offset:
            tally = self.tallies[events_path] = self.fresh()
            tally.offset = offset
        try:
            with events_path.open("rb") as fh:
                if fh.seek(0, os.SEEK_END) < offset:  # replaced or truncated: start over
                    tally = self.tallies[events_path] = self.fresh()
                fh.seek(tally.offset)
                data = fh.read()
        except OSError:
            return offset, tally.live()
        end = data.rfind(b"\n") + 1
        for event in _events(data[:end]):
            tally.add(event)
        tally.offset += end
        return tally.offset, tally.live()


def _events(data: bytes) -> list[dict[str, Any]]:
    found = []
    for line in data.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict):
            found.append(event)
    return found


def require(task_id: str, executable: str, what: str, install: str) -> str:
    """The full path of ``executable``, or an AgentError saying how to install it."""
    found = shutil.which(executable)
    if found is None:
        raise AgentError(
            task_id,
            f"{executable} not found on PATH; install {what} ({install}) or choose another "
            "agent with --agent",
        )
    return found


def prompt_text(prompt_file: Path) -> tuple[str, bool]:
    """The prompt to pass as an argument, and whether it is a pointer to the prompt file.

    One argv string may not exceed 128 KiB (Linux MAX_ARG_STRLEN): a larger prompt is
    replaced by an instruction to read the file.
    """
    text = prompt_file.read_text(encoding="utf-8")
    if len(text.encode()) <= MAX_PROMPT_ARG_BYTES:
        return text, False
    return (
        f"Your task is written in the file {prompt_file}. Read all of it, then carry it out.",
        True,
    )


def size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def clip(text: Any, limit: int) -> str | None:
    if not isinstance(text, str):
        return None
    return text if len(text) <= limit else text[: limit - 1] + "…"


def number(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
