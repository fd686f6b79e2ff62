"""The scheduler policy driven through a discrete-event simulation, and ``doomed``.

Every conflict policy is played: ``stack`` and ``serialize`` never run two conflicting
tasks together; under ``stack`` the later of a pair never starts before the earlier
one finished, and an earlier one that failed never dooms the later.

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

from gadugi.planning.schedule import (
    Slot,
    doomed,
    next_to_start,
    stack_order,
    waiting_reasons,
    with_policy,
)
from gadugi.tasks import ConflictPolicy, TaskStatus

Q, R, C, F = TaskStatus.QUEUED, TaskStatus.RUNNING, TaskStatus.COMPLETED, TaskStatus.FAILED


@dataclass(frozen=True)
class Scenario:
    slots: tuple[Slot, ...]
    minutes: dict[str, int]
    failing: frozenset[str]
    held_at_start: frozenset[str]
    max_parallel: int
    policy: ConflictPolicy = ConflictPolicy.SERIALIZE


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
    policy = draw(st.sampled_from(list(ConflictPolicy)))
    slots = with_policy(
        [
            Slot(
                task_id=t,
                order=i,
                priority=draw(st.integers(-2, 2)),
                depends_on=depends[t],
                conflicts_with=frozenset(conflicts[t]),
            )
            for i, t in enumerate(request)
        ],
        policy,
    )
    return Scenario(
        slots=tuple(slots),
        minutes={t: draw(st.integers(1, 5)) for t in topo},
        failing=frozenset(draw(st.sets(st.sampled_from(topo), max_size=2))),
        held_at_start=frozenset(draw(st.sets(st.sampled_from(topo), max_size=2))),
        max_parallel=draw(st.integers(1, 4)),
        policy=policy,
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
    """Queued, every dependency completed, and its conflicts allow it: none in ``busy``
    (but under optimistic), and under stack every earlier one of its pairs finished."""
    if status[slot.task_id] is not Q or not all(status[d] is C for d in slot.depends_on):
        return False
    if slot.policy is ConflictPolicy.OPTIMISTIC:
        return True
    return not slot.conflicts_with & busy and all(status[e].finished for e in slot.after)


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
        if sc.policy is not ConflictPolicy.OPTIMISTIC:
            assert not slot.conflicts_with & others, "started beside a conflicting task"
        assert all(status[e].finished for e in slot.after), "started before its stack"
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
            lost = sc.policy is not ConflictPolicy.OPTIMISTIC and slot.conflicts_with & better
            assert lost or not worse, (slot.task_id, started)
    # Every task still queued says why, and the reason names what holds it.
    after = {t: status[t] for t in status} | dict.fromkeys(started, R)
    reasons = waiting_reasons(sc.slots, after, sc.max_parallel, dict.fromkeys(held, "held"))
    assert set(reasons) == {t for t, s in after.items() if s is Q}
    for slot in sc.slots:
        why = reasons.get(slot.task_id)
        if why is not None and any(after[d] is not C for d in slot.depends_on):
            assert why.startswith("waiting for dependency"), why
        elif why is not None and slot.task_id not in held and ready(slot, after, busy):
            assert why.startswith("waiting for a slot"), why


def check_stack_edges(sc: Scenario) -> None:
    """Under stack, each conflicting pair has exactly one edge, from the earlier task;
    under the other policies there are none."""
    by_id = {s.task_id: s for s in sc.slots}
    position = stack_order(sc.slots)
    for slot in sc.slots:
        if sc.policy is not ConflictPolicy.STACK:
            assert slot.after == ()
            continue
        for other in slot.conflicts_with:
            edges = (other in slot.after) + (slot.task_id in by_id[other].after)
            assert edges == 1
        assert all(position[e] < position[slot.task_id] for e in slot.after)
        assert all(position[d] < position[slot.task_id] for d in slot.depends_on)


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_simulated_runs_keep_every_promise_of_the_policy(sc: Scenario) -> None:
    check_stack_edges(sc)
    status = {s.task_id: Q for s in sc.slots}
    ends: dict[str, int] = {}
    spans: dict[str, tuple[int, int]] = {}
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
            spans[task_id] = (now, ends[task_id])
        if not ends and not held:
            break
        step += 1
        if not ends:
            continue  # only held tasks were waiting: their back-off ends now
        now = min(ends.values())
        for task_id in [t for t, end in ends.items() if end == now]:
            del ends[task_id]
            status[task_id] = F if task_id in sc.failing else C
    # A stacked task started only once every earlier task of its pairs had ended.
    for slot in sc.slots:
        for earlier in slot.after:
            if slot.task_id in spans and earlier in spans:
                assert spans[slot.task_id][0] >= spans[earlier][1]
    # Everything finished: nothing is stuck in the queue, and a failed earlier task of
    # a stack dooms nothing (only dependencies do).
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


# -- conflict policies and waiting reasons ----------------------------------------


def pair(policy: ConflictPolicy, priority: int = 0) -> list[Slot]:
    return with_policy(
        [
            Slot("a", 0, priority, conflicts_with=frozenset({"b"})),
            Slot("b", 1, conflicts_with=frozenset({"a"})),
        ],
        policy,
    )


def test_stack_puts_the_later_task_after_the_earlier_one() -> None:
    a, b = pair(ConflictPolicy.STACK)
    assert (a.after, b.after) == ((), ("a",))
    a, b = pair(ConflictPolicy.STACK, priority=-1)  # lower priority goes later
    assert (a.after, b.after) == (("b",), ())
    status = {"a": Q, "b": Q}
    assert next_to_start(pair(ConflictPolicy.STACK), status, 2) == ["a"]
    # The earlier one failed: the later one still runs (an ordering, not a dependency).
    assert next_to_start(pair(ConflictPolicy.STACK), {"a": F, "b": Q}, 2) == ["b"]
    assert doomed(pair(ConflictPolicy.STACK), {"a": F, "b": Q}) == {}


def test_stack_order_follows_dependencies_before_priority() -> None:
    slots = [
        Slot("low", 0, priority=0, conflicts_with=frozenset({"high"})),
        Slot("high", 1, priority=9, depends_on=("base",), conflicts_with=frozenset({"low"})),
        Slot("base", 2, priority=0),
    ]
    stacked = {s.task_id: s for s in with_policy(slots, ConflictPolicy.STACK)}
    assert stack_order(slots) == {"low": 0, "base": 1, "high": 2}
    assert stacked["high"].after == ("low",)


def test_serialize_and_optimistic() -> None:
    status = {"a": R, "b": Q}
    assert next_to_start(pair(ConflictPolicy.SERIALIZE), status, 2) == []
    assert next_to_start(pair(ConflictPolicy.SERIALIZE), {"a": Q, "b": Q}, 2) == ["a"]
    assert next_to_start(pair(ConflictPolicy.OPTIMISTIC), {"a": Q, "b": Q}, 2) == ["a", "b"]


def test_waiting_reasons_name_what_each_queued_task_waits_for() -> None:
    slots = with_policy(
        [
            Slot("dep", 0),
            Slot("child", 1, depends_on=("dep",)),
            Slot("first", 2, conflicts_with=frozenset({"second"})),
            Slot("second", 3, conflicts_with=frozenset({"first"})),
            Slot("free", 4),
            Slot("backoff", 5),
        ],
        ConflictPolicy.STACK,
    )
    status = {"dep": R, "child": Q, "first": R, "second": Q, "free": Q, "backoff": Q}
    held = {"backoff": "retry back-off until 12:00:00"}
    assert waiting_reasons(slots, status, 2, held) == {
        "child": "waiting for dependency dep (running)",
        "second": "stacked after first (running): starts from its branch once it completes",
        "free": "waiting for a slot: 2 of 2 running",
        "backoff": "retry back-off until 12:00:00",
    }
    blocked = waiting_reasons(slots, status, 4, held, "load 9.0 per CPU is above 3.0")
    assert blocked["free"] == "load 9.0 per CPU is above 3.0"
    serial = with_policy(slots, ConflictPolicy.SERIALIZE)
    assert waiting_reasons(serial, status, 4)["second"] == (
        "waiting for conflicting task first (running)"
    )
