"""The command line: argument parsing, output and exit codes, nothing else."""

from __future__ import annotations

import errno
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from .. import __version__
from ..config import AGENTS, CONFLICT_POLICIES, OrchestrationConfig, load_config
from ..errors import GadugiError, RequestError
from ..files import dumps
from ..planning.request import parse_request
from ..worktrees import repository_root

# Commands that only read the registry (status, cancel, export) should answer fast, so
# the orchestration machinery and rich are imported by the commands that use them.
if TYPE_CHECKING:
    from ..coordinator import OrchestrationResult, OrchestratorCoordinator, Prepared
    from .livetable import LiveTable
    from .liveview import PlainLines, Silent

F = TypeVar("F", bound=Callable[..., Any])
DETACHED_LOG = "orchestrator.log"  # a detached orchestrator's output, beside its tasks' logs


def _json(data: Any, strict: bool = False) -> str:
    """Indented for a person at a terminal, compact (and several times faster) for a pipe.
    NaN and infinities (a damaged row's) become null, or with ``strict`` raise ValueError."""
    indent = 2 if sys.stdout.isatty() else None
    return (
        json.dumps(data, indent=indent, allow_nan=False) if strict else dumps(data, indent=indent)
    )


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
            "--verify",
            metavar="CMD",
            help="A shell command that must pass in each task's worktree after its agent exits "
            "(a prompt's verify: wins over it).",
        ),
        click.option(
            "--conflict-policy",
            type=click.Choice(CONFLICT_POLICIES),
            help="Conflicting tasks: stack (one after the other, the later on the earlier's "
            "branch; default), serialize (never together), optimistic (together).",
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
        "into": "land_into",
        "verify": "verify_command",
        "conflict_policy": "conflict_policy",
        "budget_usd": "budget_usd",
    }
    values = {mapping[k]: v for k, v in flags.items() if k in mapping and v is not None}
    if flags.get("no_fallback"):
        values["fallback_to_sequential"] = False
    if flags.get("land") or flags.get("into"):
        values["land"] = True  # --into lands too: there is nothing to fast-forward otherwise
    if flags.get("budget_hard"):
        values["budget_hard"] = True
    return load_config(root, values)


def _prepare(kw: dict[str, Any], listener: Any = None) -> tuple[OrchestratorCoordinator, Prepared]:
    logging.basicConfig(
        level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=_Stderr()
    )
    # gadugi's own decisions only: the libraries it uses keep to warnings.
    logging.getLogger("gadugi").setLevel(logging.DEBUG if kw["verbose"] else logging.WARNING)
    found = _root(kw["project_root"]) if kw["all_prompts"] else None
    names = _names(kw["prompts"], kw["from_stdin"], kw["interactive"], found and found / "prompts")
    root = found or _root(kw["project_root"])
    config = _config(root, **kw)
    warn = (lambda m: None) if kw["quiet"] else _err
    from ..coordinator import OrchestratorCoordinator

    coordinator = OrchestratorCoordinator(config, root, listener=listener, warn=warn)
    return coordinator, coordinator.prepare(names, cwd=Path.cwd())


