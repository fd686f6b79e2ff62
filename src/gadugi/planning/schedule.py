"""Which queued tasks may start now: a pure policy over the plan and current states.

A task may start when a slot is free, every dependency has completed, and no task
it conflicts with is running or is being started in the same step. Higher priority
goes first, then request order. Nothing here touches the clock, git or processes,
so the policy can be checked exhaustively (see the property tests).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from graphlib import TopologicalSorter

from ..tasks import TaskStatus


@dataclass(frozen=True)
class Slot:
    """What the policy needs to know about one task."""

    task_id: str
    order: int  # position in the request
    priority: int = 0
    depends_on: tuple[str, ...] = ()
    conflicts_with: frozenset[str] = frozenset()


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
    for slot in sorted(tasks, key=lambda s: (-s.priority, s.order)):
        if len(picked) >= free_slots:
            break
        if status.get(slot.task_id) is not TaskStatus.QUEUED or slot.task_id in held:
            continue
        if any(status.get(dep) is not TaskStatus.COMPLETED for dep in slot.depends_on):
            continue
        if slot.conflicts_with & busy:
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
