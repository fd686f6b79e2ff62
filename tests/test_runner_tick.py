"""The loop stepped by hand: scripted histories through ``Runner.tick(now)``.

A real registry (SQLite on tmp_path), real layout and shell profile; fake processes,
worktrees, clock and machine readings that record what the loop asked of them. No
sleeping, no agent processes, no git.
"""

from __future__ import annotations

import errno
import json
import math
import os
import signal
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from fakes import Clock, FakeProcesses, FakeWorktrees, Machine
from gadugi import procs
from gadugi.agents import AgentContext, AgentProfile, Launch, Outcome, profile_for
from gadugi.config import OrchestrationConfig
from gadugi.errors import SpawnError, WorktreeError
from gadugi.health import Admission
from gadugi.lifecycle import LostRace
from gadugi.monitoring import Monitor
from gadugi.planning.schedule import Slot, with_policy
from gadugi.promptgen import load_template
from gadugi.registry import OwnerChanged, Registry
from gadugi.runner import Layout, Runner, TaskRun
from gadugi.tasks import ConflictPolicy, Prompt, TaskStatus

T0 = 1_700_000_000.0
ORCH = "orch-20231114-221320-beef"
BASE = "b" * 40
OWNER = "me-token"
SHELL_BODY = "# task\n\n```sh\ntrue\n```\n"


class UsageLimited(AgentProfile):
    """The shell agent, except that its first attempt meets a usage limit resetting at
    ``reset_at`` (what the claude profile reports as ``retry_after``)."""

    name = "usage-limited"

    def __init__(self, reset_at: float) -> None:
        self.reset_at = reset_at
        self.judged: list[int] = []

    def prepare(self, ctx: AgentContext, prompt: Prompt) -> Launch:
        return profile_for("shell", OrchestrationConfig(agent="shell")).prepare(ctx, prompt)

    def judge(self, ctx: AgentContext, exit_code: int) -> Outcome:
        self.judged.append(exit_code)
        if len(self.judged) == 1:
            return Outcome(False, error="usage limit reached", agent={"retry_after": self.reset_at})
        return Outcome(exit_code == 0, error=None if exit_code == 0 else "failed")


def task(
    task_id: str,
    *,
    priority: int = 0,
    depends_on: tuple[str, ...] = (),
    timeout_minutes: float | None = None,
    retries: int | None = None,
) -> Prompt:
    return Prompt(
        path=Path(f"/nowhere/prompts/{task_id}.md"),
        rel_path=f"prompts/{task_id}.md",
        task_id=task_id,
        title=task_id,
        body=SHELL_BODY,
        text=SHELL_BODY,
        depends_on=depends_on,
        priority=priority,
        timeout_minutes=timeout_minutes,
        retries=retries,
    )


class Rig:
    """One orchestration recorded in a real registry, its runner wired to fakes."""

    def __init__(
        self,
        root: Path,
        prompts: list[Prompt],
        profile: AgentProfile | None = None,
        **config: Any,
    ) -> None:
        self.config = OrchestrationConfig(
            **{"agent": "shell", "stall_timeout_minutes": None, **config}
        )
        self.clock = Clock(T0)
        self.procs = FakeProcesses()
        self.worktrees = FakeWorktrees(root)
        self.machine = Machine()
        self.layout = Layout(
            root=root,
            orchestration_id=ORCH,
            worktrees_dir=root / ".worktrees",
            logs_dir=root / ".gadugi/logs" / ORCH,
            prompts_dir=root / ".gadugi/prompts" / ORCH,
        )
        for path in (self.layout.worktrees_dir, self.layout.logs_dir, self.layout.prompts_dir):
            path.mkdir(parents=True, exist_ok=True)  # as OrchestratorCoordinator._create does
        agent = profile or profile_for("shell", self.config)
        # As OrchestratorCoordinator._task_runs builds them from a plan.
        runs = [
            TaskRun(
                prompt=p,
                slot=Slot(p.task_id, n, p.priority, p.depends_on),
                profile=agent,
                timeout_s=(
                    p.timeout_minutes * 60 if p.timeout_minutes else self.config.timeout_seconds
                ),
                retries_left=p.retries if p.retries is not None else self.config.retries,
            )
            for n, p in enumerate(prompts)
        ]
        self.registry = Registry(root / ".gadugi/state.db")
        self.registry.create_orchestration(
            ORCH,
            root,
            BASE,
            asdict(self.config),
            os.getpid(),
            None,
            False,
            [
                {
                    "task_id": r.task_id,
                    "name": r.prompt.title,
                    "prompt_file": r.prompt.rel_path,
                    "priority": r.slot.priority,
                    "depends_on": list(r.slot.depends_on),
                }
                for r in runs
            ],
            owner=OWNER,
        )
        # Another terminal: `gadugi cancel`, `gadugi resume`, `gadugi status`.
        self.other = Registry(root / ".gadugi/state.db")
        self.runner = Runner(
            self.layout,
            runs,
            self.config,
            self.registry,
            self.worktrees,
            load_template(root),
            BASE,
            owner=OWNER,
            clock=self.clock,
            processes=self.procs,
            admission=Admission(
                self.config.min_available_memory_mb,
                self.config.max_load_per_cpu,
                read=self.machine,
            ),
        )

    def step(self, at: float) -> bool:
        self.clock.now = at
        return self.runner.tick(at)

    def exit(self, task_id: str, code: int, said: str | None = None) -> None:
        """The agent of ``task_id`` ends with ``code``, its last log line ``said``."""
        if said is not None:
            with (self.layout.logs_dir / f"{task_id}.log").open("a") as fh:
                fh.write(f"{said}\n")
        self.procs.child(task_id).end(code, self.clock.now)

    def row(self, task_id: str) -> dict[str, Any]:
        return self.other.find_task(task_id, ORCH)

    def status(self, task_id: str) -> TaskStatus:
        return TaskStatus(self.row(task_id)["status"])

    def attempts(self, task_id: str) -> list[tuple[int, str, int | None]]:
        """(number, status, exit code) of each recorded attempt."""
        return [
            (a["number"], a["status"], a["exit_code"])
            for a in self.other.attempts(ORCH)
            if a["task_id"] == task_id
        ]

    def hold_until(self, task_id: str) -> float:
        return self.runner.by_id[task_id].hold_until

    def close(self) -> None:
        self.runner.exits.close()
        self.registry.close()
        self.other.close()


