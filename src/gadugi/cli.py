"""The command line: argument parsing, output and exit codes, nothing else."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from . import __version__
from .config import AGENTS, OrchestrationConfig, load_config
from .errors import GadugiError, NotFoundError, RequestError
from .monitoring import STATUS_COLUMNS, status_document, write_json_atomic
from .planning.request import parse_request
from .registry import Registry
from .worktrees import repository_root

# Commands that only read the registry (status, cancel, export) should answer fast, so
# the orchestration machinery and rich are imported by the commands that use them.
if TYPE_CHECKING:
    from .coordinator import OrchestrationResult, OrchestratorCoordinator, Prepared
    from .livetable import LiveTable
    from .liveview import PlainLines, Silent

F = TypeVar("F", bound=Callable[..., Any])
DETACHED_LOG = "orchestrator.log"  # a detached orchestrator's output, beside its tasks' logs


def _json(data: Any, allow_nan: bool = True) -> str:
    """Indented for a person at a terminal, compact (and several times faster) for a pipe."""
    return json.dumps(data, indent=2 if sys.stdout.isatty() else None, allow_nan=allow_nan)


def _err(message: str) -> None:
    click.echo(f"gadugi: {message}", err=True)


def _root(project_root: str | None) -> Path:
    return repository_root(Path(project_root or os.getcwd()).resolve())


def selection_options(func: F) -> F:
    """The flags `run` and `plan` share: what to run and how."""
    opts = [
        click.argument("prompts", nargs=-1),
        click.option(
            "--stdin",
            "from_stdin",
            is_flag=True,
            help="Read the request (prompt names in any accepted format) from stdin.",
        ),
        click.option("--interactive", is_flag=True, help="Ask for prompt names."),
        click.option("--all", "all_prompts", is_flag=True, help="Every prompt in prompts/."),
        click.option(
            "--project-root",
            type=click.Path(file_okay=False),
            help="The repository (default: the git top level of the current directory).",
        ),
        click.option("--max-parallel", type=click.IntRange(1, 1024), help="Agents at once."),
        click.option(
            "--timeout",
            type=click.FloatRange(min=0, min_open=True),
            help="Per-task timeout in hours (fractions allowed).",
        ),
        click.option("--agent", type=click.Choice(AGENTS), help="The agent for every task."),
        click.option("--agent-cmd", help="Command template for the command agent."),
        click.option("--base", help="Branch new worktrees from this ref (default HEAD)."),
        click.option(
            "--retries", type=click.IntRange(0, 100), help="Retries for transient failures."
        ),
        click.option(
            "--no-fallback",
            is_flag=True,
            help="Exit 2 instead of running sequentially when analysis fails.",
        ),
        click.option("--json", "as_json", is_flag=True, help="Print the result as JSON."),
        click.option("--verbose", "-v", is_flag=True, help="Log what gadugi does."),
        click.option("--quiet", "-q", is_flag=True, help="Print nothing but errors."),
    ]
    for opt in reversed(opts):
        func = opt(func)
    return func


def _names(
    prompts: tuple[str, ...], from_stdin: bool, interactive: bool, every_in: Path | None = None
) -> list[str]:
    """The prompt names asked for; with ``every_in`` (``--all``), every prompt file there."""
    if every_in is not None:
        if prompts or from_stdin or interactive:
            raise RequestError("give prompt names, --stdin or --interactive, or --all; not both")
        found = sorted(
            p.name for p in every_in.glob("*.md") if p.is_file() and not p.name.startswith(".")
        )
        if not found:
            raise RequestError(f"no prompts in {every_in}: --all found no *.md file there")
        return found
    names = list(prompts)
    if from_stdin:
        names += parse_request(sys.stdin.read())
    if interactive:
        if sys.stdin.isatty():
            click.echo("Prompt names (any format; an empty line ends the list):", err=True)
        lines = []
        for line in sys.stdin:
            if not line.strip():
                break
            lines.append(line)
        names += parse_request("".join(lines))
    if not names:
        raise RequestError("no prompts named: give prompt names, --stdin or --interactive")
    return names


def _config(root: Path, **flags: Any) -> OrchestrationConfig:
    mapping = {
        "max_parallel": "max_parallel_tasks",
        "timeout": "execution_timeout_hours",
        "agent": "agent",
        "agent_cmd": "agent_cmd",
        "base": "base_ref",
        "retries": "retries",
    }
    values = {mapping[k]: v for k, v in flags.items() if k in mapping and v is not None}
    if flags.get("no_fallback"):
        values["fallback_to_sequential"] = False
    return load_config(root, values)


def _prepare(kw: dict[str, Any], listener: Any = None) -> tuple[OrchestratorCoordinator, Prepared]:
    logging.basicConfig(
        level=logging.INFO if kw["verbose"] else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    found = _root(kw["project_root"]) if kw["all_prompts"] else None
    names = _names(kw["prompts"], kw["from_stdin"], kw["interactive"], found and found / "prompts")
    root = found or _root(kw["project_root"])
    config = _config(root, **kw)
    warn = (lambda m: None) if kw["quiet"] else (lambda m: _err(f"skipped {m}"))
    from .coordinator import OrchestratorCoordinator

    coordinator = OrchestratorCoordinator(config, root, listener=listener, warn=warn)
    return coordinator, coordinator.prepare(names, cwd=Path.cwd())


class _Group(click.Group):
    """Maps gadugi's errors to their exit codes; nothing else in the package exits."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except GadugiError as exc:
            _err(str(exc))
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            _err("interrupted")
            sys.exit(130)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="gadugi")
