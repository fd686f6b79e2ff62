"""The seed's OrchestratorCoordinator: request -> plan -> worktrees and agents -> result."""

from __future__ import annotations

import logging
import os
import secrets
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from . import lease, notify, procs, recovery, segments
from .agents import AgentProfile, check_prompts, profile_for, require_program
from .config import OrchestrationConfig, check_directories
from .errors import ConfigError, GadugiError, PlanError, RequestError
from .landing import (
    Lander,
    LandOptions,
    check_integration_room,
    check_into,
    options_for,
    orchestration_landing,
    task_landing,
)
from .lifecycle import Transition
from .monitoring import Monitor
from .planning import plan as planning
from .planning.accuracy import plan_accuracy
from .planning.prompts import read_prompt, unique_ids
from .planning.request import Resolution, resolve_names
from .procs import process_start_time
from .promptgen import Template, load_template
from .registry import Registry
from .runner import Layout, Listener, Runner, TaskRun
from .tasks import ConflictPolicy, Prompt, TaskStatus, iso
from .views import diffstat
from .worktrees import (
    Worktrees,
    exclude_paths,
    repository_root,
    resolve_commit,
    tracked_among,
    tracked_files,
    user_identity,
)

log = logging.getLogger(__name__)
STATE_DIR = ".gadugi"
RETRYABLE = frozenset({TaskStatus.FAILED, TaskStatus.TIMEOUT, TaskStatus.CANCELLED})


def new_orchestration_id(now: float | None = None) -> str:
    stamp = datetime.fromtimestamp(time.time() if now is None else now).strftime("%Y%m%d-%H%M%S")
    return f"orch-{stamp}-{secrets.token_hex(2)}"


@dataclass
class TaskResult:
    task_id: str
    task_name: str
    prompt_file: str
    status: str
    exit_code: int | None
    attempts: int
    started_at: str | None
    completed_at: str | None
    duration_seconds: float | None
    branch: str | None
    worktree: str | None
    log_file: str | None
    commits: int
    error_message: str | None
    agent: dict[str, Any]
    landing: dict[str, Any] | None = None  # landing.task_landing
    verdict: str | None = None  # the agent's structured verdict: done, blocked, no_change
    summary: str | None = None
    verification: dict[str, Any] | None = None  # command, passed, exit_code, duration, log
    changed_files: int | None = None  # the branch's diffstat against its base
    insertions: int | None = None
    deletions: int | None = None
    commits_after_cancel: int | None = None  # set when the task was stopped: what landed after


@dataclass
class OrchestrationResult:
    orchestration_id: str
    started_at: str | None
    finished_at: str | None
    total_tasks: int
    successful_tasks: int
    failed_tasks: int
    execution_time_seconds: float
    parallel_speedup: float
    fallback_used: bool
    error_summary: list[str]
    tasks: list[TaskResult] = field(default_factory=list)
    agent_totals: dict[str, float] = field(default_factory=dict)
    landing: dict[str, Any] | None = None  # landing.orchestration_landing
    plan_accuracy: dict[str, Any] | None = None  # planning/accuracy.py, once the run ends
    waited_seconds: dict[str, float] = field(default_factory=dict)  # admission, per reason
    budget_usd: float | None = None
    spent_usd: float | None = None  # what the agents cost, as they reported it
    segments: list[dict[str, Any]] = field(default_factory=list)
    interrupted: bool = False
    # The tasks this command drove (a retry's), when it judges and reports only those.
    focus: tuple[str, ...] | None = None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("interrupted")
        data.pop("focus")
        return data

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return 130
        landed = self.landing is None or all(
            t.landing is not None and t.landing["status"] == "landed"
            for t in self.tasks
            if t.status == TaskStatus.COMPLETED
        )
        if self.focus is not None:
            mine = [t for t in self.tasks if t.task_id in self.focus]
            return 0 if all(t.status == TaskStatus.COMPLETED for t in mine) and landed else 1
        return 0 if self.successful_tasks == self.total_tasks and landed else 1