MakeRig = Callable[..., Rig]


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[MakeRig]:
    made: list[Rig] = []

    def make(prompts: list[Prompt], profile: AgentProfile | None = None, **config: Any) -> Rig:
        made.append(Rig(tmp_path, prompts, profile, **config))
        return made[-1]

    yield make
    for r in made:
        r.close()


R, Q, C = TaskStatus.RUNNING, TaskStatus.QUEUED, TaskStatus.COMPLETED
F, T, X = TaskStatus.FAILED, TaskStatus.TIMEOUT, TaskStatus.CANCELLED


def test_starts_best_first_up_to_the_limit_and_fills_a_freed_slot_in_the_same_tick(
    rig: MakeRig,
) -> None:
    r = rig(
        [task("a"), task("b", priority=5), task("c"), task("d", priority=1)],
        max_parallel_tasks=2,
    )
    assert r.step(T0)
    assert r.procs.spawned() == ["b", "d"]
    assert [r.status(t) for t in "abcd"] == [Q, R, Q, R]
    assert r.step(T0 + 1)
    assert r.procs.spawned() == ["b", "d"]

    r.exit("b", 0)
    assert r.step(T0 + 2)
    assert r.procs.spawned() == ["b", "d", "a"]  # b's slot went to a in the tick b ended
    assert [r.status(t) for t in "abcd"] == [R, C, Q, R]
    # b ended at T0 + 1 (its supervisor's record), not when the T0 + 2 tick noticed.
    assert r.row("b")["completed_at"] == T0 + 1
    assert r.worktrees.removed == ["b"]  # completed, all committed: its worktree goes

    r.exit("a", 0)
    r.exit("d", 0)
    assert r.step(T0 + 3)
    assert r.procs.spawned() == ["b", "d", "a", "c"]
    r.exit("c", 0)
    assert not r.step(T0 + 4)  # every task finished
    assert [r.attempts(t) for t in "abcd"] == [[(1, "completed", 0)]] * 4
    assert r.procs.signals == []


def test_dependents_start_from_their_dependencies_branches_once_those_completed(
    rig: MakeRig,
) -> None:
    r = rig([task("a"), task("b"), task("c", depends_on=("a", "b"))])
    r.step(T0)
    assert r.procs.spawned() == ["a", "b"]  # c waits, though a slot is free
    r.exit("a", 0)
    r.step(T0 + 1)
    assert r.procs.spawned() == ["a", "b"]
    r.exit("b", 0)
    r.step(T0 + 2)
    assert r.procs.spawned() == ["a", "b", "c"]
    a_branch, b_branch, c_branch = (r.row(t)["branch"] for t in "abc")
    assert r.worktrees.created[-1][::2] == ("c", c_branch)
    assert r.worktrees.created[-1][3] == a_branch  # branched from the first dependency
    assert r.worktrees.merged == [("c", [b_branch])]  # the others merged in
    assert r.row("c")["base_commit"] == f"head-of-{c_branch}"


def test_timeout_terms_at_the_deadline_and_kills_after_the_grace_without_blocking(
    rig: MakeRig,
) -> None:
    r = rig(
        [task("stubborn", timeout_minutes=1), task("polite", timeout_minutes=1)],
        kill_grace_seconds=5,
    )
    r.procs.stubborn = {"stubborn"}
    r.step(T0)
    r.step(T0 + 59.9)
    assert r.procs.signals == []

    r.step(T0 + 60)
    assert r.procs.signals == [("stubborn", signal.SIGTERM), ("polite", signal.SIGTERM)]
    assert r.status("stubborn") is R  # still stopping: the tick did not wait for it
    r.step(T0 + 61)
    assert r.status("polite") is T
    assert r.row("polite")["error_message"] == "timed out after 1 minutes"

    r.step(T0 + 64.9)
    assert ("stubborn", signal.SIGKILL) not in r.procs.signals
    assert r.status("stubborn") is R
    r.step(T0 + 65)
    assert r.procs.signals[2:] == [("stubborn", signal.SIGKILL)]
    assert not r.step(T0 + 65.1)
    assert r.status("stubborn") is T
    # Ended by a signal: no exit code (the error says what happened).
    assert r.row("stubborn")["exit_code"] is None
    assert r.attempts("stubborn") == [(1, "timeout", None)]
    assert r.attempts("polite") == [(1, "timeout", None)]
    assert r.procs.terminated == []  # never the blocking stop


