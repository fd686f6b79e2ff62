"""The plan: tasks with their footprints, dependencies and conflicts, in waves.

Pure analysis: no subprocess, no clock; the caller passes the tracked files in. What a
prompt says about itself (type, estimate, dependency names) is read by ``intent``; what
it may touch, and whose footprints overlap, by ``footprint``.

* **Conflicts** are overlapping footprints: what one task changes meets what the other
  changes. A task whose changes meet only what the other imports is **related** to it:
  reported, never scheduled apart. Tasks ordered by their dependencies, directly or not,
  never run together, so they are listed as neither.
* The **simulation** replays ``schedule.next_to_start``, the runner's own policy, under
  the plan's ``conflict_policy`` over ``max_parallel`` slots, every task taking its
  estimate. Its **waves** are the tasks it starts at the same moment, in order (with one
  slot, one task per wave); its end is the **parallel estimate**, and the **speedup** is
  the sequential sum over that.
* The **critical path** is the chain of dependencies with the largest summed estimate.
"""

from __future__ import annotations

import heapq
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..errors import PlanError
from ..tasks import ConflictPolicy, Prompt, TaskStatus
from .footprint import RepoIndex, footprint, overlaps
from .intent import classify, dependencies, estimate
from .schedule import Slot, next_to_start, with_policy


@dataclass(frozen=True)
class PlannedTask:
    task_id: str
    prompt_file: str
    title: str
    type: str
    estimate_minutes: float
    priority: int
    footprint: tuple[str, ...]  # sorted repo-relative paths and declared globs
    depends_on: tuple[str, ...]  # resolved task ids, request order
    conflicts_with: tuple[str, ...]  # sorted task ids
    related_to: tuple[str, ...] = ()  # sorted task ids whose imports meet (not a conflict)


@dataclass(frozen=True)
class Plan:
    max_parallel: int
    tasks: tuple[PlannedTask, ...]  # request order
    waves: tuple[tuple[str, ...], ...]
    critical_path: tuple[str, ...]
    estimated_sequential_minutes: float
    estimated_parallel_minutes: float
    estimated_speedup: float
    conflict_policy: ConflictPolicy = ConflictPolicy.STACK

    def to_json(self) -> dict[str, Any]:
        """The ``gadugi plan --json`` object of PRODUCT.md."""
        return {
            "max_parallel": self.max_parallel,
            "conflict_policy": self.conflict_policy.value,
            "tasks": [
                {
                    "task_id": t.task_id,
                    "prompt_file": t.prompt_file,
                    "title": t.title,
                    "type": t.type,
                    "estimate_minutes": t.estimate_minutes,
                    "priority": t.priority,
                    "footprint": list(t.footprint),
                    "depends_on": list(t.depends_on),
                    "conflicts_with": list(t.conflicts_with),
                    "related_to": list(t.related_to),
                }
                for t in self.tasks
            ],
            "waves": [list(w) for w in self.waves],
            "critical_path": list(self.critical_path),
            "estimated_sequential_minutes": self.estimated_sequential_minutes,
            "estimated_parallel_minutes": self.estimated_parallel_minutes,
            "estimated_speedup": self.estimated_speedup,
        }

    def slots(self) -> list[Slot]:
        """What the scheduler needs of each task, in request order, under the policy."""
        return _slots(self.tasks, self.conflict_policy)


def _slots(tasks: Sequence[PlannedTask], policy: ConflictPolicy) -> list[Slot]:
    return with_policy(
        [
            Slot(t.task_id, i, t.priority, t.depends_on, frozenset(t.conflicts_with))
            for i, t in enumerate(tasks)
        ],
        policy,
    )


def analyze(
    prompts: Sequence[Prompt],
    project_root: Path,
    files: Sequence[str],
    max_parallel: int,
    policy: ConflictPolicy = ConflictPolicy.STACK,
) -> Plan:
    """Analyse the prompts; an unknown dependency or a cycle raises PlanError."""
    _check(prompts, max_parallel)
    depends = dependencies(prompts)
    order = {p.task_id: i for i, p in enumerate(prompts)}
    ancestors = _ancestors(_dependency_order(list(order), depends, order), depends, order)
    index = RepoIndex(project_root, files)
    footprints = [footprint(p.body, p.touches, index) for p in prompts]
    near = overlaps(footprints, index)

    def unordered(i: int, found: set[int]) -> tuple[str, ...]:
        apart = (j for j in found if not (ancestors[i] >> j) & 1 and not (ancestors[j] >> i) & 1)
        return tuple(sorted(prompts[j].task_id for j in apart))

    tasks = []
    for i, prompt in enumerate(prompts):
        conflicts = unordered(i, near.conflicts[i])
        planned = _planned(prompt, footprints[i].entries, depends[prompt.task_id], conflicts)
        tasks.append(replace(planned, related_to=unordered(i, near.related[i])))
    return _summarize(tuple(tasks), max_parallel, policy)


