"""Tasks, their states and attempts: the nouns every other module shares."""

from __future__ import annotations

from dataclasses import dataclass
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


class Phase(StrEnum):
    """What a running attempt is doing: each phase is a supervised child of its own."""

    SETUP = "setup"  # the setup command, in a new worktree, before the agent
    AGENT = "agent"
    VERIFY = "verify"  # the verification command, after the agent exited successfully


class Verdict(StrEnum):
    """An agent's own structured verdict on its work."""

    DONE = "done"
    BLOCKED = "blocked"
    NO_CHANGE = "no_change"


class ConflictPolicy(StrEnum):
    """What the scheduler does with two tasks whose footprints overlap."""

    STACK = "stack"  # one after the other; the later starts from the earlier's branch
    SERIALIZE = "serialize"  # never together; each starts from its own base
    OPTIMISTIC = "optimistic"  # together; landing resolves what really clashes


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
    setup: str | None = None  # a shell command run in a new worktree before the agent
    verify: str | None = None  # a shell command that must pass after the agent exits
    max_cost_usd: float | None = None  # the agent's own spending cap (claude --max-budget-usd)

    @property
    def name(self) -> str:
        return self.path.name


def iso(ts: float | None) -> str | None:
    """An epoch time as ISO 8601 with its UTC offset, as every JSON output carries it."""
    if ts is None:
        return None
    try:
        return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")
    except (ValueError, OverflowError, OSError):
        return None  # a damaged row's time that no calendar holds: unknown, not a crash