def build_result(
    orch: dict[str, Any],
    rows: list[dict[str, Any]],
    interrupted: bool = False,
    *,
    attempts: list[dict[str, Any]] | None = None,
    parts: list[dict[str, Any]] | None = None,
) -> OrchestrationResult:
    """The result object, from the registry alone (so `resume` and `run` agree).

    With ``attempts``, a task's duration is the sum of its attempts' run times; with
    ``parts`` (the segments), the wall time is theirs, never the idle time between them.
    """
    started, finished = orch["started_at"], orch["finished_at"] or time.time()
    run_s = segments.task_run_seconds(attempts) if attempts is not None else None
    tasks = [_task_result(r, run_s) for r in rows]
    busy = sum(t.duration_seconds or 0.0 for t in tasks)
    if parts:
        wall, speedup = segments.totals(parts, busy)
    else:
        wall = round(max(finished - started, 1e-9), 3)
        speedup = round(busy / wall, 3)
    return OrchestrationResult(
        orchestration_id=orch["id"],
        started_at=iso(started),
        finished_at=iso(finished),
        total_tasks=len(tasks),
        successful_tasks=sum(t.status == TaskStatus.COMPLETED for t in tasks),
        failed_tasks=sum(t.status != TaskStatus.COMPLETED for t in tasks),
        execution_time_seconds=wall,
        parallel_speedup=speedup,
        fallback_used=bool(orch["fallback_used"]),
        error_summary=[
            f"{t.task_id}: {t.status}: {t.error_message}"
            for t in tasks
            if t.status != TaskStatus.COMPLETED
        ],
        tasks=tasks,
        agent_totals=_agent_totals(tasks),
        landing=orchestration_landing(orch, rows),
        segments=list(parts or []),
        interrupted=interrupted,
        **_accounts(orch, tasks),
    )


