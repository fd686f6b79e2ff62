"""The single loop that owns scheduling state: one ``tick(now)`` at a time.

Everything that changes a task's state happens here, in one thread: starting agents
when the schedule allows, noticing exits, enforcing timeouts, acting on cancel
requests, retrying transient failures, and cancelling the dependents of a task that
did not complete. Signal handlers only set a flag (see ``interrupt``); the loop
acts on it at its next step, where state is consistent.
"""

from __future__ import annotations

import errno
import logging
import os
import random
import resource
import shlex
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from . import procs
from .agents import AgentContext, AgentProfile, Outcome
from .agents.base import ATTEMPT_MARK, last_line
from .config import OrchestrationConfig
from .envsetup import setup_argv, shell_argv
from .errors import GadugiError, RequestError, SpawnError, WorktreeError
from .health import Admission
from .holds import Budget, UsageLimits, WaitTally, clock_time, cost_of, reset_time
from .lifecycle import Transition
from .phases import (
    discard_verify_output,
    followup_prompt,
    note_untracked,
    phase_failed,
    verify_followup,
)
from .planning.schedule import Slot, doomed, next_to_start, waiting_reasons
from .promptgen import Template
from .registry import AttemptRecord, Registry
from .tasks import Phase, Prompt, TaskStatus, Verdict
from .worktrees import HeadOutcome, NameTaken, Worktrees, WorktreeState

log = logging.getLogger(__name__)
TICK_S = 0.05
MAX_START_RETRIES = 5
MAX_NAME_TRIES = 100
MAX_FOOTPRINT_SHOWN = 40
START_RETRY_BASE_S = 0.5
MAX_START_DELAY_S = 10.0
OBSERVE_EVERY_S = 1.0
MAX_BACKOFF_S = 300.0
_REMOVED = {"worktree_removed": 1, "worktree_state": WorktreeState.REMOVED.value}


class Listener(Protocol):
    """What the live view hears from the loop (called from the loop's own thread)."""

    def changed(self, task: TaskRun) -> None: ...

    def ticked(self, runs: Sequence[TaskRun], now: float, note: str | None) -> None: ...


class LandingStep(Protocol):
    """What ``run --land`` steps inside the loop (``landing.Lander``)."""

    done: bool

    def step(self, now: float) -> bool: ...

    def abort(self, now: float) -> None: ...


class Processes:
    """The loop's seam to real processes; unit tests pass a subclass that records calls."""

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
        return procs.spawn(argv, cwd, env, stdout, stderr, result_file, limits)

    def begin_stop(
        self, child: procs.Child, now: float, grace_s: float, gracefully: bool = True
    ) -> None:
        procs.begin_stop(child, now, grace_s, gracefully)

    def finish_stop(self, child: procs.Child, now: float) -> bool:
        return procs.finish_stop(child, now)

    def terminate(
        self, children: list[procs.Child], grace_s: float, gracefully: bool = True
    ) -> None:
        procs.terminate(children, grace_s, gracefully)

    def sample(self, pids: Sequence[int]) -> dict[int, tuple[float, float]]:
        return procs.sample_trees(pids)

    def reap(self) -> list[int]:
        return procs.reap_orphans()


@dataclass
class TaskRun:
    """One task's live state inside the loop."""

    prompt: Prompt
    slot: Slot
    profile: AgentProfile
    status: TaskStatus = TaskStatus.QUEUED
    branch: str | None = None
    worktree: Path | None = None  # set once the worktree is ready
    intended: tuple[Path, str] | None = None  # path and branch recorded before git made them
    base_commit: str | None = None
    ctx: AgentContext | None = None
    child: procs.Child | None = None
    attempt: int = 0
    retries_left: int = 0
    timeout_s: float = 0.0
    deadline: float = 0.0
    hold_until: float = 0.0  # backing off before a retry
    stopping: tuple[TaskStatus, str, float] | None = None  # status, why, SIGKILL time
    started_at: float | None = None
    completed_at: float | None = None
    exit_code: int | None = None
    error: str | None = None
    agent_info: dict[str, Any] = field(default_factory=dict)
    last_line: str = ""
    last_heartbeat: float | None = None
    output_size: int = 0
    progress_offset: int = 0
    cpu: tuple[float, float] | None = None  # (cpu seconds, at) for the next percentage
    cpu_percent: float | None = None
    memory_mb: float | None = None
    start_failures: int = 0  # failed tries to create the worktree or spawn the agent
    footprint: tuple[str, ...] = ()  # what the plan expects the task to touch
    stalled: bool = False
    phase: Phase | None = None  # what the running attempt's child is (the last one reached)
    phase_started: float | None = None
    needs_setup: bool = False  # a new worktree: the setup command runs before the agent
    agent_code: int | None = None  # the agent's exit code, held while verification runs
    # The tree the running verification started on, when nothing else was beside it.
    verify_tree: str | None = None
    # What the next attempt is asked, continuing the last one (Runner.follow_up), and a
    # commit to merge into the branch before it.
    followup: str | None = None
    followup_base: str | None = None
    verdict: str | None = None  # Verdict, when the agent gives one
    summary: str | None = None
    verification: dict[str, Any] | None = None
    waiting_reason: str | None = None  # why it is queued and not starting, as last recorded
    head_at_stop: str | None = None  # the branch's commit when a stop was asked for
    spent_usd: float = 0.0  # what the task's ended attempts cost, as their agents reported
    attempt_cost: float = 0.0  # what the running attempt has cost so far

    @property
    def task_id(self) -> str:
        return self.prompt.task_id


@dataclass(frozen=True)
class Layout:
    """Where one orchestration keeps its files."""

    root: Path
    orchestration_id: str
    worktrees_dir: Path
    logs_dir: Path
    prompts_dir: Path

    def suffix(self) -> str:
        return self.orchestration_id.rsplit("-", 1)[-1]

    def result_file(self, task_id: str, attempt: int, phase: Phase = Phase.AGENT) -> Path:
        """Where the supervisor of one attempt's phase records its exit status."""
        if phase is Phase.AGENT:
            return self.logs_dir / f"{task_id}.{attempt}.exit.json"
        return self.logs_dir / f"{task_id}.{attempt}.{phase}.exit.json"

    def untracked_record(self, task_id: str, attempt: int) -> Path:
        """The untracked files of the worktree before the attempt's verification."""
        return self.logs_dir / f"{task_id}.{attempt}.verify.untracked.json"

    def phase_log(self, task_id: str, phase: Phase) -> Path:
        """The log of a task's setup or verification (every attempt's, one after another)."""
        return self.logs_dir / f"{task_id}.{phase}.log"

    def context(self, run: TaskRun) -> AgentContext:
        """The agent context of ``run``'s current attempt."""
        assert run.worktree is not None and run.branch is not None
        return AgentContext(
            orchestration_id=self.orchestration_id,
            task_id=run.task_id,
            project_root=self.root,
            worktree=run.worktree,
            branch=run.branch,
            prompt_file=self.prompts_dir / f"{run.task_id}.md",
            source_prompt=run.prompt.path,
            log_file=self.logs_dir / f"{run.task_id}.log",
            events_file=self.logs_dir / f"{run.task_id}.events.jsonl",
            attempt=run.attempt,
            resume_session=run.agent_info.get("session_id"),
            follow_up=run.followup is not None,
        )