class _Stderr:
    """Whatever ``sys.stderr`` is at the time of each write: the live table replaces it while
    it draws, so that log lines appear above the table instead of inside it."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


UNWRITABLE = (errno.EPIPE, errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EBADF)
# The commands that run or change work: one whose output breaks has still done it.
WORKING = frozenset({"run", "resume", "retry", "land", "cancel", "cleanup", "demo", "wait"})


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
        except OSError as exc:
            # A write to a stream (no file name): stdout full, closed or a broken pipe.
            if exc.filename is not None or exc.errno not in UNWRITABLE:
                raise
            from .output import discard_stdout

            discard_stdout()
            if ctx.invoked_subcommand in WORKING:
                # The work was done, or went on: only its report was lost. Not "2, nothing
                # changed".
                _err(
                    f"cannot write the output: {exc.strerror}; the work itself went on, "
                    "and gadugi status shows where it stands"
                )
                sys.exit(1)
            _err(f"cannot write the output: {exc.strerror}")
            sys.exit(2)


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
@click.option(
    "--land", is_flag=True, help="Land each task on gadugi/land/<orch> as soon as it completes."
)
@click.option("--into", help="With --land: fast-forward this branch when all is green.")
@click.option(
    "--budget-usd",
    type=float,
    help="Start no new task once the agents' cost reaches this many US dollars.",
)
@click.option(
    "--budget-hard", is_flag=True, help="Also stop running tasks when the budget is reached."
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
    from ..doctor import uncommitted

    changed = [] if quiet else uncommitted(root)
    if changed:
        _err(
            f"warning: {len(changed)} uncommitted change(s) in {root} ({', '.join(changed[:3])}"
            f"{', ...' if len(changed) > 3 else ''}) that the agents will not see: they work "
            "from the base commit"
        )


def _run_detached(kw: dict[str, Any]) -> None:
    """Check the request here (so bad input still exits 2 at once), then detach."""
    from ..detach import Ready, start
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
    from .liveview import fit, terminal_width

    width = terminal_width()

    def say(line: str, indent: str = "    ") -> None:
        """One line of the summary, wrapped between words to fit a terminal."""
        for part in fit(line, width, indent):
            click.echo(part)

    shown = [t for t in result.tasks if result.focus is None or t.task_id in result.focus]
    click.echo()
    if result.focus is not None and result.segments:
        # A retry reports what it did: its own tasks, in its own time.
        last = result.segments[-1]
        done = sum(t.status == "completed" for t in shown)
        say(
            f"{last['kind']} in orchestration {result.orchestration_id}: {done}/{len(shown)} "
            f"completed in {last['execution_time_seconds']:.1f}s (gadugi retry --all, or "
            "gadugi status, for the whole orchestration)"
        )
    else:
        say(
            f"orchestration {result.orchestration_id}: {result.successful_tasks}/"
            f"{result.total_tasks} completed in {result.execution_time_seconds:.1f}s "
            f"(parallel speedup {result.parallel_speedup:.2f}x"
            f"{', sequential fallback' if result.fallback_used else ''})"
        )
    stopped = [line for line in result.error_summary if line.startswith("orchestration stopped")]
    for line in stopped:
        say(line)
    from ..views import accuracy_line

    accuracy = accuracy_line(result.plan_accuracy)
    if accuracy:
        say(accuracy)
    totals = result.agent_totals
    if totals:
        say(
            f"agents: ${totals.get('cost_usd', 0):.4f}, {int(totals.get('input_tokens', 0))} "
            f"input and {int(totals.get('output_tokens', 0))} output tokens"
        )
    if result.landing:
        info = result.landing
        into = (
            f", {info['into']} fast-forwarded to it"
            if info["into"] and result.exit_code == 0
            else ""
        )
        say(f"landed {info['landed']} task(s) on {info['branch']}{into}")
    for line in _accounts_lines(result):
        say(line)
    for task in shown:
        where = f"worktree kept at {task.worktree}" if task.worktree else "worktree removed"
        where = where if task.worktree or task.branch else "no worktree was made"
        say(
            f"  {task.task_id:<24} {task.status:<10} branch {task.branch or '-'}, "
            f"{task.commits} commit(s), {where}"
        )
        if task.error_message:
            say(f"  {'':<24} {task.error_message}", " " * 27)
        if task.commits_after_cancel:
            say(f"  {'':<24} {task.commits_after_cancel} commit(s) landed after the stop", " " * 27)
        if task.status != "completed" and task.log_file:
            say(f"  {'':<24} log: gadugi logs {task.task_id}", " " * 27)
        if task.landing and task.landing["status"] != "landed":
            # A landing cut short (its lander killed) leaves tasks pending with no note.
            note = task.landing["note"] or f"gadugi land {result.orchestration_id} lands it"
            say(f"  {'':<24} landing {task.landing['status']}: {note}", " " * 27)


def _accounts_lines(result: OrchestrationResult) -> list[str]:
    """The budget and the time spent waiting for admission, when there is something to say."""
    lines = []
    if result.budget_usd is not None:
        lines.append(f"budget: ${result.spent_usd or 0:.4f} of ${result.budget_usd:g} spent")
    waited = {k: v for k, v in result.waited_seconds.items() if v > 0}
    if waited:
        parts = ", ".join(f"{k.replace('_', ' ')} {v:.1f}s" for k, v in sorted(waited.items()))
        lines.append(f"waited for admission: {parts}")
    return lines


@main.command()
@selection_options
def plan(**kw: Any) -> None:
    """Analyse the named prompts and print the plan; runs nothing."""
    _, prepared = _prepare(kw)
    if kw["as_json"]:
        data = prepared.plan.to_json() | {"fallback_used": prepared.fallback_used}
        # Validated numbers are finite; should one ever not be, fail rather than print
        # Infinity or NaN, which are not JSON.
        click.echo(_json(data, strict=True))
    elif not kw["quiet"]:
        from ..planning.plan import render_plan

        click.echo(render_plan(prepared.plan))


@main.command()
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False),
    help="Where to create the demonstration repository (default: a new temp folder).",
)
@click.option("--tasks", "count", type=click.IntRange(2, 16), default=4, show_default=True)
def demo(directory: str | None, count: int) -> None:
    """Create a throwaway repository with a few prompts and run them through to main.

    The shell agent does the work offline; each task's unit test is its verification, and
    the batch lands on main (``run --land --into main``)."""
    from ..demo import VERIFY, make_demo_repository

    root = make_demo_repository(Path(directory) if directory else None, count)
    names = sorted(p.name for p in (root / "prompts").glob("*.md"))
    click.echo(f"demo repository: {root}\nprompts: {', '.join(names)}")
    click.echo(f"verification: {VERIFY}; landing: --land --into main\n")
    config = load_config(
        root,
        {
            "agent": "shell",
            "max_parallel_tasks": count,
            "verify_command": VERIFY,
            "land": True,
            "land_into": "main",
            # Its tasks only sleep and write a file: a busy machine (a test suite beside
            # it) is no reason for the demonstration to wait.
            "max_load_per_cpu": 0,
        },
    )
    from ..coordinator import OrchestratorCoordinator

    listener = _listener(as_json=False, quiet=False)
    coordinator = OrchestratorCoordinator(config, root, listener=listener)
    try:
        result = coordinator.orchestrate(names)
    finally:
        listener.close()
    _report(result, False, False)
    orch = result.orchestration_id
    landing = result.landing or {}
    click.echo(
        f"\nwhere everything is:\n"
        f"  main now:     git -C {root} log --oneline main\n"
        f"  integration:  git -C {root} log --oneline {landing.get('branch') or 'main'}\n"
        f"  one task:     gadugi show config-defaults --project-root {root}\n"
        f"  transcripts:  gadugi logs greeting --project-root {root}\n"
        f"  logs:         {root}/.gadugi/logs/{orch}/\n"
        f"  monitoring:   {root}/.gadugi/monitoring/\n"
        f"  registry:     {root}/.gadugi/state.db  (gadugi status --project-root {root})"
    )
    sys.exit(result.exit_code)