def main() -> None:
    """Run many coding-agent tasks at once, each in its own git worktree and branch."""


def _listener(as_json: bool, quiet: bool) -> LiveTable | PlainLines | Silent:
    from .liveview import PlainLines, Silent

    stream = sys.stderr if as_json else sys.stdout
    if quiet:
        return Silent()
    if stream.isatty():
        from rich.console import Console

        from .livetable import LiveTable

        return LiveTable(Console(file=stream))
    return PlainLines(stream)


@main.command()
@selection_options
@click.option(
    "--detach",
    is_flag=True,
    help="Run the orchestrator in the background, immune to this terminal and its caller; "
    "print its id at once (see `gadugi wait`).",
)
def run(detach: bool, **kw: Any) -> None:
    """Run the named prompts from prompts/ in parallel worktrees."""
    if detach:
        _run_detached(kw)
        return
    listener = _listener(kw["as_json"], kw["quiet"])
    coordinator, prepared = _prepare(kw, listener)
    _warn_uncommitted(prepared.root, kw["quiet"])
    try:
        result = coordinator.run(prepared)
    finally:
        listener.close()
    _report(result, kw["as_json"], kw["quiet"])
    sys.exit(result.exit_code)


def _warn_uncommitted(root: Path, quiet: bool) -> None:
    from .doctor import uncommitted

    changed = [] if quiet else uncommitted(root)
    if changed:
        _err(
            f"warning: {len(changed)} uncommitted change(s) in {root} ({', '.join(changed[:3])}"
            f"{', ...' if len(changed) > 3 else ''}) that the agents will not see: they work "
            "from the base commit"
        )


def _run_detached(kw: dict[str, Any]) -> None:
    """Check the request here (so bad input still exits 2 at once), then detach."""
    from .detach import Ready, start
    from .liveview import PlainLines, Silent

    coordinator, prepared = _prepare(kw)
    _warn_uncommitted(prepared.root, kw["quiet"])

    def body(ready: Ready) -> int:
        listener = Silent() if kw["quiet"] else PlainLines(sys.stdout)
        coordinator.listener = listener
        try:
            result = coordinator.run(
                prepared,
                on_recorded=lambda layout: ready(
                    layout.orchestration_id, layout.logs_dir / DETACHED_LOG
                ),
            )
        finally:
            listener.close()
        # Into the log, for a person reading it; the result object is in the registry.
        _report(result, False, kw["quiet"])
        return result.exit_code

    started = start(body)
    if kw["as_json"]:
        click.echo(
            _json(
                {
                    "orchestration_id": started.orchestration_id,
                    "pid": started.pid,
                    "log_file": str(started.log_file),
                }
            )
        )
    else:
        click.echo(started.orchestration_id)
    if not kw["quiet"]:
        _err(
            f"detached (pid {started.pid}, log {started.log_file}); "
            f"gadugi wait {started.orchestration_id} returns its result"
        )


