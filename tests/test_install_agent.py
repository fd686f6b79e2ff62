"""``gadugi install-agent``: the Claude Code subagent file, its refresh rules, and the real
Claude Code listing it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import yaml

from conftest import Repo, run_cli
from gadugi.install_agent import (
    AGENT_FILE,
    Action,
    AgentFileChanged,
    install,
    render,
    written_by_gadugi,
)

if TYPE_CHECKING:
    from claude_fixtures import ClaudeRig


def front_matter(text: str) -> dict[str, object]:
    assert text.startswith("---\n")
    data = yaml.safe_load(text.split("---\n", 2)[1])
    assert isinstance(data, dict)
    return data


def test_the_file_is_a_subagent_definition() -> None:
    text = render()
    meta = front_matter(text)

    assert meta == {
        "name": "orchestrator-agent",
        "description": meta["description"],
        "tools": "Bash",
    }
    assert "Execute these prompts" in str(meta["description"])
    body = text.split("---\n", 2)[2]
    assert "gadugi run --stdin --json <<'GADUGI_REQUEST'\n" in body
    assert "\nGADUGI_REQUEST\n" in body
    assert "Never edit, create or delete files yourself" in body
    assert written_by_gadugi(text)


def test_command_is_configurable() -> None:
    text = render("./run_orchestrator.sh")
    assert "./run_orchestrator.sh run --stdin --json <<'GADUGI_REQUEST'" in text
    assert "gadugi run" not in text
    assert written_by_gadugi(text)


def test_create_then_unchanged_then_refreshed(tmp_path: Path) -> None:
    first = install(tmp_path)
    assert first.action is Action.CREATED
    assert first.path == tmp_path / AGENT_FILE
    assert install(tmp_path).action is Action.UNCHANGED

    # What an older gadugi wrote, untouched since: refreshed to the current text.
    first.path.write_text(render("old-gadugi"))
    assert install(tmp_path).action is Action.UPDATED
    assert first.path.read_text() == render()


def test_a_changed_file_is_refused_unless_forced(tmp_path: Path) -> None:
    path = install(tmp_path).path
    changed = path.read_text().replace("Keep the report short", "Keep the report very short")
    path.write_text(changed)

    with pytest.raises(AgentFileChanged, match=r"changed since gadugi wrote it.*--force"):
        install(tmp_path)
    assert path.read_text() == changed

    assert install(tmp_path, force=True).action is Action.REPLACED
    assert path.read_text() == render()


def test_a_users_own_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / AGENT_FILE
    path.parent.mkdir(parents=True)
    path.write_text("---\nname: orchestrator-agent\n---\nMine.\n")

    with pytest.raises(AgentFileChanged, match="not written by gadugi"):
        install(tmp_path)
    assert path.read_text().endswith("Mine.\n")


def test_cli_refuses_a_changed_file_with_exit_1(repo: Repo) -> None:
    done = run_cli(["install-agent", "--project-root", str(repo.root)], repo.root)
    assert done.returncode == 0, done.stderr
    path = repo.root / AGENT_FILE
    assert done.stdout.strip() == f"wrote {path}"

    path.write_text(path.read_text() + "\nAlso say hello.\n")
    done = run_cli(["install-agent"], repo.root)
    assert done.returncode == 1
    assert "was changed since gadugi wrote it" in done.stderr
    assert "--force" in done.stderr
    assert path.read_text().endswith("Also say hello.\n")

    done = run_cli(["install-agent", "--force"], repo.root)
    assert done.returncode == 0 and "replaced" in done.stdout
    assert path.read_text() == render()


def test_real_claude_code_lists_the_agent(claude_rig: ClaudeRig) -> None:
    install(claude_rig.repo)
    run = claude_rig.run("# Task\n\nSay hi.\n\n[[scenario:text_only]]\n")

    assert run.outcome.success, run.outcome.error
    first = json.loads(run.ctx.events_file.read_text().splitlines()[0])
    assert first["type"] == "system" and first["subtype"] == "init"
    assert "orchestrator-agent" in first["agents"]
