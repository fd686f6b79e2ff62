"""``gadugi wait``: block until an orchestration ends, as its registry row tells.

The orchestrator writes its result object into the registry in the same step that marks the
orchestration finished, so a waiter needs nothing from the orchestrator process itself: it
works for a detached orchestrator, one in another terminal, and one that ``resume`` took
over. A running orchestration whose owner is gone (killed, and nobody resumed it yet) is not
waited for forever: that is an outcome of its own, naming ``gadugi resume``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import lease, recovery
from .registry import Registry

if TYPE_CHECKING:
    from .coordinator import OrchestrationResult

POLL_S = 0.2
# A resume that has just claimed the lease records its pid a moment later: an orchestrator
# must look dead this long in a row before the waiter says so.
ORPHAN_GRACE_S = 2.0


class Ending(StrEnum):
    FINISHED = "finished"
    INTERRUPTED = "interrupted"
    TIMED_OUT = "timed_out"
    ORPHANED = "orphaned"  # still "running", and no live process owns it


@dataclass(frozen=True)
class Outcome:
    ending: Ending
    orchestration_id: str
    result: dict[str, Any] | None  # the result object, once it ended

    @property
    def exit_code(self) -> int:
        """``run``'s exit codes; 124 for a timeout, as timeout(1) has it."""
        if self.ending is Ending.TIMED_OUT:
            return 124
        if self.ending is Ending.INTERRUPTED:
            return 130
        if self.ending is Ending.ORPHANED or self.result is None:
            return 1
        done = self.result.get("successful_tasks") == self.result.get("total_tasks")
        return 0 if done else 1


def wait_for(
    state_db: Path,
    orch_id: str | None,
    timeout_s: float | None,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Outcome:
    """Poll the registry until the orchestration (default: the newest) is no longer running."""
    registry = Registry(state_db, readonly=True)
    try:
        orch = registry.orchestration(orch_id)
        orch_id = str(orch["id"])
        deadline = None if timeout_s is None else clock() + timeout_s
        dead_since: float | None = None
        while True:
            orch = registry.orchestration(orch_id)
            if orch["state"] != "running":
                return _ended(orch)
            now = clock()
            if _owned(state_db.parent, orch):
                dead_since = None
            elif dead_since is None:
                dead_since = now
            elif now - dead_since >= ORPHAN_GRACE_S:
                return Outcome(Ending.ORPHANED, orch_id, None)
            if deadline is not None and now >= deadline:
                return Outcome(Ending.TIMED_OUT, orch_id, None)
            pause = POLL_S if deadline is None else max(0.0, min(POLL_S, deadline - now))
            sleep(pause)
    finally:
        registry.close()


def _owned(state_dir: Path, orch: dict[str, Any]) -> bool:
    return recovery.orchestrator_alive(orch) or bool(lease.held_elsewhere(state_dir, orch["id"]))


def _ended(orch: dict[str, Any]) -> Outcome:
    ending = Ending.INTERRUPTED if orch["state"] == "interrupted" else Ending.FINISHED
    result = orch.get("result")
    return Outcome(ending, str(orch["id"]), result if isinstance(result, dict) else None)


def result_from_json(data: dict[str, Any]) -> OrchestrationResult:
    """The result object back from its JSON form (fields it does not know are left out)."""
    from dataclasses import fields

    from .coordinator import OrchestrationResult, TaskResult

    def known(kind: type[Any], values: dict[str, Any]) -> dict[str, Any]:
        names = {f.name for f in fields(kind)}
        return {k: v for k, v in values.items() if k in names}

    tasks = [TaskResult(**known(TaskResult, t)) for t in data.get("tasks", [])]
    return OrchestrationResult(**(known(OrchestrationResult, data) | {"tasks": tasks}))
