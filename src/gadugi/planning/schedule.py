"""Which queued tasks may start now, and why the others wait: a pure policy.

A task may start when a slot is free, every dependency has completed, and its
conflicts allow it. Higher priority goes first, then request order. What conflicts
allow is the ``ConflictPolicy`` each slot carries:

* ``stack``: of two conflicting tasks, the one that comes later in the stack order
  (dependencies first, then priority, then request order) waits until the earlier
  one has finished, however it finished. A stack edge is an ordering, not a
  dependency: an earlier task that failed never dooms the later one. The runner
  starts the later task from the earlier one's branch when that one completed.
* ``serialize``: conflicting tasks never run together; either may go first.
* ``optimistic``: conflicts are ignored here (landing resolves what really clashes).

Nothing here touches the clock, git or processes, so the policy can be checked
exhaustively (see the property tests).
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from graphlib import TopologicalSorter

from ..tasks import ConflictPolicy, TaskStatus


@dataclass(frozen=True)
class Slot:
    """What the policy needs to know about one task."""

    task_id: str
    order: int  # position in the request
    priority: int = 0
    depends_on: tuple[str, ...] = ()
    conflicts_with: frozenset[str] = frozenset()  # the plan's prediction, whatever the policy
    policy: ConflictPolicy = ConflictPolicy.SERIALIZE
    after: tuple[str, ...] = ()  # stack: the conflicting tasks that go first, in stack order

    @property
    def rank(self) -> tuple[int, int]:
        """Who goes first among tasks ready together: priority, then request order."""
        return (-self.priority, self.order)


def with_policy(tasks: Sequence[Slot], policy: ConflictPolicy) -> list[Slot]:
    """The slots under ``policy``; under ``stack`` each learns which conflicting tasks
    go before it. The stack order puts every task after its dependencies, so stack
    edges and dependencies together never form a cycle."""
    position = stack_order(tasks)
    result = []
    for slot in tasks:
        after: tuple[str, ...] = ()
        if policy is ConflictPolicy.STACK:
            mine = position[slot.task_id]
            earlier = (c for c in slot.conflicts_with if position.get(c, mine) < mine)
            after = tuple(sorted(earlier, key=position.__getitem__))
        result.append(replace(slot, policy=policy, after=after))
    return result


def stack_order(tasks: Sequence[Slot]) -> dict[str, int]:
    """Each task's place: after its dependencies, otherwise by rank (Kahn's algorithm)."""
    by_id = {s.task_id: s for s in tasks}
    waiting = {s.task_id: sum(d in by_id for d in set(s.depends_on)) for s in tasks}
    dependents: dict[str, list[str]] = {s.task_id: [] for s in tasks}
    for slot in tasks:
        for dep in set(slot.depends_on):
            if dep in by_id:
                dependents[dep].append(slot.task_id)
    ready = [(by_id[t].rank, t) for t, n in waiting.items() if n == 0]
    heapq.heapify(ready)
    position: dict[str, int] = {}
    while ready:
        _, task_id = heapq.heappop(ready)
        position[task_id] = len(position)
        for child in dependents[task_id]:
            waiting[child] -= 1
            if waiting[child] == 0:
                heapq.heappush(ready, (by_id[child].rank, child))
    for slot in tasks:  # a cycle (refused by the plan before this): last, in rank order
        position.setdefault(slot.task_id, len(position))
    return position


def conflict_blocker(
    slot: Slot, status: Mapping[str, TaskStatus], busy: set[str] | frozenset[str]
) -> str | None:
    """The task whose conflict keeps ``slot`` from starting now, if any."""
    if slot.policy is ConflictPolicy.OPTIMISTIC:
        return None
    for earlier in slot.after:
        state = status.get(earlier)
        if state is not None and not state.finished:
            return earlier
    running = slot.conflicts_with & busy
    return min(running) if running else None


def next_to_start(
    tasks: Sequence[Slot],
    status: Mapping[str, TaskStatus],
    free_slots: int,
    held: frozenset[str] = frozenset(),
) -> list[str]:
    """Task ids to start now, best first; ``held`` ids are skipped (e.g. backing off)."""
    if free_slots <= 0:
        return []
    busy = {t for t, s in status.items() if s is TaskStatus.RUNNING}
    picked: list[str] = []
    for slot in sorted(tasks, key=lambda s: s.rank):
        if len(picked) >= free_slots:
            break
        if status.get(slot.task_id) is not TaskStatus.QUEUED or slot.task_id in held:
            continue
        if any(status.get(dep) is not TaskStatus.COMPLETED for dep in slot.depends_on):
            continue
        if conflict_blocker(slot, status, busy) is not None:
            continue
        picked.append(slot.task_id)
        busy.add(slot.task_id)
    return picked


def doomed(tasks: Sequence[Slot], status: Mapping[str, TaskStatus]) -> dict[str, str]:
    """Queued tasks that can never run, each mapped to the unfinished dependency's id.

    A dependency that failed, timed out or was cancelled dooms every task that
    depends on it, directly or not; the value names the task that broke the chain.
    Tasks are visited in dependency order, so each edge is looked at once and a long
    chain costs no recursion.
    """
    by_id = {s.task_id: s for s in tasks}
    order = TopologicalSorter({s.task_id: [d for d in s.depends_on if d in by_id] for s in tasks})
    verdict: dict[str, str] = {}
    for task_id in order.static_order():
        own = status.get(task_id)
        if own is not None and own.finished:
            continue
        for dep in by_id[task_id].depends_on:
            dep_status = status.get(dep)
            if (
                dep_status is not None
                and dep_status.finished
                and dep_status is not (TaskStatus.COMPLETED)
            ):
                verdict[task_id] = dep
                break
            if dep in verdict:
                verdict[task_id] = verdict[dep]
                break
    return {t: cause for t, cause in verdict.items() if status.get(t) is TaskStatus.QUEUED}


def waiting_reasons(
    tasks: Sequence[Slot],
    status: Mapping[str, TaskStatus],
    parallel: int,
    held: Mapping[str, str] | None = None,
    blocked: str | None = None,
) -> dict[str, str]:
    """Why each queued task is not running, asked in the order the scheduler asks.

    ``held`` maps a task to why it must wait on its own (a retry's back-off until a
    time); ``blocked`` is why no new task may start at all (the admission limit: load
    or memory; a budget). The first reason that applies is the one given.
    """
    busy = {t for t, s in status.items() if s is TaskStatus.RUNNING}
    reasons: dict[str, str] = {}
    for slot in tasks:
        if status.get(slot.task_id) is not TaskStatus.QUEUED:
            continue
        deps = [d for d in slot.depends_on if status.get(d) is not TaskStatus.COMPLETED]
        blocker = conflict_blocker(slot, status, busy)
        if deps:
            named = ", ".join(f"{d} ({_state(status, d)})" for d in deps)
            reason = f"waiting for dependency {named}"
        elif held and slot.task_id in held:
            reason = held[slot.task_id]
        elif blocker is not None and blocker in slot.after:
            reason = (
                f"stacked after {blocker} ({_state(status, blocker)}): "
                "starts from its branch once it completes"
            )
        elif blocker is not None:
            reason = f"waiting for conflicting task {blocker} (running)"
        elif blocked:
            reason = blocked
        elif len(busy) >= parallel:
            reason = f"waiting for a slot: {len(busy)} of {parallel} running"
        else:
            reason = "ready: starts at the next step"
        reasons[slot.task_id] = reason
    return reasons


def _state(status: Mapping[str, TaskStatus], task_id: str) -> str:
    found = status.get(task_id)
    return found.value if found is not None else "not in this orchestration"
