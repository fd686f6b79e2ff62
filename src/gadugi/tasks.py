"""Tasks, their states and attempts: the nouns every other module shares."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path


class TaskStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self not in (TaskStatus.QUEUED, TaskStatus.RUNNING)


FINISHED = frozenset(s for s in TaskStatus if s.finished)


@dataclass(frozen=True)
class Prompt:
    """One prompt file as read from disk: front matter applied, nothing inferred."""

    path: Path  # absolute path of the user's prompt file
    rel_path: str  # path relative to the project root, POSIX separators
    task_id: str  # safe and unique within the request
    title: str
    body: str  # the Markdown after the front matter
    text: str  # the whole original file
    depends_on: tuple[str, ...] = ()  # prompt file names or task ids, as written
    touches: tuple[str, ...] = ()  # globs, as written
    priority: int = 0
    timeout_minutes: float | None = None
    retries: int | None = None
    agent: str | None = None
    type: str | None = None
    estimate_minutes: float | None = None
    memory_limit_mb: int | None = None  # RLIMIT_AS for the agent's processes
    open_files_limit: int | None = None  # RLIMIT_NOFILE

    @property
    def name(self) -> str:
        return self.path.name


@dataclass
class Attempt:
    number: int
    started_at: float
    pid: int | None = None
    ended_at: float | None = None
    exit_code: int | None = None
    error: str | None = None


@dataclass
class Task:
    """A prompt inside an orchestration, with everything the runner tracks."""

    prompt: Prompt
    depends_on: tuple[str, ...] = ()  # resolved task ids
    conflicts_with: frozenset[str] = frozenset()
    status: TaskStatus = TaskStatus.QUEUED
    branch: str | None = None
    worktree: Path | None = None
    base_commit: str | None = None
    attempts: list[Attempt] = field(default_factory=list)
    error_message: str | None = None
    exit_code: int | None = None
    started_at: float | None = None
    completed_at: float | None = None

    @property
    def task_id(self) -> str:
        return self.prompt.task_id


def iso(ts: float | None) -> str | None:
    """An epoch time as ISO 8601 with its UTC offset, as every JSON output carries it."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")