class Runner:
    def __init__(
        self,
        layout: Layout,
        runs: list[TaskRun],
        config: OrchestrationConfig,
        registry: Registry,
        worktrees: Worktrees,
        template: Template,
        base_commit: str,
        *,
        listener: Listener | None = None,
        on_dirty: Callable[[], None] = lambda: None,
        owner: str | None = None,
        clock: Callable[[], float] = time.time,
        processes: Processes | None = None,
        admission: Admission | None = None,
        lander: LandingStep | None = None,
    ) -> None:
        self.layout = layout
        self.lander = lander  # run --land: landing is a step of this loop, not a second one
        self.runs = runs
        self.by_id = {r.task_id: r for r in runs}
        self.config = config
        self.registry = registry
        self.worktrees = worktrees
        self.template = template
        self.base_commit = base_commit
        self.listener = listener
        self.on_dirty = on_dirty
        self.interrupted: str | None = None
        self.fatal: str | None = None  # why the whole orchestration must stop
        self.fatal_task: str | None = None
        self.waiting: str | None = None  # why ready tasks are not starting, if they are not
        self.changed = False  # whether the last step changed any task
        self.owner = owner  # the lease token every write of this loop is checked against
        self.clock = clock
        self.procs = processes or Processes()
        self.exits = procs.ExitWatch()
        self.admission = admission or Admission(
            config.min_available_memory_mb, config.max_load_per_cpu
        )
        self._last_observe = 0.0
        self._last_sample = 0.0
        # Lowered when the system runs out of processes, raised again by each good start.
        self.parallel = config.max_parallel_tasks
        self._paused_until = 0.0  # backing off after a fork failure in the loop itself
        self._pauses = 0
        self.budget = Budget(config.budget_usd, config.budget_hard)
        self.limits = UsageLimits(config.usage_limit_margin_seconds)
        self.waits = WaitTally()
        self._accounts: tuple[float, dict[str, float]] | None = None  # as last recorded
        for run in runs:
            if run.status is not TaskStatus.RUNNING:  # taken over by resume or retry
                run.spent_usd = cost_of(run.agent_info)

    # -- the loop ---------------------------------------------------------------------

    def interrupt(self, signum: int, _frame: object = None) -> None:
        """Signal handler: only note the request; the loop stops tasks at its next step."""
        self.interrupted = signal.Signals(signum).name

    def run(self, between: Callable[[float], None] = lambda now: None) -> None:
        """Tick until every task has finished; ``between`` runs after each step.

        A step that changed something is followed at once by another (a freed slot is
        filled now, not a tick later); an idle step waits until an agent exits or
        ``TICK_S`` passes.
        """
        try:
            for run in self.runs:
                if run.child is not None:
                    self.exits.watch(run.child)  # adopted on resume
            while self.tick(self.clock()):
                between(self.clock())
                if not self.changed and not self.prepare_ahead(self.clock()):
                    self.exits.wait(TICK_S)
        finally:
            self.exits.close()

    def abandon(self) -> None:
        """Last resort when the loop itself failed: no agent may outlive the orchestrator."""
        children = [r.child for r in self.runs if r.child is not None]
        if children:
            log.error("stopping %d agent(s) after an internal error", len(children))
        for gracefully in (False, True):  # those killed at once first: nothing to wait for
            group = [
                r.child
                for r in self.runs
                if r.child is not None
                and bool(getattr(r.profile, "stop_gracefully", True)) is gracefully
            ]
            if group:
                self.procs.terminate(group, self.config.kill_grace_seconds, gracefully)

    def tick(self, now: float) -> bool:
        """One step; returns False once every task has finished."""
        self.changed = False
        if self.interrupted or self.fatal:
            if self.lander is not None:
                self.lander.abort(now)
            return self._stop_everything(now)
        if now < self._paused_until:
            return True
        try:
            self._step(now)
        except SpawnError as exc:
            # The process table is full: no step has written its state yet (the write is
            # always its last act), so the same steps are simply taken again later.
            self._out_of_processes(exc)
            self._pauses += 1
            delay = min(MAX_START_DELAY_S, START_RETRY_BASE_S * 2 ** (self._pauses - 1))
            self._paused_until = now + delay
            log.warning("%s; the loop waits %.1fs", exc, delay)
            return True
        self._pauses = 0
        if self.listener:
            self.listener.ticked(self.runs, now, self.waiting)
        going = any(not r.status.finished for r in self.runs)
        if not going:
            self.waits.observe((), now)
            self._record_accounts(now)
        landing = self.lander is not None and not self.lander.done
        return landing or going

    def _step(self, now: float) -> None:
        self._apply_cancel_requests(now)
        for run in self.runs:
            if run.status is TaskStatus.RUNNING:
                self._check_running(run, now)
        self._cancel_doomed(now)
        self._start_ready(now)
        self._enforce_budget(now)
        self._note_waiting(now)
        if self.waits.observe(self._waiting_kinds(now), now):
            self._record_accounts(now)
        interval_s = self.config.monitoring_interval_seconds
        if now - self._last_observe >= min(OBSERVE_EVERY_S, interval_s):
            self._last_observe = now
            self.procs.reap()  # orphans reparented to us, so no zombie piles up
            running = [r for r in self.runs if r.status is TaskStatus.RUNNING]
            # Output is looked at every second (the live view, stall checks); CPU and
            # memory, which walk every process tree, once per monitoring interval.
            readings: dict[int, tuple[float, float]] = {}
            if now - self._last_sample >= interval_s:
                self._last_sample = now
                readings = self.procs.sample([r.child.pid for r in running if r.child])
            for run in running:
                self.observe(run, now, readings.get(run.child.pid if run.child else 0))
        if self.lander is not None and not self.lander.done:
            self.changed |= self.lander.step(now)

    def _out_of_processes(self, exc: SpawnError) -> None:
        """Run fewer tasks at once: as many as run now (at least one), until starts succeed."""
        running = sum(1 for r in self.runs if r.status is TaskStatus.RUNNING)
        lowered = max(1, min(self.parallel, running))
        if lowered < self.parallel:
            log.warning("%s: running at most %d task(s) at once for now", exc, lowered)
            self.parallel = lowered

    # -- starting -----------------------------------------------------------------------

    def _start_ready(self, now: float) -> None:
        running = sum(1 for r in self.runs if r.status is TaskStatus.RUNNING)
        free = self.parallel - running
        if free <= 0:
            return
        statuses = {r.task_id: r.status for r in self.runs}
        held = frozenset(
            r.task_id
            for r in self.runs
            if r.hold_until > now or self.limits.holds(r.profile.name, r.task_id, now)
        )
        ready = next_to_start([r.slot for r in self.runs], statuses, free, held)
        budget = self.budget.waiting(self.spent_usd()) if ready else None
        self._set_waiting(budget or (self.admission.blocked(now) if ready else None))
        if self.waiting:
            return  # running tasks go on; new ones wait until the machine has room
        if ready:
            log.debug(
                "admission: starting %s (%d of %d slot(s) free; machine has room)",
                ", ".join(ready),
                free,
                self.parallel,
            )
        for task_id in ready:
            if self.interrupted:
                return  # Ctrl-C while an earlier start ran git: start nothing more
            if running >= self.parallel:
                return  # lowered by a start that found the system out of processes
            run = self.by_id[task_id]
            self._start(run, self.clock())
            running += run.status is TaskStatus.RUNNING

    def _note_waiting(self, now: float) -> None:
        """Record why each queued task is not starting, for the tasks whose reason changed."""
        statuses = {r.task_id: r.status for r in self.runs}
        held: dict[str, str] = {}
        for r in self.runs:
            # A usage limit says so (with its reset time, or the canary it waits for);
            # any other hold is a back-off before a retry or a start.
            limit = self.limits.holds(r.profile.name, r.task_id, now)
            if limit is not None:
                held[r.task_id] = limit
            elif r.hold_until > now:
                held[r.task_id] = f"backing off until {_clock(r.hold_until)}"
        reasons = waiting_reasons(
            [r.slot for r in self.runs], statuses, self.parallel, held, self.waiting
        )
        changes: dict[str, dict[str, Any]] = {}
        for run in self.runs:
            reason = reasons.get(run.task_id)
            if reason != run.waiting_reason:
                run.waiting_reason = reason
                changes[run.task_id] = {"waiting_reason": reason}
        if changes:
            # One short transaction for every change, and none in a step that changed none.
            self.registry.update_tasks(self.layout.orchestration_id, changes, owner=self.owner)
            self.on_dirty()

    def _set_waiting(self, reason: str | None) -> None:
        if reason != self.waiting:
            self.waiting = reason
            self.registry.set_note(self.layout.orchestration_id, reason)
            if reason:
                log.warning("%s", reason)

    def _start(self, run: TaskRun, now: float) -> None:
        """Start the task's next attempt: its setup first where a new worktree needs one,
        else its agent."""
        try:
            if run.worktree is None:
                self._make_worktree(run)
            if self.interrupted or self.fatal:
                return  # it came while git ran: no agent may start after it
            if run.followup_base:
                self._absorb(run)
            run.attempt += 1
            setup = self.setup_command(run) if run.needs_setup else None
            if setup:
                assert run.worktree is not None
                argv = setup_argv(setup, run.worktree, self.layout.root, self.config)
                child = self._spawn_phase(run, Phase.SETUP, argv, now)
            else:
                child, argv = self._spawn_agent(run, now)
        except (GadugiError, OSError) as exc:
            self._start_failed(run, exc, now)
            return
        run.head_at_stop = None
        log.debug(
            "spawn %s attempt %d: %s (pid %d, in %s, %s)",
            run.task_id,
            run.attempt,
            _shortened(shlex.join(argv)),
            child.pid,
            run.worktree,
            run.phase,
        )
        if self.parallel < self.config.max_parallel_tasks:
            self.parallel += 1
        run.started_at = run.started_at or now
        assert run.phase is not None
        self._move(
            run,
            TaskStatus.RUNNING,
            now,
            None,
            AttemptRecord(run.attempt, now, child.pid, child.start_time),
            started_at=run.started_at,
            pid=child.pid,
            pid_start_time=child.start_time,
            attempts=run.attempt,
            command=argv,
            last_heartbeat=now,
            not_before=None,
            phase=run.phase.value,
            followup=run.followup,
        )

    def _spawn_agent(self, run: TaskRun, now: float) -> tuple[procs.Child, list[str]]:
        """Start the attempt's agent; its child and command line."""
        ctx, launch = self._prepare_attempt(run)
        stdout = ctx.events_file if launch.structured_stdout else ctx.log_file
        env = {**os.environ, **ctx.environment(), **launch.env}
        assert run.worktree is not None
        result_file = self.layout.result_file(run.task_id, run.attempt)
        # Recorded before the spawn: should the orchestrator die right after it, a
        # resume knows which attempt's result file and process to look for.
        self._record(run, attempts=run.attempt, phase=Phase.AGENT.value)
        child = self.procs.spawn(
            launch.argv, run.worktree, env, stdout, ctx.log_file, result_file, self._limits(run)
        )
        run.followup = None  # said now, in this attempt's prompt
        run.verdict = run.summary = None  # the last attempt's; this one gives its own
        self._watch(run, child, ctx, Phase.AGENT, now, run.timeout_s)
        run.attempt_cost = 0.0
        self.limits.started(run.profile.name, run.task_id, now)
        return child, launch.argv

    def _spawn_phase(self, run: TaskRun, phase: Phase, argv: list[str], now: float) -> procs.Child:
        """Start the setup or verification of the attempt, supervised like an agent, with
        its own log, result file and timeout."""
        assert run.worktree is not None
        ctx = self.layout.context(run)
        log_file = self.layout.phase_log(run.task_id, phase)
        log_file.parent.mkdir(parents=True, exist_ok=True)
        with log_file.open("a", encoding="utf-8") as fh:
            # On one line, so that no line of a longer command reads as the phase's output.
            shown = argv[-1].strip().replace("\n", " \N{RETURN SYMBOL} ")
            fh.write(f"{ATTEMPT_MARK}{run.attempt}, {phase}: {shown} ---\n")
        env = {**os.environ, **ctx.environment(), "GADUGI_PHASE": phase.value}
        result_file = self.layout.result_file(run.task_id, run.attempt, phase)
        self._record(run, attempts=run.attempt, phase=phase.value)
        child = self.procs.spawn(
            argv, run.worktree, env, log_file, log_file, result_file, self._limits(run)
        )
        minutes = (
            self.config.setup_timeout_minutes
            if phase is Phase.SETUP
            else self.config.verify_timeout_minutes
        )
        self._watch(run, child, ctx, phase, now, minutes * 60)
        return child

    def _watch(
        self,
        run: TaskRun,
        child: procs.Child,
        ctx: AgentContext,
        phase: Phase,
        now: float,
        timeout_s: float,
    ) -> None:
        run.child, run.ctx, run.phase = child, ctx, phase
        self.exits.watch(child)
        run.phase_started, run.deadline, run.last_heartbeat = now, now + timeout_s, now

    def setup_command(self, run: TaskRun) -> str | None:
        """The task's setup command: its front matter's ``setup:``, else ``setup_command``."""
        return run.prompt.setup or self.config.setup_command

    def verify_command(self, run: TaskRun) -> str | None:
        """The task's verification: its front matter's ``verify:``, else ``verify_command``
        (which ``--verify`` sets)."""
        return run.prompt.verify or self.config.verify_command

    def _absorb(self, run: TaskRun) -> None:
        """Merge the follow-up's base into the branch; conflicts are the agent's to resolve."""
        assert run.worktree is not None and run.followup_base is not None
        conflicts = self.worktrees.absorb(run.task_id, run.worktree, run.followup_base)
        if conflicts:
            note = (
                f"Merging {run.followup_base} into your branch left conflicts in: "
                f"{', '.join(conflicts)}. Resolve them and commit the merge."
            )
            run.followup = f"{run.followup}\n\n{note}" if run.followup else note
        run.followup_base = None
        # The merge is in git now: a resume after a crash asks for it once, not again.
        self._record(run, followup=run.followup, followup_base=None)

    def _start_failed(self, run: TaskRun, exc: GadugiError | OSError, now: float) -> None:
        """Try again later if that can help (bounded, growing delays), else fail the task."""
        message = str(exc) if isinstance(exc, GadugiError) else f"cannot start agent: {exc}"
        if isinstance(exc, SpawnError):
            self._out_of_processes(exc)
        if _transient_start_failure(exc) and run.start_failures < MAX_START_RETRIES:
            run.start_failures += 1
            delay = min(MAX_START_DELAY_S, START_RETRY_BASE_S * 2 ** (run.start_failures - 1))
            run.hold_until = now + delay
            log.info("%s: %s; trying again in %.1fs", run.task_id, message, delay)
            self._record(
                run,
                error_message=f"{message}; trying again in {delay:.1f}s",
                not_before=run.hold_until,
            )
            return
        if run.start_failures:
            message = f"gave up after {run.start_failures + 1} tries to start: {message}"
        self._finish(run, TaskStatus.FAILED, now, error=message)

    def prepare_ahead(self, now: float) -> bool:
        """While every slot is busy, make the worktree of the next task that will start.

        Worktree creation is serialised and is most of a start's cost; done while the
        loop would otherwise wait, it is off the critical path when a slot frees up.
        At most ``max_parallel_tasks`` worktrees wait ready. Returns whether it made one.
        """
        waiting = [r for r in self.runs if r.status is TaskStatus.QUEUED and r.worktree]
        stopping = self.interrupted or self.fatal
        if len(waiting) >= self.config.max_parallel_tasks or self.waiting or stopping:
            return False
        done = {r.task_id for r in self.runs if r.status is TaskStatus.COMPLETED}
        for run in sorted(self.runs, key=lambda r: (-r.slot.priority, r.slot.order)):
            if (
                run.status is TaskStatus.QUEUED
                and run.worktree is None
                and run.hold_until <= now
                and all(d in done for d in run.slot.depends_on)
                and not self._stacked_unfinished(run)  # its base is not known yet
            ):
                try:
                    self._make_worktree(run)
                except (GadugiError, OSError) as exc:
                    self._start_failed(run, exc, now)
                return True
        return False

    def _limits(self, run: TaskRun) -> dict[int, int]:
        memory_mb = run.prompt.memory_limit_mb or self.config.memory_limit_mb
        files = run.prompt.open_files_limit or self.config.open_files_limit
        limits = {}
        if memory_mb:
            limits[resource.RLIMIT_AS] = memory_mb * 2**20
        if files:
            limits[resource.RLIMIT_NOFILE] = files
        return limits

    def _make_worktree(self, run: TaskRun) -> None:
        if run.branch and run.intended is None and self.worktrees.branch_exists(run.branch):
            self._reopen_worktree(run, run.branch)
            return
        deps, stacked = self._base_sources(run)
        base = (deps + stacked)[0] if deps or stacked else self.base_commit
        path, branch = self._place_worktree(run, base)
        run.branch, run.worktree, run.intended = branch, path, None
        run.needs_setup = True
        others = (deps + stacked)[1:]
        if deps[1:]:
            # Merged again after a crash adopted the worktree: git says "up to date".
            self.worktrees.merge(run.task_id, path, deps[1:])
        for other in stacked[1:] if not deps else stacked:
            try:
                self.worktrees.merge(run.task_id, path, [other])
            except WorktreeError as exc:
                # A stack edge is an ordering: branches that clash with each other cost
                # the task their composition, never the task itself.
                log.warning("%s: starting without %s: %s", run.task_id, other, exc)
        # Without a merge the new HEAD is the base itself: no need to ask git again.
        run.base_commit = (
            base if base == self.base_commit and not others else self.worktrees.head(path)
        )
        # Ready only now, after the merge: recovery remakes anything short of this.
        self._record(
            run,
            branch=branch,
            worktree=str(path),
            base_commit=run.base_commit,
            worktree_state=WorktreeState.READY.value,
        )

    def _base_sources(self, run: TaskRun) -> tuple[list[str], list[str]]:
        """The branches a new worktree starts from: its dependencies', then those of the
        completed tasks it is stacked after, the latest first (it holds the earlier ones
        of a chain, so merging those is a no-op). A stacked task that failed or was
        cancelled adds nothing: the task then starts from the base."""
        deps = [self.by_id[d].branch for d in run.slot.depends_on if d in self.by_id]
        stacked = [
            self.by_id[e].branch
            for e in reversed(run.slot.after)
            if e in self.by_id and self.by_id[e].status is TaskStatus.COMPLETED
        ]
        return [b for b in deps if b], [b for b in stacked if b]

    def _stacked_unfinished(self, run: TaskRun) -> bool:
        return any(e in self.by_id and not self.by_id[e].status.finished for e in run.slot.after)

    def _reopen_worktree(self, run: TaskRun, branch: str) -> None:
        """A task run again after its worktree was removed goes on from its own branch:
        the work it did is the new attempt's start, and its base stays the same."""
        name = branch.removeprefix("gadugi/")
        for n in range(1, MAX_NAME_TRIES + 1):
            path = self.layout.worktrees_dir / (name if n == 1 else f"{name}-{n}")
            if not path.exists():
                break
        self.worktrees.check_out(run.task_id, path, branch)
        run.worktree, run.needs_setup = path, True
        self._record(
            run, worktree=str(path), worktree_removed=0, worktree_state=WorktreeState.READY.value
        )

    def _place_worktree(self, run: TaskRun, base: str) -> tuple[Path, str]:
        """Record a worktree's path and branch as intended, then have git make them.

        A name recorded before a crash is taken up again (adopted, or made anew). Taken
        names are seen before git runs; a failed create has been undone, and its record
        goes with it unless something of it could not be removed.
        """
        if run.intended is not None:
            path, branch = run.intended
            try:
                self.worktrees.reclaim(run.task_id, path, branch, base)
                return path, branch
            except NameTaken as exc:
                log.info("%s: %s; choosing another name", run.task_id, exc)
        name = f"{run.task_id}-{self.layout.suffix()}"
        for n in range(1, MAX_NAME_TRIES + 1):
            unique = name if n == 1 else f"{name}-{n}"
            branch, path = f"gadugi/{unique}", self.layout.worktrees_dir / unique
            if not self.worktrees.is_free(path, branch):
                continue
            run.intended = (path, branch)
            self._record(
                run, branch=branch, worktree=str(path), worktree_state=WorktreeState.INTENDED.value
            )
            try:
                self.worktrees.create(run.task_id, path, branch, base)
            except NameTaken:
                continue  # taken between the look and the lock
            except WorktreeError:
                if self.worktrees.is_free(path, branch):
                    run.intended = None
                    self._record(run, branch=None, worktree=None, worktree_state=None)
                raise
            return path, branch
        raise NameTaken(run.task_id, f"{name} and {MAX_NAME_TRIES - 1} more names are all taken")

    def _prepare_attempt(self, run: TaskRun) -> tuple[AgentContext, Any]:
        ctx = self.layout.context(run)
        prompt_file = ctx.prompt_file
        prompt_file.parent.mkdir(parents=True, exist_ok=True)
        text = self._render_prompt(run)
        if run.followup:
            # A resumed session already holds the task: it is told only what comes next.
            text = run.followup if ctx.resume_session else followup_prompt(text, run.followup)
        prompt_file.write_text(text, encoding="utf-8")
        launch = run.profile.prepare(ctx, self._capped(run.prompt))
        if run.attempt > 1:
            with ctx.log_file.open("a", encoding="utf-8") as fh:
                fh.write(f"\n{ATTEMPT_MARK}{run.attempt} ---\n")
        return ctx, launch

    def _capped(self, prompt: Prompt) -> Prompt:
        """With a hard budget, an agent that can cap its own spending (``max_cost_usd``:
        claude's ``--max-budget-usd``) gets at most what is left of the budget: its cost is
        only known when an attempt ends, too late to stop it from outside."""
        left = self.budget.left(self.spent_usd()) if self.budget.hard else None
        if left is None or left <= 0:
            return prompt
        cap = min(left, prompt.max_cost_usd or left)
        return replace(prompt, max_cost_usd=max(round(cap, 6), 1e-6))

    def _render_prompt(self, run: TaskRun) -> str:
        deps = [f"{d} (branch {self.by_id[d].branch})" for d in run.slot.depends_on]
        paths = run.footprint or run.prompt.touches
        footprint = ", ".join(f"`{p}`" for p in paths[:MAX_FOOTPRINT_SHOWN]) or "not known"
        if len(paths) > MAX_FOOTPRINT_SHOWN:
            footprint += f" and {len(paths) - MAX_FOOTPRINT_SHOWN} more"
        return self.template.render(
            task_id=run.task_id,
            title=run.prompt.title,
            branch=run.branch or "",
            worktree=str(run.worktree),
            orchestration_id=self.layout.orchestration_id,
            source_prompt=run.prompt.rel_path,
            footprint=footprint,
            depends_on=", ".join(deps) or "none",
            prompt_text=run.prompt.text,
        )

    # -- running ------------------------------------------------------------------------

    def _check_running(self, run: TaskRun, now: float) -> None:
        """Never waits: a stop under way is looked at again on the next tick."""
        child = run.child
        assert child is not None
        if run.stopping is not None:
            status, why, _ = run.stopping
            if not self.procs.finish_stop(child, now):
                return
            if status is TaskStatus.QUEUED:
                self._restart(run, why, _ended_at(child, now))
            else:
                if run.phase is Phase.VERIFY:  # stopped before it could pass: not passed
                    self._note_verification(run, False, None, _ended_at(child, now))
                    self._discard_verify_output(run)
                self._end_attempt(run, status, _ended_at(child, now), why, _code(child))
            return
        ended = child.check()
        if ended is None:
            if now >= run.deadline:
                minutes = (run.deadline - (run.phase_started or now)) / 60
                what = "timed out" if run.phase in (None, Phase.AGENT) else f"{run.phase} timed out"
                self._stop(run, TaskStatus.TIMEOUT, f"{what} after {minutes:g} minutes", now)
        elif ended.lost and run.phase is Phase.VERIFY:
            # The agent's work is done and committed: only its verification runs again.
            self._begin_verify(run, now)
        elif ended.lost:
            self._requeue_lost(run, now)
        elif not self.procs.finish_stop(child, now):
            # The agent left processes behind in its group: they must not outlive it.
            if child.kill_at is None:
                gracefully = bool(getattr(run.profile, "stop_gracefully", True))
                self.procs.begin_stop(child, now, self.config.kill_grace_seconds, gracefully)
        elif ended.out_of_resources:
            self._not_started(run, ended, now)
        elif run.phase is Phase.SETUP:
            self._setup_ended(run, ended, ended.ended_at)
        elif run.phase is Phase.VERIFY:
            self._verify_ended(run, ended, ended.ended_at)
        else:
            # The attempt ended when the supervisor saw it end, not when a tick noticed.
            self._exited(run, ended, ended.ended_at)

    def _not_started(self, run: TaskRun, ended: procs.Exit, now: float) -> None:
        """The supervisor could not fork the agent: out of processes. Back off and retry."""
        message = f"agent {ended.describe()}"
        if run.start_failures >= MAX_START_RETRIES:
            message = f"gave up after {run.start_failures + 1} tries to start: {message}"
            self._end_attempt(run, TaskStatus.FAILED, now, message, None)
        else:
            run.start_failures += 1
            delay = min(MAX_START_DELAY_S, START_RETRY_BASE_S * 2 ** (run.start_failures - 1))
            run.hold_until = now + delay
            log.info("%s: %s; trying again in %.1fs", run.task_id, message, delay)
            self._requeue(
                run, now, "not started", message, f"{message}; trying again in {delay:.1f}s", None
            )
        # Counted once it no longer runs: as many at once as still run.
        self._out_of_processes(SpawnError(run.task_id, ended.start_errno or errno.EAGAIN))

    def _restart(self, run: TaskRun, why: str, now: float) -> None:
        """A stalled agent was stopped: run it again if the budget allows, else fail."""
        assert run.child is not None
        if run.retries_left <= 0:
            self._end_attempt(run, TaskStatus.FAILED, now, f"{why}; no retries left", None)
            return
        run.retries_left -= 1
        self._requeue(run, now, "stalled", why, f"{why}; restarting", _code(run.child))
        run.stalled = False

    def _requeue_lost(self, run: TaskRun, now: float) -> None:
        """An adopted agent vanished without a result: run the task again."""
        why = "agent process gone without a result (orchestrator was down); re-queued"
        self._requeue(run, now, "lost", why, why, None)

    def _requeue(
        self,
        run: TaskRun,
        now: float,
        attempt_status: str,
        attempt_error: str | None,
        why: str,
        code: int | None,
        **fields: Any,
    ) -> None:
        """End the running attempt and put the task back in the queue, in one write."""
        ended = AttemptRecord(
            run.attempt, ended_at=now, exit_code=code, status=attempt_status, error=attempt_error
        )
        run.child, run.stopping = None, None
        self._move(
            run,
            TaskStatus.QUEUED,
            now,
            why,
            ended,
            pid=None,
            not_before=run.hold_until if run.hold_until > now else None,
            **fields,
        )

    def _stop(self, run: TaskRun, status: TaskStatus, why: str, now: float) -> None:
        """Begin stopping a running task: its tree frozen now, then ended (see _begin_stop)."""
        assert run.child is not None
        self._begin_stop(run, now)
        run.stopping = (status, why, now + self.config.kill_grace_seconds)
        log.info("%s: stopping (%s)", run.task_id, why)

    def _begin_stop(self, run: TaskRun, now: float) -> None:
        """Freeze the task's tree and end it, politely or, for an agent that keeps working
        after SIGTERM (its profile's ``stop_gracefully`` is false), with SIGKILL at once.

        The branch's commit is noted first: a commit that lands after it is reported
        (``commits_after_cancel``), never hidden.
        """
        assert run.child is not None
        if run.child.kill_at is not None:
            return
        if run.branch and run.head_at_stop is None:
            run.head_at_stop = self.worktrees.branch_head(run.branch)
        gracefully = bool(getattr(run.profile, "stop_gracefully", True))
        self.procs.begin_stop(run.child, now, self.config.kill_grace_seconds, gracefully)

    def _exited(self, run: TaskRun, ended: procs.Exit, now: float) -> None:
        assert run.ctx is not None
        # The profile judges by subprocess's convention (-N: killed by signal N); the
        # record has a code only when the agent exited by itself.
        code, recorded = ended.returncode, ended.code
        assert code is not None
        self.observe(run, now)
        outcome: Outcome = run.profile.judge(run.ctx, code)
        run.agent_info.update(outcome.agent)
        if "cost_usd" in outcome.agent:
            run.attempt_cost = cost_of(outcome.agent)
        if outcome.success:
            self._agent_done(run, outcome, now, recorded)
        elif outcome.fatal:
            self.fatal, self.fatal_task = f"{run.task_id}: {outcome.error}", run.task_id
            self._end_attempt(run, TaskStatus.FAILED, now, outcome.error, recorded)
        elif (reset := reset_time(outcome.agent.get("retry_after"), now)) is not None:
            # A usage limit with a reset time: park the task until then; this is not
            # the task's fault, so it costs none of its retry budget.
            why = outcome.error or "usage limit reached"
            self._requeue(run, now, "parked", why, why, recorded, exit_code=recorded)
            self._park(run.profile.name, reset)
        elif outcome.transient and run.retries_left > 0:
            run.retries_left -= 1
            delay = min(
                MAX_BACKOFF_S, self.config.retry_base_delay_seconds * 2 ** (run.attempt - 1)
            )
            delay *= random.uniform(0.5, 1.0)  # jitter, so retries of many tasks spread out
            log.info("%s: %s; retrying in %.1fs", run.task_id, outcome.error, delay)
            run.hold_until = now + delay
            why = f"{outcome.error}; retrying in {delay:.1f}s"
            self._requeue(run, now, "retrying", outcome.error, why, recorded, exit_code=recorded)
        else:
            self._end_attempt(run, TaskStatus.FAILED, now, outcome.error, recorded)

    def _setup_ended(self, run: TaskRun, ended: procs.Exit, now: float) -> None:
        """A green setup starts the attempt's agent; a red one fails the task before any
        agent is spent."""
        code = ended.returncode
        assert code is not None
        if code != 0:
            command = self.setup_command(run) or ""
            log_file = self.layout.phase_log(run.task_id, Phase.SETUP)
            self._end_attempt(
                run, TaskStatus.FAILED, now, phase_failed("setup", command, code, log_file), None
            )
            return
        run.needs_setup = False
        try:
            child, argv = self._spawn_agent(run, now)
        except SpawnError:
            raise  # the loop backs off and takes this exit up again
        except (GadugiError, OSError) as exc:
            message = str(exc) if isinstance(exc, GadugiError) else f"cannot start agent: {exc}"
            self._end_attempt(run, TaskStatus.FAILED, now, message, None)
            return
        self._record(
            run,
            pid=child.pid,
            pid_start_time=child.start_time,
            command=argv,
            last_heartbeat=now,
            followup=None,
        )

    def _agent_done(self, run: TaskRun, outcome: Outcome, now: float, code: int | None) -> None:
        """The agent exited successfully: keep its work, weigh its verdict, then verify."""
        run.verdict, run.summary, run.agent_code = outcome.verdict, outcome.summary, code
        try:
            changed = self._keep_work(run)
        except SpawnError:
            raise
        except GadugiError as exc:
            self._end_attempt(run, TaskStatus.FAILED, now, str(exc), code)
            return
        if run.verdict == Verdict.BLOCKED:
            why = f"the agent says it is blocked: {run.summary or 'it gave no reason'}"
            self._end_attempt(run, TaskStatus.FAILED, now, why, code)
        elif run.verdict == Verdict.DONE and not changed:
            why = "the agent said done but changed nothing (no commit, nothing uncommitted)"
            self._end_attempt(run, TaskStatus.FAILED, now, why, code)
        elif self.verify_command(run):
            self._begin_verify(run, now)
        else:
            self._end_attempt(run, TaskStatus.COMPLETED, now, None, code)

    def _keep_work(self, run: TaskRun) -> bool:
        """Commit what the agent left uncommitted (unless ``autocommit = false``), as the
        user; whether the worktree holds any change since its base."""
        if run.worktree is None or not run.worktree.exists():
            return True  # nothing to look at; judged by its exit alone
        if self.config.autocommit:
            message = (
                f"gadugi: work left uncommitted by task {run.task_id} "
                f"({self.layout.orchestration_id})"
            )
            commit = self.worktrees.commit_all(run.task_id, run.worktree, message)
            if commit:
                log.info("%s: committed work the agent left uncommitted (%s)", run.task_id, commit)
        if run.base_commit is None:
            return True
        return self.worktrees.changed_since(run.worktree, run.base_commit)

    def _begin_verify(self, run: TaskRun, now: float) -> None:
        command = self.verify_command(run)
        assert command is not None and run.worktree is not None
        try:
            if not run.worktree.is_dir():
                raise FileNotFoundError(f"the worktree {run.worktree} is gone")
            # Only a worktree holding nothing but its HEAD's tree (ignored files aside)
            # verifies that tree: an untracked file the agent left could be what made it pass.
            run.verify_tree = self.worktrees.tree_of(run.worktree, untracked=True)
            record = self.layout.untracked_record(run.task_id, run.attempt)
            note_untracked(self.worktrees, run.worktree, record)
            child = self._spawn_phase(run, Phase.VERIFY, shell_argv(command), now)
        except SpawnError:
            raise  # the loop backs off and takes the agent's exit up again
        except (GadugiError, OSError) as exc:
            why = f"cannot start the verification `{command}`: {exc}"
            self._end_attempt(run, TaskStatus.FAILED, now, why, run.agent_code)
            return
        self._record(
            run,
            pid=child.pid,
            pid_start_time=child.start_time,
            exit_code=run.agent_code,
            verdict=run.verdict,
            summary=run.summary,
            agent=run.agent_info,
        )

    def _verify_ended(self, run: TaskRun, ended: procs.Exit, now: float) -> None:
        """Green completes the task; red asks the agent to fix it while retries are left,
        else fails the task with the command and the tail of its output."""
        command = self.verify_command(run) or ""
        code = ended.returncode
        assert code is not None
        log_file = self.layout.phase_log(run.task_id, Phase.VERIFY)
        before = run.verification or {}
        self._note_verification(run, code == 0, ended.code, now)
        self._discard_verify_output(run)
        if code == 0:
            self._end_attempt(run, TaskStatus.COMPLETED, now, None, run.agent_code)
            return
        why = phase_failed("verification", command, code, log_file)
        tree = run.verification.get("tree") if run.verification else None
        if tree and before.get("tree") == tree and before.get("command") == command:
            # The follow-up left the very tree that failed: asking again spends an agent
            # run on a verification whose answer is known.
            why = f"{why}; the follow-up changed nothing, so it is not asked again"
            self._end_attempt(run, TaskStatus.FAILED, now, why, run.agent_code)
            return
        if run.retries_left <= 0:
            self._end_attempt(run, TaskStatus.FAILED, now, why, run.agent_code)
            return
        run.retries_left -= 1
        self.follow_up(run, verify_followup(command, code, log_file), now, why=why)

    def _discard_verify_output(self, run: TaskRun) -> None:
        """What a verification left untracked goes once it has ended, however it ended:
        left there, the next autocommit (a follow-up's, a retry's) would commit it as the
        agent's work, and a finished worktree would be kept for it."""
        if run.worktree is None:
            return
        record = self.layout.untracked_record(run.task_id, run.attempt)
        stayed = discard_verify_output(self.worktrees, run.worktree, record)
        if stayed:
            log.info("%s: the verification left %s", run.task_id, ", ".join(stayed[:5]))

    def _note_verification(self, run: TaskRun, passed: bool, code: int | None, now: float) -> None:
        run.verification = {
            "command": self.verify_command(run) or "",
            "passed": passed,
            "exit_code": code,
            "duration_seconds": round(max(0.0, now - (run.phase_started or now)), 3),
            "log_file": str(self.layout.phase_log(run.task_id, Phase.VERIFY)),
        }
        # The tree it checked, where it started on nothing else and changed no tracked file:
        # landing need not verify that tree with the same command again, nor need a
        # follow-up that changed nothing be asked again.
        started_on, run.verify_tree = run.verify_tree, None
        worktree = run.worktree
        if started_on and worktree is not None and self.worktrees.tree_of(worktree) == started_on:
            run.verification["tree"] = started_on

    def follow_up(
        self,
        run: TaskRun,
        text: str,
        now: float,
        base: str | None = None,
        *,
        why: str | None = None,
    ) -> None:
        """Run the task again from where its agent left off, with ``text`` to act on.

        The next attempt continues the agent's session (as a retry does) with ``text`` as
        its whole prompt; an agent without a session gets its original prompt with
        ``text`` under a heading. ``base``, when given, is a commit merged into the task's
        branch (as the user) before that attempt; a conflict is left in the worktree, and
        the agent is told which files. For a task whose attempt has ended: one verifying
        (a red verification) or a finished one (completed too: landing that conflicted).
        It costs none of the task's retries; the caller bounds how often it asks.
        """
        if run.status is TaskStatus.RUNNING and run.child is not None and run.child.exit is None:
            raise RequestError(f"{run.task_id} is running; a follow-up waits for it to end")
        run.followup, run.followup_base = text, base
        why = why or f"follow-up: {text.strip().splitlines()[0][:200] if text.strip() else ''}"
        shown = f"{why}; the agent is asked to continue"
        if run.status is TaskStatus.RUNNING:
            self._requeue(
                run,
                now,
                "follow-up",
                why,
                shown,
                run.agent_code,
                followup=text,
                followup_base=base,
                verdict=run.verdict,
                summary=run.summary,
                verification=run.verification,
                exit_code=run.agent_code,
            )
            return
        if run.worktree is not None and not run.worktree.exists():
            run.worktree = None  # removed once it was clean: the branch is checked out again
        run.completed_at = None
        self._move(
            run,
            TaskStatus.QUEUED,
            now,
            shown,
            None,
            followup=text,
            followup_base=base,
            not_before=None,
        )

    def _park(self, agent: str, reset_at: float) -> None:
        """Every queued task of ``agent`` waits for its usage limit's reset (plus a margin);
        the wait is recorded (``not_before``), so a resumed orchestrator keeps it."""
        until = self.limits.park(agent, reset_at)
        why = self.limits.reason(agent)
        log.warning("%s; its tasks wait until %s", why, clock_time(until))
        for run in self.runs:
            if run.status is TaskStatus.QUEUED and run.profile.name == agent:
                run.hold_until = max(run.hold_until, until)
                self._record(run, error_message=why, not_before=run.hold_until)

    def _enforce_budget(self, now: float) -> None:
        """Once the budget is spent: with ``budget_hard`` stop the running tasks; once
        nothing runs, cancel what is still queued, so the orchestration ends."""
        spent = self.spent_usd()
        if not self.budget.spent_out(spent):
            return
        why = self.budget.spent_message()
        running = [r for r in self.runs if r.status is TaskStatus.RUNNING]
        if self.budget.hard:
            for run in running:
                if run.stopping is None:
                    self._stop(run, TaskStatus.CANCELLED, why, now)
        if not running:
            for run in self.runs:
                if run.status is TaskStatus.QUEUED:
                    self._finish(run, TaskStatus.CANCELLED, now, error=why)

    def spent_usd(self) -> float:
        """What the agents have cost: ended attempts, and running ones so far."""
        return sum(r.spent_usd + r.attempt_cost for r in self.runs)

    def _waiting_kinds(self, now: float) -> list[str]:
        kinds = []
        if self.waiting:
            kinds.append(
                "budget" if self.budget.waiting(self.spent_usd()) else self.admission.kind or "load"
            )
        if any(
            r.status is TaskStatus.QUEUED and self.limits.holds(r.profile.name, r.task_id, now)
            for r in self.runs
        ):
            kinds.append("usage_limit")
        return kinds

    def waited_seconds(self, now: float) -> dict[str, float]:
        return self.waits.seconds(now)

    def _record_accounts(self, now: float) -> None:
        """The orchestration's spend and waits, written when they change."""
        accounts = (round(self.spent_usd(), 6), self.waits.seconds(now))
        if accounts != self._accounts:
            self._accounts = accounts
            self.registry.set_accounts(self.layout.orchestration_id, *accounts)

    def _end_attempt(
        self, run: TaskRun, status: TaskStatus, now: float, error: str | None, code: int | None
    ) -> None:
        ended = AttemptRecord(
            run.attempt, ended_at=now, exit_code=code, status=status.value, error=error
        )
        self._finish(run, status, now, error=error, exit_code=code, attempt=ended)
        # Only now: should finishing fail for want of processes, the next tick takes the
        # same exit up again.
        run.child, run.stopping = None, None

    def _finish(
        self,
        run: TaskRun,
        status: TaskStatus,
        now: float,
        *,
        error: str | None = None,
        exit_code: int | None = None,
        attempt: AttemptRecord | None = None,
    ) -> None:
        run.completed_at, run.error, run.exit_code = now, error, exit_code
        fields: dict[str, Any] = {
            "exit_code": exit_code,
            "pid": None,
            "agent": run.agent_info,
            "last_heartbeat": run.last_heartbeat,
            "last_line": run.last_line[:500],
            "cpu_percent": run.cpu_percent,
            "memory_mb": run.memory_mb,
            "not_before": None,
            "verdict": run.verdict,
            "summary": run.summary,
            "verification": run.verification,
            "followup": None,
            "followup_base": None,
        }
        try:
            head = None
            if run.worktree is not None and run.branch and run.attempt > 0:
                # Before counting commits: an agent may have committed off its branch.
                head = self.worktrees.secure_head(run.task_id, run.worktree, run.branch)
            if run.branch and run.base_commit:
                fields["commits"] = self.worktrees.commits_ahead(run.branch, run.base_commit)
                stat = self.worktrees.diffstat(run.base_commit, run.branch)
                if stat is not None:
                    fields["changed_files"], fields["insertions"], fields["deletions"] = stat
            if run.branch and run.head_at_stop:
                after = self.worktrees.commits_ahead(run.branch, run.head_at_stop)
                fields["commits_after_cancel"] = after
                if after:
                    log.warning("%s: %d commit(s) landed after the stop", run.task_id, after)
            # A completed task's worktree goes if all its work is committed; so does one
            # made ahead for a task that never started (nothing ran in it). One whose HEAD
            # holds commits the branch does not stays with them.
            kept = head is not None and head.outcome is HeadOutcome.KEPT
            if (
                run.worktree is not None
                and not kept
                and (status is TaskStatus.COMPLETED or run.attempt == 0)
            ):
                tidied = self._tidy_worktree(run)
                error = tidied.pop("error_message", error)
                fields.update(tidied)
            if head is not None and head.note:
                error = f"{error}; {head.note}" if error else head.note
        except SpawnError as exc:
            if not (self.interrupted or self.fatal):
                raise  # the loop backs off and finishes the task later, commits counted
            # Stopping everything must end; nothing is removed unseen, and it says so.
            error = "; ".join(filter(None, [error, f"worktree kept, commits not counted: {exc}"]))
        self._move(run, status, now, error, attempt, **fields)

    def _tidy_worktree(self, run: TaskRun) -> dict[str, Any]:
        """Remove a completed task's worktree when all its work is committed."""
        assert run.worktree is not None
        if not run.worktree.exists():
            return {**_REMOVED}  # removed before a crash could record it
        try:
            # Without --force, git itself refuses a worktree with modified or untracked
            # files, so the check and the removal are one step.
            self.worktrees.remove(run.task_id, run.worktree)
        except GadugiError as exc:
            if run.worktree.exists() and not self.worktrees.is_clean(run.worktree):
                log.info("%s: keeping %s: it has uncommitted changes", run.task_id, run.worktree)
                return {"error_message": "worktree kept: it has uncommitted changes"}
            return {"error_message": f"worktree kept: {exc}"}
        return {**_REMOVED}

    # -- cancelling ---------------------------------------------------------------------

    def _apply_cancel_requests(self, now: float) -> None:
        for task_id, who in self.registry.cancel_requests(self.layout.orchestration_id).items():
            run = self.by_id.get(task_id)
            if run is not None:
                self.cancel(run, f"cancelled by {who}", now)

    def cancel(self, run: TaskRun, why: str, now: float) -> None:
        if run.status is TaskStatus.QUEUED:
            self._finish(run, TaskStatus.CANCELLED, now, error=why)
        elif run.status is TaskStatus.RUNNING and run.stopping is None:
            self._stop(run, TaskStatus.CANCELLED, why, now)

    def _cancel_doomed(self, now: float) -> None:
        statuses = {r.task_id: r.status for r in self.runs}
        for task_id, cause in doomed([r.slot for r in self.runs], statuses).items():
            what = self.by_id[cause].status.value
            self._finish(
                self.by_id[task_id],
                TaskStatus.CANCELLED,
                now,
                error=f"cancelled: dependency {cause} {what}",
            )

    def _stop_everything(self, now: float) -> bool:
        """Ctrl-C, SIGTERM or a fatal agent error: stop every running task, cancel the rest.

        Never waits: SIGTERM goes out at once, SIGKILL at the grace period's end, and each
        tick ends the tasks whose processes are gone. True while some are still stopping.
        """
        why = (
            f"cancelled: orchestrator interrupted ({self.interrupted})"
            if self.interrupted
            else f"cancelled: orchestration stopped: {self.fatal_task} failed past retrying"
        )
        pending = False
        for run in self.runs:
            child = run.child
            if run.status is not TaskStatus.RUNNING or child is None:
                continue
            self._begin_stop(run, now)
            if self.procs.finish_stop(child, now):
                self._end_attempt(
                    run, TaskStatus.CANCELLED, _ended_at(child, now), why, _code(child)
                )
            else:
                pending = True
        if pending:
            return True
        for run in self.runs:
            if run.status is TaskStatus.QUEUED:
                self._finish(run, TaskStatus.CANCELLED, now, error=why)
        return False

    # -- watching -----------------------------------------------------------------------

    def observe(self, run: TaskRun, now: float, reading: tuple[float, float] | None = None) -> None:
        """Heartbeat, last output line, agent progress and resources of a running task."""
        ctx = run.ctx
        if ctx is None:
            return
        sizes = [_size(ctx.log_file), _size(ctx.events_file)]
        if sum(sizes) != run.output_size:
            run.output_size, run.last_heartbeat = sum(sizes), now
            run.last_line = last_line(ctx.log_file) or run.last_line
        progress = getattr(run.profile, "progress", None)
        if progress is not None and sizes[1]:
            run.progress_offset, info = progress(ctx.events_file, run.progress_offset)
            run.agent_info.update({k: v for k, v in info.items() if v is not None})
            if info.get("cost_usd") is not None:
                run.attempt_cost = cost_of(info)
            if info.get("last_tool") and self.limits.is_canary(run.profile.name, run.task_id):
                # The model answered with work: the limit has lifted, the others may start.
                self.limits.passed(run.profile.name, run.task_id)
        if reading is not None:
            cpu_s, run.memory_mb = reading
            if run.cpu is not None and now > run.cpu[1]:
                run.cpu_percent = 100.0 * (cpu_s - run.cpu[0]) / (now - run.cpu[1])
            run.cpu = (cpu_s, now)
        # Not a change for the monitoring files: heartbeats and readings reach them at the
        # next interval's rewrite (``monitoring_interval_seconds``), state changes at once.
        self._check_stall(run, now)

    def _check_stall(self, run: TaskRun, now: float) -> None:
        """No output or agent event for the stall timeout: warn, or stop and retry."""
        limit_min = self.config.stall_timeout_minutes
        if not limit_min or run.last_heartbeat is None or run.stopping or run.child is None:
            return
        if run.phase not in (None, Phase.AGENT):
            return  # setup and verification have timeouts of their own, and quiet is fine
        quiet_s = now - run.last_heartbeat
        if quiet_s < limit_min * 60:
            if run.stalled:
                run.stalled = False
                self._record(run, error_message=None)
            return
        if run.stalled:
            return
        run.stalled = True
        why = f"stalled: no output or agent event for {quiet_s / 60:.1f} minutes"
        log.warning("%s: %s", run.task_id, why)
        self._record(run, error_message=why)
        if self.config.stall_action == "restart":
            self._stop(run, TaskStatus.QUEUED, why, now)

    def heartbeat_fields(self) -> dict[str, dict[str, Any]]:
        return {
            r.task_id: {
                "last_heartbeat": r.last_heartbeat,
                "cpu_percent": r.cpu_percent,
                "memory_mb": r.memory_mb,
                "last_line": r.last_line[:500],
                "agent": r.agent_info,
            }
            for r in self.runs
            if r.status is TaskStatus.RUNNING
        }

    def _move(
        self,
        run: TaskRun,
        status: TaskStatus,
        now: float,
        why: str | None,
        attempt: AttemptRecord | None = None,
        **fields: Any,
    ) -> None:
        """Every change of a task's status: checked by the state machine, written as a
        compare-and-set together with the attempt it starts or ends."""
        change = Transition(run.task_id, run.status, status, why)
        self.registry.transition(
            self.layout.orchestration_id, change, now, owner=self.owner, attempt=attempt, **fields
        )
        ended = run.status is TaskStatus.RUNNING
        log.debug("%s: %s -> %s%s", run.task_id, run.status, status, f" ({why})" if why else "")
        run.status, run.error = status, why
        if ended:
            run.spent_usd, run.attempt_cost = run.spent_usd + run.attempt_cost, 0.0
            # A canary that ended lets the others go (a new limit parks them again).
            self.limits.passed(run.profile.name, run.task_id)
            self._record_accounts(now)
        self._changed(run)

    def _record(self, run: TaskRun, **fields: Any) -> None:
        """Fields of a task other than its status (heartbeats, paths, messages)."""
        self.registry.update_task(
            self.layout.orchestration_id, run.task_id, owner=self.owner, **fields
        )
        self._changed(run)

    def _changed(self, run: TaskRun) -> None:
        self.changed = True
        self.on_dirty()
        if self.listener:
            self.listener.changed(run)


def _clock(at: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(at))


def _code(child: procs.Child) -> int | None:
    """The exit code to record: None when a signal ended the attempt, or it was lost."""
    return child.exit.code if child.exit is not None else None


def _ended_at(child: procs.Child, now: float) -> float:
    """When the attempt ended, as its supervisor recorded it (``now`` if nobody did)."""
    ended = child.exit
    return ended.ended_at if ended is not None and not ended.lost else now


def _transient_start_failure(exc: BaseException) -> bool:
    """Whether trying to start again later may succeed.

    git has no structured error for a lock held by another process, so its own
    wording ("Unable to create '....lock': File exists", "cannot lock ref") is the
    only signal; for the spawn itself, the errno says it.
    """
    if isinstance(exc, WorktreeError):
        return ".lock" in exc.stderr or "cannot lock" in exc.stderr
    if isinstance(exc, OSError):
        return exc.errno in (errno.EAGAIN, errno.EBUSY, errno.ENOMEM, errno.ETXTBSY)
    return False


def _shortened(text: str, limit: int = 300) -> str:
    """A command line for the log: a prompt passed as an argument can be pages long."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
