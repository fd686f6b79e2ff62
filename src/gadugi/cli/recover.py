"""Commands that act on recorded orchestrations: resume, retry, cancel, cleanup."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ..errors import NotFoundError
from ..registry import Registry

# Commands that only read the registry (status, cancel, export) should answer fast, so
# the orchestration machinery and rich are imported by the commands that use them.
if TYPE_CHECKING:
    from ..coordinator import OrchestrationResult, OrchestratorCoordinator

from .main import _err, _listener, _report, _root, main


@main.command()
@click.argument("orchestration_id", required=False)
@click.option("--project-root", type=click.Path(file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("--quiet", "-q", is_flag=True, help="Print nothing but errors.")
def resume(
    orchestration_id: str | None, project_root: str | None, as_json: bool, quiet: bool
) -> None:
    """Finish an orchestration whose orchestrator died (default: the newest such)."""
    _take_over(project_root, as_json, quiet, lambda c: c.resume(orchestration_id))


@main.command()
@click.argument("task_id")
@click.option(
    "--orchestration", "orch_id", help="Which orchestration (default: the newest with it)."
)
@click.option("--project-root", type=click.Path(file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("--quiet", "-q", is_flag=True, help="Print nothing but errors.")
@click.option("--force", is_flag=True, help="Also run a completed task again.")
@click.option(
    "--all",
    "whole",
    is_flag=True,
    help="Report, and exit by, the whole orchestration rather than the retried task.",
)
def retry(
    task_id: str,
    orch_id: str | None,
    project_root: str | None,
    as_json: bool,
    quiet: bool,
    force: bool,
    whole: bool,
) -> None:
    """Run a task that is not running again in its worktree, continuing the agent's session.

    Prints the retried task and exits 0 if it completed (``--all``: the whole orchestration);
    ``--json`` prints the whole result, this retry a segment of its own.
    """

    def act(coordinator: OrchestratorCoordinator) -> OrchestrationResult:
        result = coordinator.retry(task_id, orch_id, force=force)
        if whole:
            result.focus = None
        return result

    _take_over(project_root, as_json, quiet, act)


def _take_over(
    project_root: str | None,
    as_json: bool,
    quiet: bool,
    act: Callable[[OrchestratorCoordinator], OrchestrationResult],
) -> None:
    """Drive a recorded orchestration to its end (resume, retry) and report as run does."""
    listener = _listener(as_json, quiet)
    from ..coordinator import OrchestratorCoordinator

    coordinator = OrchestratorCoordinator(project_root=_root(project_root), listener=listener)
    try:
        result = act(coordinator)
    finally:
        listener.close()
    _report(result, as_json, quiet)
    sys.exit(result.exit_code)


@main.command()
@click.argument("task_id", required=False)
@click.option(
    "--task-id",
    "task_option",
    metavar="TASK_ID",
    help="The same as the TASK_ID argument (the seed's process_registry.py spelling).",
)
@click.option(
    "--orchestration", "orch_id", help="Which orchestration (default: the newest with it)."
)
@click.option("--project-root", type=click.Path(file_okay=False))
@click.option(
    "--wait",
    "wait_s",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    help="Seconds to wait for the task to stop.",
)
def cancel(
    task_id: str | None,
    task_option: str | None,
    orch_id: str | None,
    project_root: str | None,
    wait_s: float,
) -> None:
    """Stop one task (its whole process group) from any terminal."""
    if task_id and task_option and task_id != task_option:
        raise click.UsageError(f"two different tasks named: {task_id} and --task-id {task_option}")
    task_id = task_id or task_option
    if not task_id:
        raise click.UsageError("name the task: gadugi cancel TASK_ID (or --task-id TASK_ID)")
    registry = Registry.existing(_root(project_root) / ".gadugi" / "state.db")
    try:
        task = registry.find_task(task_id, orch_id)
        if task["status"] not in ("queued", "running"):
            click.echo(f"{task_id} already {task['status']}; nothing to cancel")
            return
        orch = registry.orchestration(task["orchestration_id"])
        if orch["state"] != "running":
            raise NotFoundError(f"orchestration {orch['id']} is not running ({orch['state']})")
        who = f"gadugi cancel (pid {os.getpid()})"
        registry.request_cancel(orch["id"], task_id, who)
        from .. import procs

        if not procs.same_process(orch["pid"] or 0, orch["pid_start_time"]) and _cancel_orphan(
            registry, orch["id"], task, who
        ):
            # Nobody was there to act on the request: it was carried out here.
            task = registry.find_task(task_id, orch["id"])
            click.echo(
                f"{task_id}: {task['status']} (its orchestrator is gone; "
                f"gadugi resume {orch['id']})"
            )
            return
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            task = registry.find_task(task_id, orch["id"])
            if task["status"] not in ("queued", "running"):
                click.echo(f"{task_id}: {task['status']}")
                return
            time.sleep(0.1)
    finally:
        registry.close()
    _err(f"{task_id}: cancel requested; still {task['status']} after {wait_s:g}s")
    sys.exit(1)


def _cancel_orphan(registry: Registry, orch_id: str, task: dict[str, Any], who: str) -> bool:
    """Cancel a task whose orchestrator is gone, as its owner for the moment.

    The canceller claims the orchestration's lease (so a resume starting now cannot run the
    task beside it), stops the agent, records the cancellation as a compare-and-set, and
    gives ownership up again so ``gadugi resume`` can finish the rest. Returns False when
    another process owns the orchestration after all (it will act on the request).
    """
    from .. import lease, procs
    from ..lifecycle import LostRace, Transition
    from ..recovery import row_status

    state_dir = registry.path.parent
    try:
        held = lease.claim(state_dir, orch_id)
    except lease.Owned:
        return False
    with held:
        orch = registry.orchestration(orch_id)
        if procs.same_process(orch["pid"] or 0, orch["pid_start_time"]):
            return False
        me = os.getpid()
        registry.take_over(orch_id, me, procs.process_start_time(me), held.token)
        try:
            task = registry.find_task(task["task_id"], orch_id)
            old = row_status(task)
            if old.finished:
                return True
            if task["status"] == "running" and task["pid"]:
                child = procs.Child(task["pid"], task["pid_start_time"] or 0.0, Path(os.devnull))
                if procs.same_process(child.pid, child.start_time) or procs.orphaned_group(
                    child.pid
                ):
                    procs.terminate([child], grace_s=5.0)
            from ..tasks import TaskStatus

            with suppress(LostRace):  # it ended meanwhile: its own status stands
                registry.transition(
                    orch_id,
                    Transition(task["task_id"], old, TaskStatus.CANCELLED, f"cancelled by {who}"),
                    time.time(),
                    owner=held.token,
                    pid=None,
                )
        finally:
            registry.release(orch_id, held.token)
    return True


@main.command()
@click.option(
    "--older-than",
    "hours",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Only orchestrations finished at least this many hours ago.",
)
@click.option("--dry-run", is_flag=True, help="Say what would be removed; remove nothing.")
@click.option(
    "--force",
    is_flag=True,
    help="Also remove dirty worktrees and branches whose commits exist nowhere else.",
)
@click.option("--project-root", type=click.Path(file_okay=False))
def cleanup(hours: float, dry_run: bool, force: bool, project_root: str | None) -> None:
    """Remove finished orchestrations' worktrees, merged branches and old records."""
    from ..cleanup import apply, plan_cleanup, serialized

    root = _root(project_root)
    state_dir = root / ".gadugi"
    registry = Registry.existing(state_dir / "state.db")
    try:
        with serialized(state_dir):
            plan = plan_cleanup(root, registry, hours, force)
            lines = plan.preview() if dry_run else apply(root, registry, plan, state_dir)
    finally:
        registry.close()
    for line in lines:
        click.echo(line)
    for line in plan.kept:
        click.echo(f"kept {line}")
    for line in plan.notes:
        click.echo(f"note: {line}")
    if not (lines or plan.kept or plan.notes):
        click.echo("nothing to clean up")
    if any(line.startswith("could not") for line in lines):
        sys.exit(1)