def sequential_plan(
    prompts: Sequence[Prompt], policy: ConflictPolicy = ConflictPolicy.STACK
) -> Plan:
    """The fallback: request order, one task at a time, each on its own (no dependencies,
    so each branches from the base and one failure cancels nothing), no footprints."""
    tasks = tuple(_planned(p, (), (), ()) for p in prompts)
    return replace(_summarize(tasks, 1, policy), waves=tuple((t.task_id,) for t in tasks))


def _planned(
    prompt: Prompt, prints: tuple[str, ...], depends: tuple[str, ...], conflicts: tuple[str, ...]
) -> PlannedTask:
    kind = classify(prompt)
    return PlannedTask(
        task_id=prompt.task_id,
        prompt_file=prompt.rel_path,
        title=prompt.title,
        type=kind,
        estimate_minutes=estimate(prompt, kind),
        priority=prompt.priority,
        footprint=prints,
        depends_on=depends,
        conflicts_with=conflicts,
    )


def _check(prompts: Sequence[Prompt], max_parallel: int) -> None:
    if max_parallel < 1:
        raise PlanError(f"max_parallel must be at least 1, not {max_parallel}")
    seen: set[str] = set()
    for prompt in prompts:
        if prompt.task_id in seen:
            raise PlanError(f"duplicate task id {prompt.task_id!r}", [prompt.task_id])
        seen.add(prompt.task_id)


def _dependency_order(
    ids: Sequence[str], depends: Mapping[str, Sequence[str]], order: Mapping[str, int]
) -> list[str]:
    """Every task after its dependencies; a cycle raises PlanError naming it in order.

    Depth-first without recursion, so a chain of thousands of tasks is fine.
    """
    state: dict[str, int] = {}  # 1: on the current path, 2: placed
    result: list[str] = []
    for start in ids:
        if start in state:
            continue
        path, stack = [start], [iter(depends[start])]
        state[start] = 1
        while stack:
            dep = next(stack[-1], None)
            if dep is None:
                stack.pop()
                result.append(path.pop())
                state[result[-1]] = 2
            elif state.get(dep) == 1:
                cycle = path[path.index(dep) :]
                first = min(range(len(cycle)), key=lambda k: order[cycle[k]])
                cycle = cycle[first:] + cycle[:first]
                chain = " -> ".join([*cycle, cycle[0]])
                raise PlanError(f"dependency cycle: {chain} (each depends on the next)", cycle)
            elif dep not in state:
                state[dep] = 1
                path.append(dep)
                stack.append(iter(depends[dep]))
    return result


def _ancestors(
    topological: Sequence[str], depends: Mapping[str, Sequence[str]], order: Mapping[str, int]
) -> list[int]:
    """Per task, a bit set (by request index) of every task it waits for, directly or not."""
    result: dict[str, int] = {}
    for task_id in topological:
        bits = 0
        for dep in depends[task_id]:
            bits |= result[dep] | (1 << order[dep])
        result[task_id] = bits
    return [result[t] for t in sorted(result, key=order.__getitem__)]


def _summarize(tasks: tuple[PlannedTask, ...], max_parallel: int, policy: ConflictPolicy) -> Plan:
    by_id = {t.task_id: t for t in tasks}
    order = {t.task_id: i for i, t in enumerate(tasks)}
    depends = {t.task_id: t.depends_on for t in tasks}
    finish: dict[str, float] = {}
    for task_id in _dependency_order(list(order), depends, order):
        start = max((finish[d] for d in depends[task_id]), default=0.0)
        finish[task_id] = start + by_id[task_id].estimate_minutes
    sequential = sum(t.estimate_minutes for t in tasks)
    parallel, waves = _simulate(tasks, max_parallel, policy)
    return Plan(
        max_parallel=max_parallel,
        tasks=tasks,
        waves=waves,
        critical_path=_critical_path(tasks, by_id, finish),
        estimated_sequential_minutes=round(sequential, 1),
        estimated_parallel_minutes=round(parallel, 1),
        estimated_speedup=round(sequential / parallel, 2) if parallel else 1.0,
        conflict_policy=policy,
    )


def _critical_path(
    tasks: Sequence[PlannedTask], by_id: dict[str, PlannedTask], finish: dict[str, float]
) -> tuple[str, ...]:
    """The chain of dependencies that ends last; ties go to the earlier task in the request."""
    if not tasks:
        return ()
    order = {t.task_id: i for i, t in enumerate(tasks)}

    def latest(ids: Sequence[str]) -> str:
        return max(ids, key=lambda t: (finish[t], -order[t]))

    path = [latest([t.task_id for t in tasks])]
    while by_id[path[-1]].depends_on:
        path.append(latest(by_id[path[-1]].depends_on))
    return tuple(reversed(path))


