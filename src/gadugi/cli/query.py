"""Commands that read the registry: status, export, logs, show, list, wait."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ..errors import RequestError
from ..files import dumps
from ..holds import amount
from ..monitoring import STATUS_COLUMNS, status_document
from ..registry import Registry

# Commands that only read the registry (status, cancel, export) should answer fast, so
# the orchestration machinery and rich are imported by the commands that use them.
if TYPE_CHECKING:
    pass

from .main import _err, _json, _report, _root, main


def _registry(project_root: str | None) -> Registry:
    return Registry(_state_db(project_root), readonly=True)


def _state_db(project_root: str | None) -> Path:
    """Where the registry is, found without starting git when it can be.

    Read-only commands (status, export) should answer fast: walking up from the current
    directory to the first folder with ``.git`` finds the same top level git would.
    """
    if project_root is None:
        here = Path.cwd().resolve()
        for folder in (here, *here.parents):
            if (folder / ".git").exists():
                if (folder / ".gadugi" / "state.db").exists():
                    return folder / ".gadugi" / "state.db"
                break
    return _root(project_root) / ".gadugi" / "state.db"


@main.command()
@click.option("--orchestration", "orch_id", help="Which orchestration (default: the newest).")
@click.option("--project-root", type=click.Path(file_okay=False))
@click.option("--json", "as_json", is_flag=True)
def status(orch_id: str | None, project_root: str | None, as_json: bool) -> None:
    """What is queued, running and finished."""
    registry = _registry(project_root)
    try:
        orch = registry.orchestration(orch_id)
        rows = registry.tasks(orch["id"], STATUS_COLUMNS)
        attempts = registry.attempts(orch["id"])
    finally:
        registry.close()
    doc = status_document(orch["id"], rows, orch["state"], time.time(), orch.get("note"), attempts)
    alive = True
    if orch["state"] == "running":  # only then does the orchestrator's process matter
        from ..procs import same_process

        alive = same_process(orch["pid"] or 0, orch["pid_start_time"])
    doc["orchestrator_alive"] = orch["state"] == "running" and alive
    if as_json:
        click.echo(_json(doc))
        return
    from .liveview import fit, terminal_width

    width = terminal_width()

    def say(line: str, indent: str = "    ") -> None:
        for part in fit(line, width, indent):
            click.echo(part)

    breakdown = ", ".join(f"{n} {s}" for s, n in doc["status_breakdown"].items())
    reported = (
        amount(t["agent"].get("cost_usd")) for t in doc["tasks"] if isinstance(t["agent"], dict)
    )
    spent = [value for value in reported if value is not None]
    say(
        f"{orch['id']} ({orch['state']}): {breakdown}"
        + (f"; ${sum(spent):.4f} spent" if spent else "")
    )
    if not alive:
        say(f"  its orchestrator (pid {orch['pid']}) is gone: gadugi resume {orch['id']}")
    if orch.get("note"):
        say(f"  {orch['note']}")
    for task in doc["tasks"]:
        secs = task["runtime_seconds"]
        shown = f"{secs:.1f}s" if secs is not None else "-"
        agent = task["agent"] if isinstance(task["agent"], dict) else {}
        price = amount(agent.get("cost_usd"))
        facts = [f"branch {task['branch']}" if task["branch"] else "no branch yet"]
        if isinstance(price, int | float):
            facts.append(f"${price:.4f}")
        say(f"  {task['task_id']:<24} {task['status']:<10} {shown:>8}  {', '.join(facts)}")
        message = task["waiting_reason"] or task["error_message"] or task["last_line"]
        if message:
            say(f"  {'':<24} {message}", " " * 27)


@main.command()
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False))
@click.option("--project-root", type=click.Path(file_okay=False))
def export(output: str, project_root: str | None) -> None:
    """Write the whole registry as one JSON file."""
    from ..views import export_document
    from .output import output_target, write_output

    state_db = _state_db(project_root)
    target = output_target(output, registry=state_db)
    registry = Registry(state_db, readonly=True)
    try:
        data = export_document(registry.export())
    finally:
        registry.close()
    write_output(target, dumps(data, separators=(",", ":")) + "\n")
    click.echo(
        f"wrote {len(data['orchestrations'])} orchestration(s) to {output}", err=target.to_stdout
    )


@main.command()
@click.argument("task_id")
@click.option(
    "--orchestration", "orch_id", help="Which orchestration (default: the newest with it)."
)
@click.option("--project-root", type=click.Path(file_okay=False))
@click.option("--follow", "-f", is_flag=True, help="Keep printing until the task ends.")
@click.option("--raw", is_flag=True, help="The agent's own event stream (or output) as it is.")
@click.option("--attempt", type=click.IntRange(min=1), help="Only this attempt.")
def logs(
    task_id: str,
    orch_id: str | None,
    project_root: str | None,
    follow: bool,
    raw: bool,
    attempt: int | None,
) -> None:
    """The agent's transcript for a person, attempt by attempt."""
    from ..procs import same_process
    from ..transcript import follow as follow_log
    from ..views import Transcript

    def alive(orch: dict[str, Any]) -> bool:
        return same_process(orch["pid"] or 0, orch["pid_start_time"])

    registry = _registry(project_root)
    try:
        task = registry.find_task(task_id, orch_id)
        view = Transcript(registry, task, alive, follow=follow, raw=raw, only=attempt)
        known = task["attempts"]
        if attempt is not None and attempt > known and (view.progress.ended or not follow):
            raise RequestError(f"{task_id} has {known} attempt{'' if known == 1 else 's'}")
        follow_log(view.step, lambda lines: click.echo("\n".join(lines)))
    finally:
        registry.close()
    state = view.progress
    if state.note and follow:
        _err(f"{task_id} is still {state.status}: {state.note}")
    elif not state.attempts:
        _err(f"{task_id} is {state.status}: no attempt has started")