def measure_accuracy(root: Path, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The plan's predicted conflicts against the files each completed branch changed
    since its own base (the list the task recorded, where it did)."""
    changed: dict[str, list[str]] = {}
    for row in rows:
        if row["status"] != TaskStatus.COMPLETED or not row["branch"] or not row["base_commit"]:
            continue
        recorded = row.get("changed_files")
        if isinstance(recorded, list) and all(isinstance(p, str) for p in recorded):
            changed[row["task_id"]] = recorded
            continue
        stat = diffstat(root, row["base_commit"], row["branch"])
        if stat is not None:
            changed[row["task_id"]] = [f["path"] for f in stat.files]
    predicted = {row["task_id"]: row["conflicts_with"] or [] for row in rows}
    return plan_accuracy(predicted, changed)


def _accounts(orch: dict[str, Any], tasks: list[TaskResult]) -> dict[str, Any]:
    """``waited_seconds``, ``budget_usd`` and ``spent_usd`` as the loop recorded them."""
    config = orch.get("config")
    config = config if isinstance(config, dict) else {}
    waited = orch.get("waited_seconds")
    spent = orch.get("spent_usd")
    if spent is None:
        spent = _agent_totals(tasks).get("cost_usd")
    return {
        "waited_seconds": waited if isinstance(waited, dict) else {},
        "budget_usd": config.get("budget_usd"),
        "spent_usd": None if spent is None else round(float(spent), 6),
    }


def _agent_totals(tasks: list[TaskResult]) -> dict[str, float]:
    """Cost and tokens summed over the tasks whose agents report them."""
    totals: dict[str, float] = {}
    for key in ("cost_usd", "input_tokens", "output_tokens"):
        values = [t.agent[key] for t in tasks if isinstance(t.agent.get(key), int | float)]
        if values:
            totals[key] = round(sum(values), 6)
    return totals


def _task_result(row: dict[str, Any], run_s: dict[str, float] | None = None) -> TaskResult:
    start, end = row["started_at"], row["completed_at"]
    if run_s is not None:
        duration = round(run_s[row["task_id"]], 3) if row["task_id"] in run_s else None
    else:
        duration = round(end - start, 3) if start is not None and end is not None else None
    return TaskResult(
        task_id=row["task_id"],
        task_name=row["name"],
        prompt_file=row["prompt_file"],
        status=row["status"],
        exit_code=row["exit_code"],
        attempts=row["attempts"],
        started_at=iso(start),
        completed_at=iso(end),
        duration_seconds=duration,
        branch=row["branch"],
        worktree=None if row["worktree_removed"] else row["worktree"],
        log_file=row["log_file"],
        commits=row["commits"] or 0,
        error_message=row["error_message"],
        agent=row["agent"] or {},
        landing=task_landing(row),
        verdict=row.get("verdict"),
        summary=row.get("summary"),
        verification=row.get("verification"),
        changed_files=row.get("changed_files"),
        insertions=row.get("insertions"),
        deletions=row.get("deletions"),
        commits_after_cancel=row.get("commits_after_cancel"),
    )


@dataclass(frozen=True)
class Landed:
    """What ``gadugi land`` reports: the result object, notes for a person, its exit code."""

    result: OrchestrationResult
    notes: list[str]
    exit_code: int


@dataclass
class Prepared:
    """A request checked and analysed; nothing has been created yet."""

    root: Path
    prompts: list[Prompt]
    plan: planning.Plan
    fallback_used: bool
    problems: list[str]


class OrchestratorCoordinator:
    """Wires request, plan, registry, worktrees, agents and monitoring together."""

    def __init__(
        self,
        config: OrchestrationConfig | None = None,
        project_root: str | os.PathLike[str] = ".",
        *,
        listener: Listener | None = None,
        warn: Callable[[str], None] | None = None,
    ) -> None:
        self.config = config or OrchestrationConfig()
        self.root = repository_root(Path(project_root).resolve())
        self.listener = listener
        self.warn = warn or log.warning
        self.state_dir = self.root / STATE_DIR
        self.lander: Lander | None = None  # the last loop's lander, for its notes
        self._earlier: dict[str, list[dict[str, Any]]] = {}  # segments before this drive

    # -- analysis -----------------------------------------------------------------------

    def resolve(self, names: Sequence[str], cwd: Path | None = None) -> Resolution:
        return resolve_names(list(names), self.root, cwd)

    def prepare(self, names: Sequence[str], cwd: Path | None = None) -> Prepared:
        """Resolve, read and analyse the prompts; raises before anything is created."""
        resolution = self.resolve(names, cwd)
        for problem in resolution.problems:
            self.warn(f"skipped {problem}")
        if not resolution.paths:
            what = "; ".join(resolution.problems) if resolution.problems else "no prompt named"
            raise RequestError(f"nothing to run: {what}")
        prompts = unique_ids(read_prompt(p, self.root) for p in resolution.paths)
        parallel = self.config.max_parallel_tasks
        policy = ConflictPolicy(self.config.conflict_policy)
        fallback = False
        try:
            files = tracked_files(self.root)
            plan = planning.analyze(prompts, self.root, files, parallel, policy)
        except PlanError:
            raise
        except Exception as exc:  # analysis is best effort; the seed falls back to sequential
            if not self.config.fallback_to_sequential:
                raise PlanError(f"task analysis failed: {exc!r} (fallback disabled)") from exc
            self.warn(f"task analysis failed ({exc!r}); running the tasks one at a time")
            # One at a time, each from the base and judged on its own: a plan that knows
            # nothing of the tasks cannot say which may safely run together.
            plan, fallback = planning.sequential_plan(prompts, policy), True
            self.config = replace(self.config, max_parallel_tasks=1)
        _log_plan(plan, prompts)
        plan = self._learn_estimates(plan, prompts)
        check_directories(self.root, self.config, STATE_DIR)
        self._check_excluded()
        load_template(self.root)  # checks it, so `plan` refuses what `run` would
        check_prompts(prompts, self.config.agent)
        if self.config.land:
            user_identity(self.root)
            check_integration_room(self.root)
            if self.config.land_into:
                check_into(self.root, self.config.land_into)
        return Prepared(self.root, prompts, plan, fallback, resolution.problems)

    def _check_excluded(self) -> None:
        """What gadugi lists in .git/info/exclude is ignored in every worktree: a folder the
        repository tracks would hide the agent's new files under it from the autocommit,
        and they would go with the finished worktree."""
        cfg = self.config
        for key, paths, what in (
            ("setup_cache_paths", cfg.setup_cache_paths, "what the setup command makes"),
            ("worktrees_dir", (cfg.worktrees_dir,), "a folder of gadugi's own"),
            ("monitoring_dir", (cfg.monitoring_dir,), "a folder of gadugi's own"),
        ):
            tracked = tracked_among(self.root, [p.strip("/") for p in paths])
            if tracked:
                raise ConfigError(
                    key, f"{tracked[0]!r} is tracked in the repository; name only {what}"
                )

    def _learn_estimates(self, plan: planning.Plan, prompts: list[Prompt]) -> planning.Plan:
        """Estimates from this project's measured history, where it has similar tasks."""
        from .planning.history import apply_history
        from .stats import history

        try:
            registry = Registry(self.state_dir / "state.db", readonly=True)
        except GadugiError:
            return plan  # no history yet (or none readable): the prompts' own estimates
        try:
            return apply_history(plan, prompts, history(registry))
        except GadugiError as exc:
            self.warn(f"the history's estimates were not used: {exc}")
            return plan
        finally:
            registry.close()

    # -- running ------------------------------------------------------------------------

    def orchestrate(
        self, prompt_files: Sequence[str], cwd: Path | None = None
    ) -> OrchestrationResult:
        return self.run(self.prepare(prompt_files, cwd))

    def run(
        self, prepared: Prepared, on_recorded: Callable[[Layout], None] | None = None
    ) -> OrchestrationResult:
        """Run the prepared orchestration to its end; ``on_recorded`` hears of it as soon as
        the registry holds it (``run --detach`` lets its caller go then)."""
        cfg = self.config
        base = resolve_commit(self.root, cfg.base_ref)
        template = load_template(self.root)
        runs = self._task_runs(prepared)
        self._refuse_overlap(prepared)
        layout = self._layout(new_orchestration_id())
        registry = Registry(self.state_dir / "state.db")
        try:
            with lease.claim(self.state_dir, layout.orchestration_id) as held:
                try:
                    self._create(registry, layout, runs, base, prepared.fallback_used, held)
                except RequestError:
                    held.discard()  # refused: leave nothing of this orchestration behind
                    raise
                if on_recorded is not None:
                    on_recorded(layout)
                return self._drive(registry, layout, runs, base, template, held, "run")
        finally:
            registry.close()

    def resume(self, orch_id: str | None = None) -> OrchestrationResult:
        """Finish an orchestration whose orchestrator died, as a normal run would."""
        registry = Registry.existing(self.state_dir / "state.db")
        try:
            orch = recovery.resumable(registry, orch_id)
            with self._claim(registry, orch["id"]) as held:
                orch = recovery.resumable(registry, orch["id"])  # as it is now that we own it
                runs, layout = self._adopt(registry, orch, held)
                template = load_template(self.root)
                return self._drive(
                    registry, layout, runs, orch["base_commit"], template, held, "resume"
                )
        finally:
            registry.close()

    def retry(
        self, task_id: str, orch_id: str | None = None, *, force: bool = False
    ) -> OrchestrationResult:
        """Run a task that is not running again in its worktree (``force`` for a completed one).

        The agent continues its session where it supports that (claude: --resume).
        """
        registry = Registry.existing(self.state_dir / "state.db")
        try:
            row = registry.find_task(task_id, orch_id)
            orch = registry.orchestration(row["orchestration_id"])
            self._refuse_running(orch)
            with self._claim(registry, orch["id"]) as held:
                orch = registry.orchestration(orch["id"])
                self._refuse_running(orch)
                row = registry.find_task(task_id, orch["id"])
                old = recovery.row_status(row)
                if old not in RETRYABLE and not (force and old is TaskStatus.COMPLETED):
                    raise RequestError(
                        f"{task_id} is {old}; only failed, timed-out or cancelled tasks can be "
                        "retried (use --force to run a completed task again)"
                        if old is TaskStatus.COMPLETED
                        else f"{task_id} is {old}; there is nothing to retry"
                    )
                runs, _, layout = self._take_over(registry, orch, held)
                registry.transition(
                    orch["id"],
                    Transition(task_id, old, TaskStatus.QUEUED, f"retried (was {old})"),
                    time.time(),
                    owner=held.token,
                    cancel_requested=None,
                    not_before=None,
                )
                for run in runs:
                    if run.task_id == task_id:
                        run.status, run.hold_until = TaskStatus.QUEUED, 0.0
                        if old is TaskStatus.COMPLETED:
                            run.retries_left = max(run.retries_left, 0)
                template = load_template(self.root)
                return self._drive(
                    registry, layout, runs, orch["base_commit"], template, held, "retry", [task_id]
                )
        finally:
            registry.close()

    def land(
        self,
        orch_id: str,
        options: LandOptions,
        on_owned: Callable[[Path], None] | None = None,
    ) -> Landed:
        """Land a recorded orchestration's completed tasks (``gadugi land``), as its owner.

        The orchestration is taken over as ``resume`` does and its loop driven with the
        lander as one of its steps, so a task whose merge conflicts or turns verification
        red can be re-run (``land_retries``) exactly as under ``run --land``; an
        orchestration a dead orchestrator left running is finished on the way. ``on_owned``
        hears where the log goes once the lease is held (``land --detach``).
        """
        registry = Registry.existing(self.state_dir / "state.db")
        try:
            registry.orchestration(orch_id)
            with self._claim(registry, orch_id) as held:
                orch = registry.orchestration(orch_id)
                runs, layout = self._adopt(registry, orch, held)
                if on_owned is not None:
                    # Only now: `gadugi wait` sees it running until the landing ends.
                    layout.logs_dir.mkdir(parents=True, exist_ok=True)
                    on_owned(layout.logs_dir / "land.log")
                template = load_template(self.root)
                result = self._drive(
                    registry,
                    layout,
                    runs,
                    orch["base_commit"],
                    template,
                    held,
                    "land",
                    landing=options,
                )
                assert self.lander is not None
                code = result.exit_code if result.interrupted else self.lander.exit_code
                return Landed(result, self.lander.notes, code)
        finally:
            registry.close()

    @staticmethod
    def _refuse_running(orch: dict[str, Any]) -> None:
        if orch["state"] == "running":
            raise RequestError(
                f"orchestration {orch['id']} is not finished"
                + ("" if recovery.orchestrator_alive(orch) else "; gadugi resume it first")
            )

    def _claim(self, registry: Registry, orch_id: str) -> lease.Lease:
        """Become the one owner of a recorded orchestration, or be refused naming the owner."""
        try:
            held = lease.claim(self.state_dir, orch_id)
        except lease.Owned:
            orch = registry.orchestration(orch_id)
            who = (
                f"gadugi pid {orch['pid']}"
                if recovery.orchestrator_alive(orch)
                else "another gadugi process that is taking it over"
            )
            raise RequestError(f"orchestration {orch_id} is owned by {who}") from None
        orch = registry.orchestration(orch_id)
        if recovery.orchestrator_alive(orch) and orch["pid"] != os.getpid():
            # An owner from a gadugi that predates the lease: its pid still says it lives.
            held.release()
            raise RequestError(
                f"orchestration {orch_id} is still running (orchestrator pid {orch['pid']})"
            )
        return held

    def _adopt(
        self, registry: Registry, orch: dict[str, Any], held: lease.Lease
    ) -> tuple[list[TaskRun], Layout]:
        """Take over a recorded orchestration, its attempts adopted or found lost."""
        runs, rows, layout = self._take_over(registry, orch, held)
        now = time.time()
        for run, row in zip(runs, rows, strict=True):
            old = recovery.row_status(row)
            if run.status is not old:
                # Adopted (queued -> running) or unusable (-> failed).
                registry.transition(
                    orch["id"],
                    Transition(run.task_id, old, run.status, run.error),
                    now,
                    owner=held.token,
                )
        return runs, layout

    def _take_over(
        self, registry: Registry, orch: dict[str, Any], held: lease.Lease
    ) -> tuple[list[TaskRun], list[dict[str, Any]], Layout]:
        """Become the orchestrator of a recorded orchestration, its tasks restored."""
        # Its segments so far, read before this take-over marks it running again.
        self._earlier[orch["id"]] = segments.earlier_segments(
            orch, registry.attempts(orch["id"]), registry.tasks(orch["id"])
        )
        self.config = recovery.stored_config(orch["config"])
        # A folder replaced since (a file, a FIFO, a symlink loop) is refused while
        # nothing is changed, not met half-way through the loop.
        check_directories(self.root, self.config, STATE_DIR)
        layout = self._layout(orch["id"])
        rows = registry.tasks(orch["id"])
        runs = recovery.restore_runs(rows, registry.attempts(orch["id"]), layout, self.config)
        me = os.getpid()
        registry.take_over(orch["id"], me, process_start_time(me), held.token)
        return runs, rows, layout

    def _layout(self, orch_id: str) -> Layout:
        return Layout(
            root=self.root,
            orchestration_id=orch_id,
            worktrees_dir=self.root / self.config.worktrees_dir,
            logs_dir=self.state_dir / "logs" / orch_id,
            prompts_dir=self.state_dir / "prompts" / orch_id,
        )

    def _refuse_overlap(self, prepared: Prepared) -> None:
        """A second run of tasks that a live orchestration is running is refused."""
        path = self.state_dir / "state.db"
        if not path.exists():
            return
        registry = Registry(path, readonly=True)
        try:
            found = recovery.live_overlap(registry, {p.rel_path for p in prepared.prompts})
        finally:
            registry.close()
        if found:
            orch_id, shared = found
            raise RequestError(
                f"orchestration {orch_id} is already running {', '.join(shared)}; "
                f"wait for it, or stop it with gadugi cancel"
            )

    def _task_runs(self, prepared: Prepared) -> list[TaskRun]:
        by_id = {p.task_id: p for p in prepared.prompts}
        footprints = {t.task_id: t.footprint for t in prepared.plan.tasks}
        profiles: dict[str, AgentProfile] = {}
        runs = []
        for slot in prepared.plan.slots():
            prompt = by_id[slot.task_id]
            name = prompt.agent or self.config.agent
            if name not in profiles:
                require_program(name, self.config)
                profiles[name] = profile_for(name, self.config)
            timeout_s = (
                prompt.timeout_minutes * 60
                if prompt.timeout_minutes
                else self.config.timeout_seconds
            )
            retries = prompt.retries if prompt.retries is not None else self.config.retries
            runs.append(
                TaskRun(
                    prompt=prompt,
                    slot=slot,
                    profile=profiles[name],
                    timeout_s=timeout_s,
                    retries_left=retries,
                    footprint=footprints.get(slot.task_id, ()),
                )
            )
        return runs

    def _create(
        self,
        registry: Registry,
        layout: Layout,
        runs: list[TaskRun],
        base: str,
        fallback: bool,
        held: lease.Lease,
    ) -> None:
        me = os.getpid()
        tasks = [
            {
                "task_id": r.task_id,
                "name": r.prompt.title,
                "prompt_file": r.prompt.rel_path,
                "priority": r.slot.priority,
                "depends_on": list(r.slot.depends_on),
                "conflicts_with": sorted(r.slot.conflicts_with),
                "log_file": str(layout.logs_dir / f"{r.task_id}.log"),
                "events_file": str(layout.logs_dir / f"{r.task_id}.events.jsonl"),
            }
            for r in runs
        ]
        registry.create_orchestration(
            layout.orchestration_id,
            self.root,
            base,
            asdict(self.config),
            me,
            process_start_time(me),
            fallback,
            tasks,
            owner=held.token,
            alive=recovery.orchestrator_alive,
        )
        # Only once the orchestration is recorded (a refused one leaves nothing).
        for path in (layout.worktrees_dir, layout.logs_dir, layout.prompts_dir):
            path.mkdir(parents=True, exist_ok=True)
        exclude_paths(
            self.root,
            [
                f"/{d.strip('/')}/"
                for d in (self.config.worktrees_dir, STATE_DIR, self.config.monitoring_dir)
                if d == STATE_DIR or not _within(d, STATE_DIR)
            ],
        )
        # An environment the setup makes is no work of the agent's: never autocommitted, and
        # no reason to keep a finished worktree. No trailing '/': it may be a symlink.
        if self.config.setup_cache_paths:
            paths = [f"/{p.strip('/')}" for p in self.config.setup_cache_paths]
            exclude_paths(self.root, [*paths, "*.gadugi-restore"])

    def _drive(
        self,
        registry: Registry,
        layout: Layout,
        runs: list[TaskRun],
        base: str,
        template: Template,
        held: lease.Lease,
        kind: str,
        focus: list[str] | None = None,
        landing: LandOptions | None = None,
    ) -> OrchestrationResult:
        """Run the loop to the end and record the result, this drive (``kind``: run,
        resume, retry or land) a segment of its own beside the earlier ones; with
        ``landing`` (``gadugi land``) or ``land`` configured (``run --land``), the lander
        is one of its steps."""
        orch_id = layout.orchestration_id
        earlier = self._earlier.pop(orch_id, [])
        begun = registry.orchestration(orch_id)["started_at"] if kind == "run" else time.time()
        registry.begin_segment(orch_id, kind, begun)
        if focus is None:
            focus = [r.task_id for r in runs if kind == "run" or not r.status.finished]
        runner: Runner
        notifier = notify.from_config(self.config)
        monitor = Monitor(
            registry,
            orch_id,
            self.root / self.config.monitoring_dir,
            self.config.monitoring_interval_seconds,
            flush=lambda: registry.update_tasks(
                orch_id, runner.heartbeat_fields(), owner=held.token
            ),
        )
        if landing is None and self.config.land:
            landing = options_for(registry.orchestration(orch_id))
        lander = self.lander = (
            None
            if landing is None
            else Lander(
                self.root,
                registry,
                orch_id,
                landing,
                logs_dir=layout.logs_dir,
                worktrees_dir=layout.worktrees_dir,
                owner=held.token,
            )
        )
        runner = Runner(
            layout,
            runs,
            self.config,
            registry,
            Worktrees(self.root),
            template,
            base,
            listener=notifier.listener(orch_id, self.listener) if notifier else self.listener,
            on_dirty=monitor.mark_dirty,
            owner=held.token,
            lander=lander,
        )
        if lander is not None:
            lander.rerun = lambda task_id, text, base, why: runner.follow_up(
                runner.by_id[task_id], text, runner.clock(), base, why=why
            )
            if notifier is not None:
                lander.on_needs_person = lambda task_id, note: notifier.emit(
                    "needs_person", orch_id, task_id=task_id, reason="landing", message=note
                )
        # A live view that shows which orchestration it watches (the table's header).
        began = getattr(self.listener, "began", None)
        if callable(began):
            began(orch_id, begun)
        # A subreaper: what agents orphan is reparented to us, whatever its environment.
        with procs.subreaper(), _signals_to(runner):
            try:
                runner.run(between=monitor.maybe_write)
            except BaseException:
                runner.abandon()
                if notifier:
                    notifier.close()
                raise
            finally:
                # Nothing an agent started may outlive the orchestration, daemons included.
                alive = [r.child.pid for r in runner.runs if r.child and r.child.check() is None]
                procs.sweep(orch_id, self.config.kill_grace_seconds, keep=alive)
        state = "interrupted" if runner.interrupted else "finished"
        finished, attempts = time.time(), registry.attempts(orch_id)
        mine = segments.segment(kind, begun, finished, attempts, focus)
        result = build_result(
            registry.orchestration(orch_id) | {"finished_at": finished},
            registry.tasks(orch_id),
            interrupted=bool(runner.interrupted),
            attempts=attempts,
            parts=[*earlier, mine],
        )
        if kind == "retry":
            result.focus = tuple(focus)
        if runner.fatal:
            result.error_summary.insert(0, f"orchestration stopped: {runner.fatal}")
        if lander is not None:
            result.error_summary += [f"landing: {note}" for note in lander.notes]
        result.plan_accuracy = measure_accuracy(self.root, registry.tasks(orch_id))
        registry.finish_orchestration(orch_id, state, result.to_json(), owner=held.token)
        monitor.write(state)
        monitor.write_final(result.to_json())
        if notifier:
            notifier.emit_result(state, result.to_json())
            notifier.close()
        return result


def _log_plan(plan: planning.Plan, prompts: Sequence[Prompt]) -> None:
    """The plan's decisions, for ``--verbose``: footprints and where they came from,
    dependencies, each conflict and why, and the waves."""
    if not log.isEnabledFor(logging.DEBUG):
        return
    declared = {p.task_id for p in prompts if p.touches}
    by_id = {t.task_id: t for t in plan.tasks}
    for t in plan.tasks:
        source = "touches" if t.task_id in declared else "the prompt's text and imports"
        shown = ", ".join(t.footprint[:8]) + (" ..." if len(t.footprint) > 8 else "")
        log.debug(
            "plan: %s: footprint from %s: %s",
            t.task_id,
            source,
            shown if t.footprint else "nothing found (it conflicts with nothing)",
        )
        for dep in t.depends_on:
            log.debug("plan: %s depends on %s: it starts from that task's branch", t.task_id, dep)
    for t in plan.tasks:
        for other in t.conflicts_with:
            if other > t.task_id and other in by_id:
                shared = sorted(set(t.footprint) & set(by_id[other].footprint))
                why = (
                    f"both touch {', '.join(shared[:8])}" if shared else "their footprints overlap"
                )
                log.debug("plan: %s and %s conflict: %s; never run together", t.task_id, other, why)
    for n, wave in enumerate(plan.waves, 1):
        log.debug("plan: wave %d: %s", n, ", ".join(wave))


def _within(path: str, folder: str) -> bool:
    """Whether the relative ``path`` is ``folder`` or inside it (excluded with it, then)."""
    return Path(path).parts[: len(Path(folder).parts)] == Path(folder).parts


@contextmanager
def _signals_to(runner: Runner) -> Iterator[None]:
    """Route SIGINT and SIGTERM to the runner's flag while it runs (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {
        sig: signal.signal(sig, runner.interrupt) for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
