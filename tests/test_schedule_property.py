"""The scheduler policy driven through a discrete-event simulation, and ``doomed``.

The simulation plays the runner: each step it cancels what ``doomed`` names, asks
``next_to_start`` for as many tasks as there are free slots, then lets the earliest
running task finish (or fail, if the scenario says so). The checks are the policy's
promises, stated from the outside rather than by re-running its algorithm.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gadugi.planning.schedule import Slot, doomed, next_to_start
from gadugi.tasks import TaskStatus

Q, R, C, F = TaskStatus.QUEUED, TaskStatus.RUNNING, TaskStatus.COMPLETED, TaskStatus.FAILED


@dataclass(frozen=True)
class Scenario:
    slots: tuple[Slot, ...]
    minutes: dict[str, int]
    failing: frozenset[str]
    held_at_start: frozenset[str]
    max_parallel: int


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    n = draw(st.integers(1, 10))
    # Dependencies point to earlier tasks in a hidden topological order; the request
    # order is a separate shuffle, so "earlier in the request" is not "a dependency".
    topo = [f"t{i}" for i in range(n)]
    depends = {
        t: tuple(draw(st.sets(st.sampled_from(topo[:i]), max_size=3))) if i else ()
        for i, t in enumerate(topo)
    }
    pairs = draw(st.sets(st.tuples(st.sampled_from(topo), st.sampled_from(topo)), max_size=2 * n))
    conflicts: dict[str, set[str]] = {t: set() for t in topo}
    for a, b in pairs:
        if a != b:
            conflicts[a].add(b)
            conflicts[b].add(a)
    request = draw(st.permutations(topo))
    slots = tuple(
        Slot(
            task_id=t,
            order=i,
            priority=draw(st.integers(-2, 2)),
            depends_on=depends[t],
            conflicts_with=frozenset(conflicts[t]),
        )
        for i, t in enumerate(request)
    )
    return Scenario(
        slots=slots,
        minutes={t: draw(st.integers(1, 5)) for t in topo},
        failing=frozenset(draw(st.sets(st.sampled_from(topo), max_size=2))),
        held_at_start=frozenset(draw(st.sets(st.sampled_from(topo), max_size=2))),
        max_parallel=draw(st.integers(1, 4)),
    )


def ancestors(slots: tuple[Slot, ...], task_id: str) -> set[str]:
    by_id = {s.task_id: s for s in slots}
    found: set[str] = set()
    todo = list(by_id[task_id].depends_on)
    while todo:
        dep = todo.pop()
        if dep not in found:
            found.add(dep)
            todo.extend(by_id[dep].depends_on)
    return found


def ready(slot: Slot, status: Mapping[str, TaskStatus], busy: set[str]) -> bool:
    """Queued, every dependency completed, no conflicting task in ``busy``."""
    return (
        status[slot.task_id] is Q
        and all(status[d] is C for d in slot.depends_on)
        and not slot.conflicts_with & busy
    )


def check_step(
    sc: Scenario,
    status: dict[str, TaskStatus],
    running: set[str],
    held: frozenset[str],
    started: list[str],
) -> None:
    free = sc.max_parallel - len(running)
    rank = {s.task_id: (-s.priority, s.order) for s in sc.slots}
    assert len(started) == len(set(started)) <= max(free, 0)
    assert not held & set(started)
    for i, task_id in enumerate(started):
        slot = next(s for s in sc.slots if s.task_id == task_id)
        others = running | set(started[:i]) | set(started[i + 1 :])
        assert status[task_id] is Q
        assert all(status[d] is C for d in slot.depends_on), "started before a dependency"
        assert not slot.conflicts_with & others, "started beside a conflicting task"
    busy = running | set(started)
    if len(busy) < sc.max_parallel:
        idle = [
            s.task_id
            for s in sc.slots
            if s.task_id not in held and s.task_id not in busy and ready(s, status, busy)
        ]
        assert not idle, f"a slot stays free while {idle} could start"
    for slot in sc.slots:
        skipped = slot.task_id not in started and slot.task_id not in held
        if skipped and ready(slot, status, running):
            # A skipped ready task must have lost to a better-ranked pick it conflicts
            # with, or have found the slots full: no worse-ranked task went first.
            better = {t for t in started if rank[t] < rank[slot.task_id]}
            worse = {t for t in started if rank[t] > rank[slot.task_id]}
            assert slot.conflicts_with & better or not worse, (slot.task_id, started)


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_simulated_runs_keep_every_promise_of_the_policy(sc: Scenario) -> None:
    status = {s.task_id: Q for s in sc.slots}
    ends: dict[str, int] = {}
    now, step = 0, 0
    while True:
        for task_id, cause in doomed(sc.slots, status).items():
            assert status[cause] is F
            assert cause in ancestors(sc.slots, task_id)
            status[task_id] = TaskStatus.CANCELLED
        held = sc.held_at_start if step == 0 else frozenset()
        running = {t for t, s in status.items() if s is R}
        started = next_to_start(sc.slots, status, sc.max_parallel - len(running), held)
        check_step(sc, status, running, held, started)
        for task_id in started:
            status[task_id] = R
            ends[task_id] = now + sc.minutes[task_id]
        if not ends and not held:
            break
        step += 1
        if not ends:
            continue  # only held tasks were waiting: their back-off ends now
        now = min(ends.values())
        for task_id in [t for t, end in ends.items() if end == now]:
            del ends[task_id]
            status[task_id] = F if task_id in sc.failing else C
    # Everything finished: nothing is stuck in the queue.
    for slot in sc.slots:
        blocked = ancestors(sc.slots, slot.task_id) & sc.failing
        if slot.task_id in sc.failing and not blocked:
            assert status[slot.task_id] is F
        elif blocked:
            assert status[slot.task_id] is TaskStatus.CANCELLED
        else:
            assert status[slot.task_id] is C


def test_no_free_slot_starts_nothing() -> None:
    slots = [Slot("a", 0)]
    assert next_to_start(slots, {"a": Q}, 0) == []
    assert next_to_start(slots, {"a": Q}, -1) == []
    assert next_to_start(slots, {"a": Q}, 1) == ["a"]


def test_priority_then_request_order() -> None:
    slots = [Slot("a", 0), Slot("b", 1, priority=2), Slot("c", 2), Slot("d", 3, priority=2)]
    status = dict.fromkeys("abcd", Q)
    assert next_to_start(slots, status, 3) == ["b", "d", "a"]


# -- doomed -----------------------------------------------------------------------


def chain(n: int) -> list[Slot]:
    return [Slot(f"t{i}", i, depends_on=(f"t{i - 1}",) if i else ()) for i in range(n)]


@pytest.mark.parametrize("broken", [F, TaskStatus.TIMEOUT, TaskStatus.CANCELLED])
def test_a_broken_dependency_dooms_the_chain_naming_it(broken: TaskStatus) -> None:
    slots = chain(4)
    status = {"t0": C, "t1": broken, "t2": Q, "t3": Q}
    assert doomed(slots, status) == {"t2": "t1", "t3": "t1"}


def test_diamond_names_the_failed_branch_and_spares_others() -> None:
    slots = [
        Slot("a", 0),
        Slot("b", 1, depends_on=("a",)),
        Slot("c", 2, depends_on=("a",)),
        Slot("d", 3, depends_on=("b", "c")),
        Slot("e", 4, depends_on=("b",)),
    ]
    status = {"a": C, "b": C, "c": F, "d": Q, "e": Q}
    assert doomed(slots, status) == {"d": "c"}


def test_only_queued_tasks_are_doomed() -> None:
    slots = chain(3)
    assert doomed(slots, {"t0": F, "t1": R, "t2": Q}) == {"t2": "t0"}
    assert doomed(slots, {"t0": F, "t1": TaskStatus.CANCELLED, "t2": Q}) == {"t2": "t1"}
    assert doomed(slots, {"t0": C, "t1": R, "t2": Q}) == {}
    assert doomed(slots, {"t0": Q, "t1": Q, "t2": Q}) == {}


def test_a_failed_dependency_outside_the_plan_still_dooms() -> None:
    slots = [Slot("b", 0, depends_on=("elsewhere",))]
    assert doomed(slots, {"elsewhere": F, "b": Q}) == {"b": "elsewhere"}


class CountingStatus(Mapping[str, TaskStatus]):
    def __init__(self, data: dict[str, TaskStatus]) -> None:
        self.data = data
        self.lookups = 0

    def __getitem__(self, key: str) -> TaskStatus:
        self.lookups += 1
        return self.data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)


def test_doomed_handles_a_long_chain() -> None:
    slots = list(reversed(chain(1200)))
    assert doomed(slots, dict.fromkeys((s.task_id for s in slots), Q)) == {}


def test_doomed_visits_each_dependency_a_bounded_number_of_times() -> None:
    slots: list[Slot] = []
    previous: tuple[str, ...] = ()
    for layer in range(12):
        pair = (f"a{layer}", f"b{layer}")
        slots += [Slot(t, len(slots) + k, depends_on=previous) for k, t in enumerate(pair)]
        previous = pair
    status = CountingStatus(dict.fromkeys((s.task_id for s in slots), Q))
    assert doomed(slots, status) == {}
    edges = sum(len(s.depends_on) for s in slots)
    assert status.lookups <= 4 * (edges + len(slots))
