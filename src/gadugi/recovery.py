"""Picking up an orchestration whose orchestrator died: the registry against reality.

For each task the registry says was running, the supervisor's result file and the
recorded process identity (pid and start time) decide: a result means the agent
finished while nobody watched, and it is judged as usual; a live process is adopted
and watched to its end; neither means the attempt was lost and the task runs again.
Finished tasks keep their results. Nothing here starts a process.
"""

from __future__ import annotations

import time
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from . import procs
from .agents import AgentProfile, profile_for
from .config import OrchestrationConfig
from .errors import GadugiError, RegistryError, RequestError
from .lifecycle import parse_status
from .planning.prompts import read_prompt
from .planning.schedule import Slot, with_policy
from .registry import Registry
from .runner import Layout, TaskRun
from .tasks import ConflictPolicy, Phase, Prompt, TaskStatus
from .worktrees import WorktreeState


def stored_config(data: Any) -> OrchestrationConfig:
    """The configuration an orchestration was started with, as the registry kept it."""
    if not isinstance(data, dict):
        raise RegistryError(
            "the orchestration's recorded configuration cannot be read "
            f"({type(data).__name__} instead of an object); it cannot be resumed"
        )
    known = {f.name for f in fields(OrchestrationConfig)}
    values: dict[str, Any] = {}
    for key, value in data.items():
        if key in known:
            values[key] = tuple(value) if isinstance(value, list) else value
    try:
        return OrchestrationConfig(**values)
    except (GadugiError, TypeError, ValueError) as exc:
        raise RegistryError(
            f"the orchestration's recorded configuration is not valid ({exc}); it cannot be resumed"
        ) from None


def row_status(row: dict[str, Any]) -> TaskStatus:
    return parse_status(row["task_id"], row["status"])


def orchestrator_alive(orch: dict[str, Any]) -> bool:
    return orch["pid"] is not None and procs.same_process(orch["pid"], orch["pid_start_time"])


def live_overlap(registry: Registry, prompt_files: set[str]) -> tuple[str, list[str]] | None:
    """A running orchestration, with a live orchestrator, that has any of these prompts."""
    for orch in registry.orchestrations():
        if orch["state"] != "running" or not orchestrator_alive(orch):
            continue
        shared = sorted(
            r["prompt_file"] for r in registry.tasks(orch["id"]) if r["prompt_file"] in prompt_files
        )
        if shared:
            return orch["id"], shared
    return None


def resumable(registry: Registry, orch_id: str | None) -> dict[str, Any]:
    """The orchestration to resume: the one named, or the newest whose orchestrator died."""
    if orch_id is None:
        for candidate in registry.orchestrations()[::-1]:
            if candidate["state"] == "running" and not orchestrator_alive(candidate):
                return candidate
        raise RequestError(
            "no orchestration to resume: none was left running by a dead orchestrator"
        )
    orch = registry.orchestration(orch_id)
    if orch["state"] != "running":
        raise RequestError(
            f"orchestration {orch_id} is {orch['state']}; there is nothing to resume"
        )
    if orchestrator_alive(orch):
        raise RequestError(
            f"orchestration {orch_id} is still running (orchestrator pid {orch['pid']})"
        )
    return orch


def restore_runs(
    rows: list[dict[str, Any]],
    attempts: list[dict[str, Any]],
    layout: Layout,
    config: OrchestrationConfig,
) -> list[TaskRun]:
    profiles: dict[str, AgentProfile] = {}
    ended = {(a["task_id"], a["number"]) for a in attempts if a["status"] != "running"}
    started = {(a["task_id"], a["number"]): a["started_at"] for a in attempts}
    runs = []
    for row in rows:
        run = _restore(row, layout, config, profiles)
        if _maybe_started(run, row, ended):
            _reattach(run, row, layout, config, started.get((run.task_id, run.attempt)))
        runs.append(run)
    # Stack edges come from the recorded conflicts and the orchestration's own policy.
    slots = with_policy([r.slot for r in runs], ConflictPolicy(config.conflict_policy))
    for run, slot in zip(runs, slots, strict=True):
        run.slot = slot
    return runs


def _maybe_started(run: TaskRun, row: dict[str, Any], ended: set[tuple[str, int]]) -> bool:
    """Whether the task's latest attempt may have started and not been seen to end.

    Covers a crash between spawning an agent and recording it as running: the
    attempt number is recorded first, so its result file or process can be found.
    """
    if run.status is TaskStatus.RUNNING:
        return True
    return (
        run.status is TaskStatus.QUEUED
        and row["attempts"] >= 1
        and (run.task_id, row["attempts"]) not in ended
    )