@main.command()
@click.argument("task_id")
@click.option(
    "--orchestration", "orch_id", help="Which orchestration (default: the newest with it)."
)
@click.option("--project-root", type=click.Path(file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print it as JSON.")
def show(task_id: str, orch_id: str | None, project_root: str | None, as_json: bool) -> None:
    """One task: status and why, attempts, branch and diffstat, cost, how to review it."""
    from ..views import render_task, task_view

    registry = _registry(project_root)
    try:
        view = task_view(registry, registry.find_task(task_id, orch_id), time.time())
    finally:
        registry.close()
    click.echo(_json(view) if as_json else "\n".join(render_task(view)))


@main.command("list")
@click.option("--project-root", type=click.Path(file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print them as JSON.")
@click.option(
    "--limit", type=click.IntRange(min=1), default=20, show_default=True, help="How many."
)
def list_orchestrations(project_root: str | None, as_json: bool, limit: int) -> None:
    """Past orchestrations, newest first: state, start, duration, tasks by status, cost."""
    from ..procs import same_process
    from ..views import orchestration_list, render_list

    registry = _registry(project_root)
    try:
        doc = orchestration_list(
            registry,
            limit,
            time.time(),
            lambda orch: same_process(orch["pid"] or 0, orch["pid_start_time"]),
        )
    finally:
        registry.close()
    click.echo(_json(doc) if as_json else "\n".join(render_list(doc)))


@main.command("wait")
@click.argument("orchestration_id", required=False)
@click.option(
    "--timeout",
    "timeout_s",
    type=click.FloatRange(min=0),
    help="Give up after this many seconds and exit 124 (the orchestration goes on).",
)
@click.option("--project-root", type=click.Path(file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("--quiet", "-q", is_flag=True, help="Print nothing but errors.")
def wait_command(
    orchestration_id: str | None,
    timeout_s: float | None,
    project_root: str | None,
    as_json: bool,
    quiet: bool,
) -> None:
    """Block until an orchestration (default: the newest) ends; exit as `run` would."""
    from ..waiting import Ending, result_from_json, wait_for

    outcome = wait_for(_state_db(project_root), orchestration_id, timeout_s)
    orch_id = outcome.orchestration_id
    if outcome.ending is Ending.TIMED_OUT:
        if as_json:
            click.echo(_json({"orchestration_id": orch_id, "state": "running", "timed_out": True}))
        _err(f"{orch_id} is still running after {timeout_s:g}s; `gadugi wait {orch_id}` again")
    elif outcome.ending is Ending.ORPHANED:
        if as_json:
            click.echo(
                _json(
                    {"orchestration_id": orch_id, "state": "running", "orchestrator_alive": False}
                )
            )
        _err(f"{orch_id}: its orchestrator is gone; `gadugi resume {orch_id}` finishes it")
    elif outcome.result is None:
        _err(f"{orch_id} ended ({outcome.ending}) without a recorded result")
    elif as_json:
        click.echo(_json(outcome.result))
    else:
        _report(result_from_json(outcome.result), False, quiet)
    sys.exit(outcome.exit_code)