def test_a_transient_exit_backs_off_then_retries_until_the_budget_is_spent(rig: MakeRig) -> None:
    r = rig([task("flaky", retries=2)], retry_base_delay_seconds=10)
    r.step(T0)
    r.exit("flaky", 75)
    r.step(T0 + 1)
    held = r.hold_until("flaky")
    # Counted from the exit (at T0, as its supervisor saw it), not from the tick that saw it.
    assert T0 + 5 <= held <= T0 + 10  # base delay, jittered down to half
    row = r.row("flaky")
    assert (row["status"], row["not_before"], row["attempts"]) == ("queued", held, 1)
    assert row["error_message"].startswith("agent asked for a retry (exit 75); retrying in")

    r.step(held - 0.01)
    assert r.procs.spawned() == ["flaky"]
    r.step(held)
    assert r.procs.spawned() == ["flaky", "flaky"]
    row = r.row("flaky")
    assert (row["status"], row["not_before"], row["attempts"]) == ("running", None, 2)

    r.exit("flaky", 75)
    r.step(held + 1)
    second = r.hold_until("flaky")
    assert held + 10 <= second <= held + 20  # the delay doubles
    r.step(second)
    r.exit("flaky", 75, said="server busy")
    assert not r.step(second + 1)  # two retries spent: the third exit 75 fails the task
    row = r.row("flaky")
    assert (row["status"], row["attempts"], row["exit_code"]) == ("failed", 3, 75)
    assert row["error_message"] == "agent asked for a retry (exit 75): server busy"
    assert r.attempts("flaky") == [(1, "retrying", 75), (2, "retrying", 75), (3, "failed", 75)]


def test_a_stall_with_stall_action_warn_is_reported_and_clears_on_output(rig: MakeRig) -> None:
    r = rig([task("quiet")], stall_timeout_minutes=1, stall_action="warn")
    r.step(T0)
    r.step(T0 + 59)
    assert r.row("quiet")["error_message"] is None
    r.step(T0 + 61)
    row = r.row("quiet")
    assert row["status"] == "running"
    assert row["error_message"] == "stalled: no output or agent event for 1.0 minutes"
    assert r.procs.signals == []

    (r.layout.logs_dir / "quiet.log").write_text("working again\n")
    r.step(T0 + 62)
    assert r.row("quiet")["error_message"] is None
    beat = r.runner.heartbeat_fields()["quiet"]  # what the monitor flushes to the registry
    assert (beat["last_heartbeat"], beat["last_line"]) == (T0 + 62, "working again")
    r.exit("quiet", 0)
    assert not r.step(T0 + 63)
    assert r.status("quiet") is C


def test_a_stall_with_stall_action_restart_requeues_and_costs_a_retry(rig: MakeRig) -> None:
    r = rig([task("quiet", retries=1)], stall_timeout_minutes=1, stall_action="restart")
    r.step(T0)
    r.step(T0 + 61)
    assert r.procs.signals == [("quiet", signal.SIGTERM)]
    r.step(T0 + 62)  # stopped: re-queued and started again in one tick
    assert r.procs.spawned() == ["quiet", "quiet"]
    assert r.attempts("quiet") == [(1, "stalled", None), (2, "running", None)]
    assert r.row("quiet")["attempts"] == 2

    r.step(T0 + 62 + 61)
    assert r.procs.signals[1:] == [("quiet", signal.SIGTERM)]
    assert not r.step(T0 + 62 + 62)  # the one retry is spent
    row = r.row("quiet")
    assert row["status"] == "failed"
    assert row["error_message"] == (
        "stalled: no output or agent event for 1.0 minutes; no retries left"
    )
    assert r.attempts("quiet")[-1] == (2, "failed", None)


def test_a_usage_limit_parks_the_task_until_the_reset_and_costs_no_retry(rig: MakeRig) -> None:
    reset = T0 + 3600
    profile = UsageLimited(reset)
    r = rig([task("limited", retries=0)], profile, usage_limit_margin_seconds=0)
    r.step(T0)
    r.exit("limited", 1)
    r.step(T0 + 10)
    row = r.row("limited")
    assert (row["status"], row["not_before"]) == ("queued", reset)  # resume reads it
    assert row["error_message"].startswith("usage limit of usage-limited: resets at ")
    assert r.attempts("limited") == [(1, "parked", 1)]

    r.step(reset - 1)
    assert r.procs.spawned() == ["limited"]
    r.step(reset)
    assert r.procs.spawned() == ["limited", "limited"]  # with no retries to spend
    assert r.row("limited")["not_before"] is None
    r.exit("limited", 0)
    assert not r.step(reset + 1)
    assert r.status("limited") is C
    assert r.attempts("limited") == [(1, "parked", 1), (2, "completed", 0)]


def test_a_cancel_request_stops_a_running_task_and_cancels_a_queued_one(rig: MakeRig) -> None:
    r = rig([task("running"), task("waiting")], max_parallel_tasks=1, kill_grace_seconds=5)
    r.procs.stubborn = {"running"}
    r.step(T0)
    r.other.request_cancel(ORCH, "running", "alice")
    r.other.request_cancel(ORCH, "waiting", "alice")
    assert r.procs.signals == []  # a request only: the owner's next tick acts on it

    r.step(T0 + 1)
    assert r.procs.signals == [("running", signal.SIGTERM)]
    assert r.status("waiting") is X
    assert r.row("waiting")["error_message"] == "cancelled by alice"
    r.step(T0 + 3)
    assert r.procs.signals == [("running", signal.SIGTERM)]  # asked once, not every tick
    r.step(T0 + 6)
    assert r.procs.signals[1:] == [("running", signal.SIGKILL)]
    assert not r.step(T0 + 6.1)
    row = r.row("running")
    assert (row["status"], row["error_message"]) == ("cancelled", "cancelled by alice")
    assert r.attempts("running") == [(1, "cancelled", None)]
    assert r.procs.spawned() == ["running"]
    assert r.attempts("waiting") == []


