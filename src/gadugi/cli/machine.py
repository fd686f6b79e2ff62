"""Commands that check and prepare a machine: doctor, install-agent."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

# Commands that only read the registry (status, cancel, export) should answer fast, so
# the orchestration machinery and rich are imported by the commands that use them.
if TYPE_CHECKING:
    pass

from .main import _err, _json, _root, main


@main.command()
@click.option(
    "--project-root",
    type=click.Path(exists=True, file_okay=False),
    help="The project to check (default: the current directory).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def doctor(project_root: str | None, as_json: bool) -> None:
    """Check the agent CLIs, git and the project: exit 0 when a run could start, else 1."""
    from ..doctor import diagnose, render

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
    from .. import install_agent as ia

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
