"""`gadugi land`: a recorded orchestration's completed tasks through the verified queue."""

from __future__ import annotations

import logging
import shutil
import sys
from pathlib import Path
from typing import Any

import click

from ..config import MAX_COMMAND_LENGTH, load_config
from ..errors import IdentityError, RequestError
from ..registry import Registry
from ..worktrees import user_identity
from .main import _err, _json, _root, main


@main.command()
@click.argument("orchestration_id", required=False)
@click.option("--into", help="Fast-forward this branch to the integration head when all is green.")
@click.option("--verify", "verify_cmd", help="Verify each merge with this shell command.")
@click.option("--push", "remote", help="Push the task branches and the integration branch here.")
@click.option(
    "--pr",
    type=click.Choice(["tasks", "integration"]),
    is_flag=False,
    flag_value="tasks",
    default=None,
    help="Open pull requests with gh: one per task (--pr), or one for the integration "
    "branch (--pr=integration). Needs --push.",
)
@click.option("--detach", is_flag=True, help="Land in the background; print the id at once.")
@click.option("--project-root", type=click.Path(file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("--quiet", "-q", is_flag=True, help="Print nothing but errors.")
@click.option("--verbose", "-v", is_flag=True, help="Log what gadugi does.")
def land(
    orchestration_id: str | None,
    into: str | None,
    verify_cmd: str | None,
    remote: str | None,
    pr: str | None,
    detach: bool,
    project_root: str | None,
    as_json: bool,
    quiet: bool,
    verbose: bool,
) -> None:
    """Integrate completed tasks into gadugi/land/<orch> through a verified queue."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    from .. import landing

    root = _root(project_root)
    # Landing takes its settings as the run recorded them; a project file that has become
    # invalid since is still refused, as every command that reads it refuses it.
    load_config(root)
    if orchestration_id is not None and not orchestration_id.strip():
        # An unset "$ORCH" must not quietly mean the newest orchestration.
        raise RequestError("no orchestration id given (leave it out for the newest one)")
    if verify_cmd is not None and not landing.usable_command(verify_cmd):
        raise RequestError(
            f"--verify needs a shell command of at most {MAX_COMMAND_LENGTH} characters "
            "(leave it out to merge without verifying)"
        )
    if pr and not remote:
        raise RequestError("--pr needs --push REMOTE: pull requests are opened for pushed branches")
    if pr and shutil.which("gh") is None:
        raise RequestError("--pr needs gh (the GitHub CLI) on PATH; nothing was pushed")
    landing.check_integration_room(root)
    if into is not None:
        landing.check_into(root, into)
    if remote is not None:
        landing.check_remote(root, remote)
    try:
        user_identity(root)  # every landing merge is the user's commit: none is made up
    except IdentityError as exc:
        raise RequestError(str(exc)) from None
    registry = Registry.existing(root / ".gadugi" / "state.db")
    try:
        orch = registry.orchestration(orchestration_id)
        landing.check_landable(orch["id"], registry.tasks(orch["id"]))
        options = landing.options_for(orch, into=into, verify=verify_cmd, push=remote, pr=pr)
    finally:
        registry.close()
    if detach:
        _land_detached(root, orch["id"], options, as_json)
        return
    from ..coordinator import OrchestratorCoordinator

    outcome = OrchestratorCoordinator(project_root=root).land(orch["id"], options)
    _print(outcome, as_json, quiet)
    sys.exit(outcome.exit_code)


def _land_detached(root: Path, orch_id: str, options: Any, as_json: bool) -> None:
    from ..coordinator import OrchestratorCoordinator
    from ..detach import Ready, start

    def body(ready: Ready) -> int:
        outcome = OrchestratorCoordinator(project_root=root).land(
            orch_id, options, on_owned=lambda log_file: ready(orch_id, log_file)
        )
        _print(outcome, False, False)
        return outcome.exit_code

    started = start(body)
    if as_json:
        click.echo(
            _json(
                {"orchestration_id": orch_id, "pid": started.pid, "log_file": str(started.log_file)}
            )
        )
    else:
        click.echo(orch_id)


def _print(outcome: Any, as_json: bool, quiet: bool) -> None:
    result = outcome.result
    if as_json:
        click.echo(_json(result.to_json()))
    for note in outcome.notes:
        _err(note)
    if as_json or quiet:
        return
    info = result.landing or {}
    click.echo(
        f"{info.get('branch')}: {info.get('landed', 0)} task(s) landed, head "
        f"{str(info.get('head'))[:12]}{', verified' if info.get('verified') else ''}"
    )
    for task in result.tasks:
        if task.landing is None:
            continue
        click.echo(f"  {task.task_id:<24} {task.landing['status']}")
        if task.landing.get("note"):
            click.echo(f"  {'':<24} {task.landing['note']}")