def test_a_failed_dependency_cancels_its_dependents_in_the_same_tick(rig: MakeRig) -> None:
    r = rig([task("a"), task("b", depends_on=("a",)), task("c", depends_on=("b",)), task("d")])
    r.step(T0)
    assert r.procs.spawned() == ["a", "d"]
    r.exit("a", 1)
    r.step(T0 + 1)
    assert [r.status(t) for t in "abcd"] == [F, X, X, R]
    assert r.row("b")["error_message"] == "cancelled: dependency a failed"
    assert r.row("c")["error_message"] == "cancelled: dependency a failed"
    assert r.procs.spawned() == ["a", "d"]


def test_too_little_memory_holds_new_starts_while_running_tasks_go_on(rig: MakeRig) -> None:
    r = rig([task("a"), task("b"), task("c")], max_parallel_tasks=2)
    r.step(T0)
    assert r.procs.spawned() == ["a", "b"]

    r.machine.available_mb = 100
    r.exit("a", 0)
    r.step(T0 + 1)
    waiting = "waiting for memory: 100 MB available, floor 256 MB"
    assert r.status("a") is C
    assert r.procs.spawned() == ["a", "b"]
    assert r.other.orchestration(ORCH)["note"] == waiting
    r.step(T0 + 2)
    assert r.procs.spawned() == ["a", "b"]
    assert r.status("b") is R
    assert r.procs.signals == []

    r.machine.available_mb = 4000
    r.step(T0 + 3)
    assert r.procs.spawned() == ["a", "b", "c"]
    assert r.other.orchestration(ORCH)["note"] is None


def test_an_interrupt_stops_every_running_task_and_cancels_the_queued(rig: MakeRig) -> None:
    r = rig([task("a"), task("b"), task("c")], max_parallel_tasks=2)
    r.step(T0)
    r.runner.interrupt(signal.SIGINT)
    assert r.procs.terminated == []  # the handler only notes the request

    assert not r.step(T0 + 1)  # both polite: gone within the tick that stopped them
    assert r.procs.signals == [("a", signal.SIGTERM), ("b", signal.SIGTERM)]
    assert r.procs.terminated == []  # never the blocking stop
    why = "cancelled: orchestrator interrupted (SIGINT)"
    for t in "abc":
        row = r.row(t)
        assert (row["status"], row["error_message"]) == ("cancelled", why)
    assert r.attempts("a") == [(1, "cancelled", None)]
    assert r.procs.spawned() == ["a", "b"]


def _everything(r: Rig) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    return r.other.tasks(ORCH), r.other.attempts(ORCH)


def test_after_a_take_over_the_old_owner_s_next_write_raises_and_writes_nothing(
    rig: MakeRig,
) -> None:
    r = rig([task("a"), task("b")], max_parallel_tasks=1)
    r.step(T0)
    r.other.take_over(ORCH, 1, None, owner="other")
    before = _everything(r)

    r.exit("a", 0)
    with pytest.raises(LostRace):
        r.step(T0 + 1)
    assert _everything(r) == before
    assert r.procs.spawned() == ["a"]


def test_after_a_take_over_the_old_owner_records_nothing(rig: MakeRig) -> None:
    r = rig([task("a")], stall_timeout_minutes=1)
    r.step(T0)
    r.other.take_over(ORCH, 1, None, owner="other")
    before = _everything(r)

    with pytest.raises(OwnerChanged):
        r.step(T0 + 61)  # the stall warning is the first write
    assert _everything(r) == before


def test_after_a_take_over_the_old_owner_starts_nothing(rig: MakeRig) -> None:
    r = rig([task("a")])
    r.other.take_over(ORCH, 1, None, owner="other")
    before = _everything(r)
    with pytest.raises((OwnerChanged, LostRace)):
        r.step(T0)
    assert _everything(r) == before
    assert r.procs.spawned() == []


# -- processes: out of them, interrupted while git runs ------------------------------------


@dataclass
class FullTable(FakeProcesses):
    """Each spawn takes the next of ``fails``: True means fork found no process left."""

    fails: list[bool] = field(default_factory=list)

    def spawn(
        self,
        argv: Sequence[str],
        cwd: Path,
        env: dict[str, str],
        stdout: Path,
        stderr: Path,
        result_file: Path,
        limits: dict[int, int],
    ) -> procs.Child:
        if self.fails and self.fails.pop(0):
            raise SpawnError(argv[0], errno.EAGAIN)
        return super().spawn(argv, cwd, env, stdout, stderr, result_file, limits)


def _use(r: Rig, processes: FakeProcesses) -> None:
    r.procs = r.runner.procs = processes