def _restore(
    row: dict[str, Any],
    layout: Layout,
    config: OrchestrationConfig,
    profiles: dict[str, AgentProfile],
) -> TaskRun:
    slot = Slot(
        row["task_id"],
        row["seq"],
        row["priority"],
        tuple(row["depends_on"]),
        frozenset(row["conflicts_with"]),
    )
    status = row_status(row)
    problem: str | None = None
    try:
        prompt = read_prompt(layout.root / row["prompt_file"], layout.root)
        prompt = replace(prompt, task_id=row["task_id"])
        name = prompt.agent or config.agent
        if name not in profiles:
            profiles[name] = profile_for(name, config)
        profile = profiles[name]
    except GadugiError as exc:
        problem = f"cannot resume: {exc}"
        prompt = _placeholder_prompt(row, layout)
        profile = profile_for("shell", config)
    timeout_s = prompt.timeout_minutes * 60 if prompt.timeout_minutes else config.timeout_seconds
    retries = prompt.retries if prompt.retries is not None else config.retries
    worktree = Path(row["worktree"]) if row["worktree"] and not row["worktree_removed"] else None
    # A worktree recorded as intended may be missing, half-made or whole: the runner's
    # next start of the task adopts it or makes it again under the same name.
    intended = (
        (worktree, str(row["branch"]))
        if worktree and row["branch"] and row.get("worktree_state") == WorktreeState.INTENDED
        else None
    )
    run = TaskRun(
        prompt=prompt,
        slot=slot,
        profile=profile,
        status=status,
        branch=None if intended else row["branch"],
        worktree=None if intended else worktree,
        intended=intended,
        base_commit=row["base_commit"],
        attempt=row["attempts"],
        retries_left=max(0, retries - max(0, row["attempts"] - 1)),
        timeout_s=timeout_s,
        started_at=row["started_at"],
        completed_at=row["completed_at"],
        exit_code=row["exit_code"],
        error=row["error_message"],
        agent_info=row["agent"] or {},
        last_heartbeat=row["last_heartbeat"],
        last_line=row["last_line"] or "",
        hold_until=row["not_before"] or 0.0,  # a parked or backing-off task keeps waiting
        phase=Phase(row["phase"]) if row.get("phase") else None,
        # A worktree whose setup never finished green gets it (again) before its agent.
        needs_setup=row.get("phase") in (None, Phase.SETUP.value),
        agent_code=row["exit_code"],
        followup=row.get("followup"),
        followup_base=row.get("followup_base"),
        verdict=row.get("verdict"),
        summary=row.get("summary"),
        verification=row.get("verification"),
    )
    if problem and not status.finished:
        # The caller records this change; dependents are then cancelled as usual.
        run.status, run.error = TaskStatus.FAILED, problem
    return run


def _reattach(
    run: TaskRun,
    row: dict[str, Any],
    layout: Layout,
    config: OrchestrationConfig,
    attempt_started: float | None,
) -> None:
    """Watch the latest attempt again; its result file or its process tells the rest.

    When the supervisor itself is gone but processes of its group live on (it was killed,
    its agent was not), the attempt is still running: the group is watched until it is
    empty, so no second attempt ever starts beside the first in the same worktree.
    """
    pid, start_time = row["pid"], row["pid_start_time"]
    if pid is None or not procs.same_process(pid, start_time):
        found = procs.find_agent(layout.orchestration_id, run.task_id)
        if found:
            pid, start_time = found
        elif pid is None or not procs.orphaned_group(pid):
            pid, start_time = 0, 0.0
    # The phase was recorded before its child was spawned: its result file is the one.
    phase = run.phase or Phase.AGENT
    run.status, run.phase = TaskStatus.RUNNING, phase
    run.child = procs.Child(
        pid=pid,
        start_time=start_time,
        result_file=layout.result_file(run.task_id, run.attempt, phase),
    )
    run.ctx = layout.context(run)
    run.started_at = run.started_at or time.time()
    if phase is Phase.AGENT:
        # The deadline is the latest attempt's, not the first one's: a retried task that
        # was running when its orchestrator died gets its full timeout from its own start.
        run.deadline = (attempt_started or time.time()) + run.timeout_s
        return
    run.phase_started = start_time or attempt_started or time.time()
    minutes = (
        config.setup_timeout_minutes if phase is Phase.SETUP else config.verify_timeout_minutes
    )
    run.deadline = run.phase_started + minutes * 60


def _placeholder_prompt(row: dict[str, Any], layout: Layout) -> Prompt:
    path = layout.root / row["prompt_file"]
    return Prompt(
        path=path,
        rel_path=row["prompt_file"],
        task_id=row["task_id"],
        title=row["name"],
        body="",
        text="",
    )