def _report(result: OrchestrationResult, as_json: bool, quiet: bool) -> None:
    if as_json:
        click.echo(_json(result.to_json()))
        return
    if quiet:
        return
    click.echo(
        f"\norchestration {result.orchestration_id}: {result.successful_tasks}/"
        f"{result.total_tasks} completed in {result.execution_time_seconds:.1f}s "
        f"(parallel speedup {result.parallel_speedup:.2f}x"
        f"{', sequential fallback' if result.fallback_used else ''})"
    )
    stopped = [line for line in result.error_summary if line.startswith("orchestration stopped")]
    for line in stopped:
        click.echo(line)
    totals = result.agent_totals
    if totals:
        click.echo(
            f"agents: ${totals.get('cost_usd', 0):.4f}, {int(totals.get('input_tokens', 0))} "
            f"input and {int(totals.get('output_tokens', 0))} output tokens"
        )
    for task in result.tasks:
        where = f"worktree kept at {task.worktree}" if task.worktree else "worktree removed"
        where = where if task.worktree or task.branch else "no worktree was made"
        click.echo(
            f"  {task.task_id:<24} {task.status:<10} branch {task.branch or '-'}, "
            f"{task.commits} commit(s), {where}"
        )
        if task.error_message:
            click.echo(f"  {'':<24} {task.error_message}")
        if task.status != "completed" and task.log_file:
            click.echo(f"  {'':<24} log: gadugi logs {task.task_id}")


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
def retry(
    task_id: str,
    orch_id: str | None,
    project_root: str | None,
    as_json: bool,
    quiet: bool,
    force: bool,
) -> None:
    """Run a task that is not running again in its worktree, continuing the agent's session."""
    _take_over(project_root, as_json, quiet, lambda c: c.retry(task_id, orch_id, force=force))


def _take_over(
    project_root: str | None,
    as_json: bool,
    quiet: bool,
    act: Callable[[OrchestratorCoordinator], OrchestrationResult],
) -> None:
    """Drive a recorded orchestration to its end (resume, retry) and report as run does."""
    listener = _listener(as_json, quiet)
    from .coordinator import OrchestratorCoordinator

    coordinator = OrchestratorCoordinator(project_root=_root(project_root), listener=listener)
    try:
        result = act(coordinator)
    finally:
        listener.close()
    _report(result, as_json, quiet)
    sys.exit(result.exit_code)


@main.command()
@selection_options
def plan(**kw: Any) -> None:
    """Analyse the named prompts and print the plan; runs nothing."""
    _, prepared = _prepare(kw)
    if kw["as_json"]:
        data = prepared.plan.to_json() | {"fallback_used": prepared.fallback_used}
        # Validated numbers are finite; should one ever not be, fail rather than print
        # Infinity or NaN, which are not JSON.
        click.echo(_json(data, allow_nan=False))
    elif not kw["quiet"]:
        from .planning.plan import render_plan

        click.echo(render_plan(prepared.plan))


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
    finally:
        registry.close()
    doc = status_document(orch["id"], rows, orch["state"], time.time(), orch.get("note"))
    alive = True
    if orch["state"] == "running":  # only then does the orchestrator's process matter
        from .procs import same_process

        alive = same_process(orch["pid"] or 0, orch["pid_start_time"])
    doc["orchestrator_alive"] = orch["state"] == "running" and alive
    if as_json:
        click.echo(_json(doc))
        return
    breakdown = ", ".join(f"{n} {s}" for s, n in doc["status_breakdown"].items())
    click.echo(f"{orch['id']} ({orch['state']}): {breakdown}")
    if not alive:
        click.echo(f"  its orchestrator (pid {orch['pid']}) is gone: gadugi resume {orch['id']}")
    if orch.get("note"):
        click.echo(f"  {orch['note']}")
    for task in doc["tasks"]:
        secs = task["runtime_seconds"]
        shown = f"{secs:.1f}s" if secs is not None else "-"
        click.echo(
            f"  {task['task_id']:<24} {task['status']:<10} {shown:>8}  "
            f"{task['error_message'] or task['last_line'] or ''}"
        )


@main.command()
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False))
@click.option("--project-root", type=click.Path(file_okay=False))
def export(output: str, project_root: str | None) -> None:
    """Write the whole registry as one JSON file."""
    folder = Path(output).parent
    if not folder.is_dir():
        why = "does not exist" if not folder.exists() else "is not a directory"
        raise RequestError(f"cannot write {output}: {folder} {why}")
    from .views import export_document

    registry = _registry(project_root)
    try:
        data = export_document(registry.export())
    finally:
        registry.close()
    write_json_atomic(Path(output), data)
    click.echo(f"wrote {len(data['orchestrations'])} orchestration(s) to {output}")


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
        from . import procs

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
    from . import lease, procs
    from .lifecycle import LostRace, Transition
    from .recovery import row_status

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
            from .tasks import TaskStatus

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
    from .cleanup import apply, plan_cleanup, serialized

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