def test_a_spawn_out_of_processes_lowers_parallelism_and_backs_off(rig: MakeRig) -> None:
    r = rig([task("a"), task("b"), task("c")], max_parallel_tasks=3)
    _use(r, FullTable(fails=[False, True]))
    assert r.step(T0)
    # b found the table full: it waits, and so does c (at most as many as run now).
    assert r.procs.spawned() == ["a"]
    assert [r.status(t) for t in "abc"] == [R, Q, Q]
    assert r.runner.parallel == 1
    assert r.hold_until("b") == T0 + 0.5
    assert "Resource temporarily unavailable; trying again in 0.5s" in r.row("b")["error_message"]
    r.step(T0 + 1)
    assert r.procs.spawned() == ["a"]
    r.exit("a", 0)
    r.step(T0 + 2)
    assert r.procs.spawned() == ["a", "b"]
    assert r.runner.parallel == 2  # each good start gives one back
    r.step(T0 + 3)
    assert r.procs.spawned() == ["a", "b", "c"]
    assert r.runner.parallel == 3
    for t in "bc":
        r.exit(t, 0)
    assert not r.step(T0 + 4)
    assert [r.status(t) for t in "abc"] == [C, C, C]


class GitOutOfProcesses(FakeWorktrees):
    """``commits_ahead`` finds no process left for git, ``failures`` times."""

    failures = 1

    def commits_ahead(self, branch: str, base: str) -> int:
        if self.failures:
            self.failures -= 1
            raise SpawnError("git", errno.EAGAIN)
        return super().commits_ahead(branch, base)


def test_a_loop_step_out_of_processes_pauses_and_is_taken_again(rig: MakeRig) -> None:
    r = rig([task("a")])
    r.worktrees = r.runner.worktrees = GitOutOfProcesses(r.layout.root)
    r.step(T0)
    r.exit("a", 0)  # at T0
    assert r.step(T0 + 1)  # no traceback, no healthy task killed, nothing half-written
    assert r.status("a") is R and r.attempts("a") == [(1, "running", None)]
    assert r.step(T0 + 1.2)  # still backing off
    assert r.status("a") is R
    assert not r.step(T0 + 2)
    row = r.row("a")
    assert (row["status"], row["commits"], row["completed_at"]) == ("completed", 0, T0)
    assert r.worktrees.removed == ["a"]


def test_a_supervisor_that_could_not_fork_the_agent_requeues_it(rig: MakeRig) -> None:
    r = rig([task("a"), task("b")], max_parallel_tasks=2)
    r.step(T0)
    r.procs.child("a").exit = procs.Exit(None, None, T0 + 0.5, start_errno=errno.EAGAIN)
    r.step(T0 + 1)
    assert r.status("a") is Q and r.runner.parallel == 1
    assert r.attempts("a") == [(1, "not started", None)]
    assert "could not start: Resource temporarily unavailable" in r.row("a")["error_message"]
    r.exit("b", 0)
    r.step(T0 + 2)
    assert r.procs.spawned() == ["a", "b", "a"]
    assert r.attempts("a")[-1] == (2, "running", None)


class InterruptedWhileGitRuns(FakeWorktrees):
    """Ctrl-C arrives while git makes the worktree (the handler only sets a flag)."""

    runner: Runner | None = None

    def create(self, task_id: str, path: Path, branch: str, base: str) -> None:
        super().create(task_id, path, branch, base)
        assert self.runner is not None
        self.runner.interrupt(signal.SIGINT)


def test_no_agent_starts_after_an_interrupt_that_came_while_git_ran(rig: MakeRig) -> None:
    r = rig([task("a"), task("b")])
    worktrees = InterruptedWhileGitRuns(r.layout.root)
    worktrees.runner = r.runner
    r.worktrees = r.runner.worktrees = worktrees
    r.step(T0)
    assert r.procs.spawned() == []
    assert len(worktrees.created) == 1  # b's worktree was not even begun
    assert not r.step(T0 + 1)
    assert [r.status(t) for t in "ab"] == [X, X]
    assert r.attempts("a") == [] and r.row("a")["attempts"] == 0


# -- conflict policies and waiting reasons ----------------------------------------


def conflicting(r: Rig, pairs: dict[str, str], policy: ConflictPolicy) -> None:
    """Give the rig's tasks the plan's predicted conflicts (both ways) under ``policy``."""
    found: dict[str, set[str]] = {}
    for a, b in pairs.items():
        found.setdefault(a, set()).add(b)
        found.setdefault(b, set()).add(a)
    slots = [
        replace(run.slot, conflicts_with=frozenset(found.get(run.task_id, ())))
        for run in r.runner.runs
    ]
    for run, slot in zip(r.runner.runs, with_policy(slots, policy), strict=True):
        run.slot = slot