def _simulate(
    tasks: Sequence[PlannedTask], max_parallel: int, policy: ConflictPolicy
) -> tuple[float, tuple[tuple[str, ...], ...]]:
    """Minutes until every task is done when the scheduler's own policy picks the starts,
    and the waves: the tasks started at each moment something starts, in order."""
    slots = {s.task_id: s for s in _slots(tasks, policy)}
    minutes = {t.task_id: t.estimate_minutes for t in tasks}
    status = dict.fromkeys(slots, TaskStatus.QUEUED)
    waiting = {t.task_id: len(t.depends_on) for t in tasks}
    dependents: dict[str, list[str]] = {t.task_id: [] for t in tasks}
    for task in tasks:
        for dep in task.depends_on:
            dependents[dep].append(task.task_id)
    # Only tasks whose dependencies are done are offered: the policy skips the rest anyway.
    ready = [slots[t] for t, n in waiting.items() if n == 0]
    running: list[tuple[float, int, str]] = []
    waves: list[tuple[str, ...]] = []
    now = 0.0
    while True:
        started = next_to_start(ready, status, max_parallel - len(running))
        if started:
            waves.append(tuple(started))
        for task_id in started:
            status[task_id] = TaskStatus.RUNNING
            heapq.heappush(running, (now + minutes[task_id], slots[task_id].order, task_id))
        ready = [s for s in ready if status[s.task_id] is TaskStatus.QUEUED]
        if not running:
            break
        now = running[0][0]
        while running and running[0][0] == now:
            done = heapq.heappop(running)[2]
            status[done] = TaskStatus.COMPLETED
            for child in dependents[done]:
                waiting[child] -= 1
                if waiting[child] == 0:
                    ready.append(slots[child])
    if ready:
        raise RuntimeError(f"schedule simulation stalled with {len(ready)} tasks ready")
    return now, tuple(waves)


def render_plan(plan: Plan) -> str:
    """The plan as plain text for a terminal of 100 columns."""
    widths = (20, 8, 6, 18, 18, 100 - 70 - 5)  # the footprint takes what is left
    rows = [_row(("id", "type", "est", "depends on", "conflicts with", "footprint"), widths)]
    for t in plan.tasks:
        cells = (t.task_id, t.type, f"{t.estimate_minutes:g}m")
        lists = (t.depends_on, t.conflicts_with, t.footprint)
        rows.append(_row(cells + tuple(map(_summary, lists, widths[3:])), widths))
    total = len(plan.tasks)
    lines = [
        f"Plan: {total} task{'s' if total != 1 else ''}, up to {plan.max_parallel} at once, "
        f"conflict policy {plan.conflict_policy}",
        "",
        *rows,
    ]
    related = sorted(
        f"{t.task_id} ~ {other}" for t in plan.tasks for other in t.related_to if t.task_id < other
    )
    if related:
        lines.append("")
        lines += _wrap(", ".join(related), "Related through imports (not conflicts): ", "  ")
    lines += ["", "Waves (what the scheduler would start together):"]
    for n, wave in enumerate(plan.waves, 1):
        lines += _wrap(", ".join(wave), f"  {n}: ", "     ")
    lines += _wrap(" -> ".join(plan.critical_path) or "-", "Critical path: ", "  ")
    lines.append(
        f"Estimated: {plan.estimated_sequential_minutes:g} min one at a time, "
        f"{plan.estimated_parallel_minutes:g} min in parallel, "
        f"speedup {plan.estimated_speedup:g}x"
    )
    return "\n".join(lines) + "\n"


def _wrap(text: str, first: str, rest: str) -> list[str]:
    return textwrap.wrap(
        text, 100, initial_indent=first, subsequent_indent=rest, break_on_hyphens=False
    )


def _row(cells: Sequence[str], widths: Sequence[int]) -> str:
    return " ".join(_fit(c, w).ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def _summary(items: Sequence[str], width: int) -> str:
    """As many items as fit in ``width``, then how many more: "a, b (+3)"."""
    if not items:
        return "-"
    shown: list[str] = []
    used = 0
    for n, item in enumerate(items):
        more = len(items) - n - 1
        grown = used + len(item) + (2 if shown else 0)
        if grown + (len(f" (+{more})") if more else 0) > width:
            break
        shown.append(item)
        used = grown
    if len(shown) == len(items):
        return ", ".join(shown)
    if not shown:
        suffix = f" (+{len(items) - 1})" if len(items) > 1 else ""
        return _fit(items[0], width - len(suffix)) + suffix
    return ", ".join(shown) + f" (+{len(items) - len(shown)})"
