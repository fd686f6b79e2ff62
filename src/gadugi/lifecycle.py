"""The task state machine: which changes of a task's status are allowed, and why each is made.

Every change of a task's status, by the orchestrator's loop, by resume, by retry or by a
``gadugi cancel`` whose orchestrator is gone, is one ``Transition`` checked here and then
written by ``Registry.transition`` as a compare-and-set (the row must still have the old
status and the orchestration must still belong to the writer). A writer that lost a race
learns it from the row count, never by overwriting someone else's result.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import GadugiError
from .tasks import TaskStatus

Q, R, C = TaskStatus.QUEUED, TaskStatus.RUNNING, TaskStatus.COMPLETED
F, T, X = TaskStatus.FAILED, TaskStatus.TIMEOUT, TaskStatus.CANCELLED

ALLOWED: dict[TaskStatus, frozenset[TaskStatus]] = {
    # started; cancelled before it started (by a person, or a failed dependency); failed
    # to start (a worktree or spawn error past retrying, or a prompt that cannot be read)
    Q: frozenset({R, X, F}),
    # ended one way or another; or back to the queue (a retry after a transient failure, a
    # usage limit, a stall restart, an attempt lost while the orchestrator was down)
    R: frozenset({C, F, T, X, Q}),
    # `gadugi retry` (with --force for a completed task)
    C: frozenset({Q}),
    F: frozenset({Q}),
    T: frozenset({Q}),
    X: frozenset({Q}),
}


class TransitionError(GadugiError):
    """A status change the state machine does not allow (a bug, or a registry edited by hand)."""

    def __init__(self, task_id: str, old: TaskStatus, new: TaskStatus) -> None:
        super().__init__(f"{task_id}: a task cannot go from {old} to {new}")
        self.task_id = task_id
        self.old = old
        self.new = new


class LostRace(GadugiError):
    """A compare-and-set found the row changed, or the orchestration owned by another process."""

    def __init__(self, orchestration_id: str, task_id: str, expected: TaskStatus) -> None:
        super().__init__(
            f"{orchestration_id}/{task_id}: not changed: it is no longer {expected}, "
            "or another gadugi process now owns the orchestration"
        )
        self.orchestration_id = orchestration_id
        self.task_id = task_id
        self.expected = expected


@dataclass(frozen=True)
class Transition:
    task_id: str
    old: TaskStatus
    new: TaskStatus
    reason: str | None = None  # becomes the task's error_message (None clears it)

    def __post_init__(self) -> None:
        check(self.task_id, self.old, self.new)


def check(task_id: str, old: TaskStatus, new: TaskStatus) -> None:
    if new not in ALLOWED[old]:
        raise TransitionError(task_id, old, new)


def parse_status(task_id: str, raw: object) -> TaskStatus:
    """A status read from the registry; an unknown one is an error naming the task."""
    from .errors import RegistryError

    try:
        return TaskStatus(str(raw))
    except ValueError:
        known = ", ".join(s.value for s in TaskStatus)
        raise RegistryError(
            f"task {task_id} has status {raw!r} in the registry, which is not one of {known}; "
            "the registry was changed by something other than gadugi"
        ) from None