def reason_writes(r: Rig, monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Every write of waiting reasons the loop makes, as it makes them."""
    writes: list[dict[str, Any]] = []
    real = r.registry.update_tasks

    def counting(orch_id: str, changes: Any, *, owner: str | None = None) -> None:
        found = {t: f["waiting_reason"] for t, f in changes.items() if "waiting_reason" in f}
        if found:
            writes.append(found)
        real(orch_id, changes, owner=owner)

    monkeypatch.setattr(r.registry, "update_tasks", counting)
    return writes


def test_stack_starts_the_later_task_from_the_earlier_branch_and_says_why_it_waits(
    rig: MakeRig, monkeypatch: pytest.MonkeyPatch
) -> None:
    r = rig([task("a"), task("b"), task("free")], max_parallel_tasks=2)
    conflicting(r, {"a": "b"}, ConflictPolicy.STACK)
    writes = reason_writes(r, monkeypatch)
    r.step(T0)
    assert r.procs.spawned() == ["a", "free"]  # b is stacked after a, though a slot is free
    stacked = "stacked after a (running): starts from its branch once it completes"
    assert r.row("b")["waiting_reason"] == stacked
    assert writes == [{"b": stacked}]
    for n in range(1, 4):
        r.step(T0 + n / 10)
    assert len(writes) == 1  # nothing changed, nothing written
    r.exit("free", 0)
    r.step(T0 + 1)
    assert r.procs.spawned() == ["a", "free"]
    r.exit("a", 0)
    r.step(T0 + 2)
    assert r.procs.spawned() == ["a", "free", "b"]
    assert r.worktrees.created[-1][::3] == ("b", r.row("a")["branch"])  # from a's branch
    assert r.row("b")["waiting_reason"] is None


def test_under_stack_a_failed_earlier_task_leaves_the_later_one_to_start_from_the_base(
    rig: MakeRig,
) -> None:
    r = rig([task("a", retries=0), task("b")])
    conflicting(r, {"a": "b"}, ConflictPolicy.STACK)
    r.step(T0)
    assert r.procs.spawned() == ["a"]
    r.exit("a", 3)
    r.step(T0 + 1)
    assert r.status("a") is F and r.status("b") is R
    assert r.worktrees.created[-1][::3] == ("b", BASE)
    assert r.worktrees.merged == []


def test_serialize_keeps_a_pair_apart_and_starts_each_from_the_base(rig: MakeRig) -> None:
    r = rig([task("a"), task("b"), task("c"), task("d")])
    conflicting(r, {"a": "b"}, ConflictPolicy.SERIALIZE)
    r.step(T0)
    assert r.procs.spawned() == ["a", "c", "d"]
    assert r.row("b")["waiting_reason"] == "waiting for conflicting task a (running)"
    r.exit("a", 0)
    r.step(T0 + 1)
    assert r.worktrees.created[-1][::3] == ("b", BASE)


def test_optimistic_runs_a_conflicting_pair_together(rig: MakeRig) -> None:
    r = rig([task("a"), task("b")])
    conflicting(r, {"a": "b"}, ConflictPolicy.OPTIMISTIC)
    r.step(T0)
    assert r.procs.spawned() == ["a", "b"]


class ClashingWorktrees(FakeWorktrees):
    """Merging ``clash`` fails as a real conflicting merge does (git aborts it)."""

    clash = ""

    def merge(self, task_id: str, path: Path, branches: Sequence[str]) -> None:
        if self.clash in branches:
            raise WorktreeError(task_id, f"merge of {self.clash}", "CONFLICT (content)", 1)
        super().merge(task_id, path, branches)


def test_a_stack_whose_branches_clash_starts_from_what_merges(rig: MakeRig) -> None:
    r = rig([task("a"), task("b"), task("c")], max_parallel_tasks=2)
    r.worktrees = r.runner.worktrees = ClashingWorktrees(r.layout.root)
    conflicting(r, {"a": "c", "b": "c"}, ConflictPolicy.STACK)  # a and b: no conflict
    assert r.runner.by_id["c"].slot.after == ("a", "b")
    r.step(T0)
    assert r.procs.spawned() == ["a", "b"]
    r.worktrees.clash = r.row("a")["branch"]
    r.exit("a", 0)
    r.exit("b", 0)
    r.step(T0 + 1)
    assert r.status("c") is R  # the clash between a and b cost c nothing but a's work
    assert r.worktrees.created[-1][::3] == ("c", r.row("b")["branch"])
    assert r.worktrees.merged == []


class KeepsWorking(AgentProfile):
    """The shell agent, marked as one that works on after SIGTERM (as claude is)."""

    name = "keeps-working"
    stop_gracefully = False

    def prepare(self, ctx: AgentContext, prompt: Prompt) -> Launch:
        return profile_for("shell", OrchestrationConfig(agent="shell")).prepare(ctx, prompt)

    def judge(self, ctx: AgentContext, exit_code: int) -> Outcome:
        return Outcome(exit_code == 0, error=None if exit_code == 0 else "failed")


def test_an_agent_that_works_on_after_sigterm_is_killed_at_once_on_cancel(rig: MakeRig) -> None:
    r = rig([task("eager")], KeepsWorking(), kill_grace_seconds=30)
    r.step(T0)
    branch = r.runner.by_id["eager"].branch
    assert branch is not None
    # The branch gains a commit between the cancel and the end of the task.
    r.worktrees.commits_after[(branch, f"head-of-{branch}")] = 1
    r.other.request_cancel(ORCH, "eager", "alice")
    r.step(T0 + 1)
    assert r.procs.signals == [("eager", signal.SIGKILL)]  # no SIGTERM, no grace period
    assert not r.step(T0 + 1.1)
    row = r.row("eager")
    assert (row["status"], row["commits_after_cancel"]) == ("cancelled", 1)


def test_a_task_never_stopped_reports_no_commits_after_cancel(rig: MakeRig) -> None:
    r = rig([task("plain")])
    r.step(T0)
    r.exit("plain", 0)
    assert not r.step(T0 + 1)
    assert r.row("plain")["commits_after_cancel"] is None


class Costly(AgentProfile):
    """The shell agent, each attempt reporting a cost of ``cost_usd``; the first attempt of
    the tasks in ``limited`` meets a usage limit resetting at ``reset_at``."""

    name = "costly"

    def __init__(
        self, cost_usd: float = 0.0, limited: tuple[str, ...] = (), reset_at: float = 0.0
    ) -> None:
        self.cost_usd, self.limited, self.reset_at = cost_usd, set(limited), reset_at
        self.caps: list[tuple[str, float | None]] = []  # the max_cost_usd each start got

    def prepare(self, ctx: AgentContext, prompt: Prompt) -> Launch:
        self.caps.append((ctx.task_id, prompt.max_cost_usd))
        return profile_for("shell", OrchestrationConfig(agent="shell")).prepare(ctx, prompt)

    def judge(self, ctx: AgentContext, exit_code: int) -> Outcome:
        agent: dict[str, Any] = {"cost_usd": self.cost_usd}
        if ctx.task_id in self.limited:
            self.limited.discard(ctx.task_id)
            agent["retry_after"] = self.reset_at
            return Outcome(False, transient=True, error="usage limit reached", agent=agent)
        return Outcome(exit_code == 0, error=None if exit_code == 0 else "failed", agent=agent)


def test_a_usage_limit_parks_every_task_of_the_agent_then_one_canary_goes_first(
    rig: MakeRig,
) -> None:
    reset = T0 + 600
    profile = Costly(limited=("a",), reset_at=reset)
    r = rig(
        [task("a"), task("b"), task("c")],
        profile,
        max_parallel_tasks=1,
        usage_limit_margin_seconds=30,
    )
    r.step(T0)
    r.exit("a", 1)
    r.step(T0 + 1)
    for name in "abc":  # every queued task of that agent waits, and says until when
        row = r.row(name)
        assert (row["status"], row["not_before"]) == ("queued", reset + 30)
        assert row["error_message"].startswith("usage limit of costly: resets at ")
        # What status shows for a queued task: the limit and its reset, not a bare back-off.
        assert row["waiting_reason"].startswith("usage limit of costly: resets at ")
    r.step(reset + 29)
    assert r.procs.spawned() == ["a"]  # the margin is part of the wait

    r.step(reset + 30)
    assert r.procs.spawned() == ["a", "a"]  # the canary, alone
    r.step(reset + 31)
    assert r.procs.spawned() == ["a", "a"]
    r.exit("a", 0)
    r.step(reset + 32)
    assert r.procs.spawned() == ["a", "a", "b"]  # it passed: the rest follow
    waited = r.runner.waited_seconds(reset + 32)
    assert waited == {"usage_limit": pytest.approx(reset + 32 - (T0 + 1))}  # incl. the canary


@pytest.mark.parametrize("reset", [math.nan, math.inf, T0 + 1.7e12, -1e300])
def test_a_reset_time_no_one_can_wait_for_is_a_plain_retry(rig: MakeRig, reset: float) -> None:
    """A usage limit whose reset is no time (nan), never comes (inf, milliseconds taken
    for seconds: thousands of years) or is no date at all parks nothing: the attempt is
    retried like any transient failure, instead of the loop dying or waiting forever."""
    r = rig([task("a"), task("b")], Costly(limited=("a",), reset_at=reset), max_parallel_tasks=1)
    r.step(T0)
    r.exit("a", 1)
    r.step(T0 + 1)
    row = r.row("a")
    assert row["status"] == "queued" and row["not_before"] < T0 + 60
    assert row["waiting_reason"].startswith("backing off until")
    assert r.row("b")["not_before"] is None  # the agent's other tasks are not held
    r.step(T0 + 2)
    assert r.procs.spawned() == ["a", "b"]


def test_a_budget_holds_new_tasks_then_cancels_them_once_nothing_runs(rig: MakeRig) -> None:
    r = rig(
        [task("a"), task("b"), task("c")],
        Costly(cost_usd=0.6),
        max_parallel_tasks=2,
        budget_usd=1.0,
    )
    r.step(T0)
    assert r.procs.spawned() == ["a", "b"]
    r.exit("a", 0)
    r.step(T0 + 1)
    assert r.procs.spawned() == ["a", "b", "c"]  # $0.60 spent, under the budget
    r.exit("b", 0)
    r.step(T0 + 2)
    assert r.runner.spent_usd() == pytest.approx(1.2)
    r.exit("c", 0)
    assert not r.step(T0 + 3)
    assert [r.status(t) for t in "abc"] == [C, C, C]  # running tasks finish (not hard)


def test_a_spent_budget_cancels_the_queued_and_a_hard_one_stops_the_running(
    rig: MakeRig,
) -> None:
    r = rig(
        [task("a"), task("b"), task("c"), task("d")],
        Costly(cost_usd=1.0),
        max_parallel_tasks=2,
        budget_usd=1.0,
        budget_hard=True,
        kill_grace_seconds=5,
    )
    r.step(T0)
    r.exit("a", 0)
    r.step(T0 + 1)
    assert r.procs.spawned() == ["a", "b"]  # c waits: the budget is spent
    note = r.other.orchestration(ORCH)["note"]
    assert note == "budget of $1 reached: $1.0000 spent"
    assert r.procs.signals == [("b", signal.SIGTERM)]  # hard: the running task is stopped
    assert not r.step(T0 + 2)
    assert [r.status(t) for t in "abcd"] == [C, X, X, X]
    assert {r.row(t)["error_message"] for t in "bcd"} == {"budget of $1 spent"}
    assert r.attempts("c") == []
    assert r.other.orchestration(ORCH)["spent_usd"] == pytest.approx(1.0)
    assert r.runner.waited_seconds(T0 + 2) == {"budget": 1.0}


class CostlyEach(Costly):
    """Each task's attempt reports the cost given for it (any float, nan and inf included)."""

    def __init__(self, costs: dict[str, float]) -> None:
        super().__init__()
        self.costs = costs

    def judge(self, ctx: AgentContext, exit_code: int) -> Outcome:
        return Outcome(exit_code == 0, agent={"cost_usd": self.costs[ctx.task_id]})


def test_a_cost_that_is_no_amount_never_hides_the_budget(rig: MakeRig) -> None:
    """A reported cost of nan, inf or below zero counts as none: nan would make the sum nan
    (never at the budget), a negative one would give back what was spent."""
    costs = {"a": math.nan, "b": -5.0, "c": math.inf, "d": 1.0, "e": 0.0}
    r = rig([task(t) for t in "abcde"], CostlyEach(costs), max_parallel_tasks=1, budget_usd=1.0)
    for n, name in enumerate("abcd"):
        r.step(T0 + n)
        r.exit(name, 0)
    r.step(T0 + 4)
    assert r.procs.spawned() == ["a", "b", "c", "d"]  # e waits: $1 spent
    assert r.runner.spent_usd() == pytest.approx(1.0)
    assert r.other.orchestration(ORCH)["note"] == "budget of $1 reached: $1.0000 spent"


def test_waiting_for_memory_and_load_is_counted_per_reason(rig: MakeRig) -> None:
    r = rig([task("a"), task("b")], max_parallel_tasks=1, max_load_per_cpu=1.0)
    r.machine.available_mb = 100
    r.step(T0)
    r.step(T0 + 4)
    r.machine.available_mb, r.machine.load_1m = 4000, 9.0
    r.step(T0 + 5)
    r.step(T0 + 7)
    r.machine.load_1m = 0.0
    r.step(T0 + 8)
    assert r.procs.spawned() == ["a"]
    r.exit("a", 0)
    r.step(T0 + 9)
    r.exit("b", 0)
    assert not r.step(T0 + 10)
    waited = {"memory": 5.0, "load": 3.0}
    assert r.runner.waited_seconds(T0 + 10) == waited
    assert r.other.orchestration(ORCH)["waited_seconds"] == waited


def test_without_a_hard_budget_only_the_prompts_own_cap_is_passed(rig: MakeRig) -> None:
    profile = Costly(cost_usd=0.3)
    capped = Prompt(**{**asdict(task("b")), "max_cost_usd": 0.5})
    r = rig([task("a"), capped, task("c")], profile, max_parallel_tasks=1, budget_usd=1.0)
    r.step(T0)
    r.exit("a", 0)
    r.step(T0 + 1)
    r.exit("b", 0)
    r.step(T0 + 2)
    assert profile.caps == [("a", None), ("b", 0.5), ("c", None)]  # not hard: no cap added


def test_a_hard_budget_caps_each_start_at_what_is_left_of_it(rig: MakeRig) -> None:
    hard = Costly(cost_usd=0.3)
    r2 = rig([task("a2"), task("b2")], hard, max_parallel_tasks=1, budget_usd=1.0, budget_hard=True)
    r2.step(T0)
    r2.exit("a2", 0)
    r2.step(T0 + 1)
    assert hard.caps == [("a2", 1.0), ("b2", pytest.approx(0.7))]


def _monitored_run(rig: MakeRig, interval_s: float) -> tuple[int, int, bool]:
    """20 s of a task that writes output at every 0.05 s step, then exits: how often the
    monitoring files were rewritten and resources sampled, and whether the exit was written
    at the very next step."""
    r = rig([task("busy")], monitoring_interval_seconds=interval_s)
    monitor = Monitor(
        r.registry,
        ORCH,
        r.layout.root / ".gadugi/monitoring",
        interval_s,
        flush=lambda: r.registry.update_tasks(ORCH, r.runner.heartbeat_fields(), owner=OWNER),
    )
    r.runner.on_dirty = monitor.mark_dirty
    snapshot = r.layout.root / ".gadugi/monitoring/process_registry.json"
    rewrites, inode, at = 0, 0, T0
    log = r.layout.logs_dir / "busy.log"
    for n in range(400):
        at = T0 + n * 0.05
        with log.open("a") as fh:
            fh.write(f"line {n}\n")
        r.step(at)
        monitor.maybe_write(at)
        if snapshot.stat().st_ino != inode:
            rewrites, inode = rewrites + 1, snapshot.stat().st_ino
    r.exit("busy", 0)
    at += 0.05
    r.step(at)
    monitor.maybe_write(at)
    prompt = json.loads(snapshot.read_text())["processes"][0]["status"] == "completed"
    return rewrites, r.procs.samples, prompt


@pytest.mark.parametrize("interval_s", [5.0, 1.0])
def test_monitoring_interval_sets_the_heartbeat_and_sampling_period(
    rig: MakeRig, interval_s: float
) -> None:
    rewrites, samples, prompt = _monitored_run(rig, interval_s)
    # While only output arrives, one rewrite and one reading per interval (the first step
    # also writes the start, a state change, at once).
    periods = 20 / interval_s
    assert periods - 1 <= rewrites <= periods + 2
    assert periods - 1 <= samples <= periods + 1
    assert prompt  # a state change waits for no interval