@main.command()
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False),
    help="Where to create the demonstration repository (default: a new temp folder).",
)
@click.option("--tasks", "count", type=click.IntRange(2, 16), default=4, show_default=True)
def demo(directory: str | None, count: int) -> None:
    """Create a throwaway repository with a few prompts and run them with the shell agent."""
    from .demo import make_demo_repository

    root = make_demo_repository(Path(directory) if directory else None, count)
    names = sorted(p.name for p in (root / "prompts").glob("*.md"))
    click.echo(f"demo repository: {root}\nprompts: {', '.join(names)}\n")
    config = load_config(root, {"agent": "shell", "max_parallel_tasks": count})
    from .coordinator import OrchestratorCoordinator

    listener = _listener(as_json=False, quiet=False)
    coordinator = OrchestratorCoordinator(config, root, listener=listener)
    try:
        result = coordinator.orchestrate(names)
    finally:
        listener.close()
    _report(result, False, False)
    click.echo(
        f"\nwhere everything is:\n"
        f"  branches:    git -C {root} branch --list 'gadugi/*'\n"
        f"  logs:        {root}/.gadugi/logs/{result.orchestration_id}/\n"
        f"  monitoring:  {root}/.gadugi/monitoring/\n"
        f"  registry:    {root}/.gadugi/state.db  (gadugi status --project-root {root})"
    )
    sys.exit(result.exit_code)


@main.command()
@click.option(
    "--project-root",
    type=click.Path(exists=True, file_okay=False),
    help="The project to check (default: the current directory).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def doctor(project_root: str | None, as_json: bool) -> None:
    """Check the agent CLIs, git and the project: exit 0 when a run could start, else 1."""
    from .doctor import diagnose, render

    report = diagnose(Path(project_root or os.getcwd()).resolve())
    click.echo(_json(report.to_json()) if as_json else render(report))
    sys.exit(0 if report.ok else 1)


@main.command("install-agent")
@click.option("--project-root", type=click.Path(file_okay=False))
@click.option(
    "--user",
    is_flag=True,
    help="Install for every project: into $CLAUDE_CONFIG_DIR or ~/.claude instead of .claude/.",
)
@click.option(
    "--allow",
    is_flag=True,
    help="Also add the permission rule for gadugi's commands to Claude Code's settings "
    "(.claude/settings.local.json; with --user, ~/.claude/settings.json).",
)
@click.option(
    "--layout",
    is_flag=True,
    help="Also lay out the seed's .claude/orchestrator/ launchers (run_orchestrator.sh, "
    "orchestrator_cli.py, orchestrator_main.py, process_registry.py).",
)
@click.option("--force", is_flag=True, help="Replace files even if they were changed.")
@click.option(
    "--command",
    "command",
    help="How the files call gadugi (default: the absolute path of this gadugi).",
)
def install_agent(
    project_root: str | None,
    user: bool,
    allow: bool,
    layout: bool,
    force: bool,
    command: str | None,
) -> None:
    """Install /agent:orchestrator-agent for Claude Code: the command and the subagent."""
    from . import install_agent as ia

    if user and layout:
        raise click.UsageError("--layout lays out one project's .claude/orchestrator/; drop --user")
    root = _root(project_root)
    command = command or ia.default_command()
    ia.check_command(command, root)
    claude_dir = ia.claude_home() if user else root / ".claude"
    settings = (ia.USER_SETTINGS if user else ia.PROJECT_SETTINGS) if allow else None
    done = ia.install(
        claude_dir,
        command,
        force=force,
        settings=claude_dir / settings if settings else None,
        layout=root / ia.LAYOUT_DIR if layout else None,
    )
    messages = {
        ia.Action.CREATED: "wrote",
        ia.Action.UPDATED: "updated",
        ia.Action.UNCHANGED: "already up to date:",
        ia.Action.REPLACED: "replaced (--force)",
        ia.Action.ALLOWED: f"allowed {ia.permission_rule(command)} in",
    }
    for item in done:
        click.echo(f"{messages[item.action]} {item.path}")
    rule = ia.permission_rule(command)
    if not any(ia.rule_present(p, rule) for p in ia.settings_files(root)):
        _err(
            "note: /agent:orchestrator-agent carries its own permission; the subagent (for "
            "requests in plain words) is asked about each gadugi call, and headless `claude "
            f"-p` denies it, until {rule} is allowed: run this again with --allow"
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
    from .procs import same_process
    from .transcript import follow as follow_log
    from .views import Transcript

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
    from .views import render_task, task_view

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
    from .procs import same_process
    from .views import orchestration_list, render_list

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
    from .waiting import Ending, result_from_json, wait_for

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
