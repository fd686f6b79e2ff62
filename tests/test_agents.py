"""Agent profiles and the generated prompt."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import GIT_ENV, Repo, git
from gadugi.agents.base import AgentContext
from gadugi.agents.command import CommandProfile, judge_exit
from gadugi.agents.shell import ShellProfile, script_of
from gadugi.errors import AgentError, ConfigError
from gadugi.planning.prompts import read_prompt
from gadugi.promptgen import check_template, load_template


def _ctx(tmp_path: Path) -> AgentContext:
    return AgentContext(
        orchestration_id="orch-1",
        task_id="t",
        project_root=tmp_path,
        worktree=tmp_path / "wt dir",
        branch="gadugi/t-1",
        prompt_file=tmp_path / "gen/t.md",
        source_prompt=tmp_path / "prompts/t.md",
        log_file=tmp_path / "t.log",
        events_file=tmp_path / "t.events.jsonl",
    )


def test_script_joins_only_shell_blocks_in_order() -> None:
    body = (
        "```sh\necho one\n```\n```python\nprint(2)\n```\n~~~bash\necho three\n~~~\n"
        "```shell title\necho four\n```\n```\necho untagged\n```\n"
    )
    assert script_of(body) == "echo one\n\necho three\n\necho four\n"
    assert script_of("no code here") is None


def test_shell_profile_writes_the_script_beside_the_generated_prompt(tmp_path: Path) -> None:
    (tmp_path / "prompts").mkdir()
    (tmp_path / "gen").mkdir()
    (tmp_path / "prompts/t.md").write_text("# T\n```sh\nexit 0\n```\n")
    prompt = read_prompt(tmp_path / "prompts/t.md", tmp_path)
    launch = ShellProfile().prepare(_ctx(tmp_path), prompt)
    assert launch.argv == ["bash", "-e", str(tmp_path / "gen/t.sh")]
    assert (tmp_path / "gen/t.sh").read_text() == "exit 0\n"
    (tmp_path / "prompts/t.md").write_text("# T\nno script\n")
    with pytest.raises(AgentError, match="no ```sh"):
        ShellProfile().prepare(_ctx(tmp_path), read_prompt(tmp_path / "prompts/t.md", tmp_path))


def test_command_template_fills_each_placeholder_inside_one_argument(tmp_path: Path) -> None:
    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts/t.md").write_text("x")
    prompt = read_prompt(tmp_path / "prompts/t.md", tmp_path)
    profile = CommandProfile("my-agent --cwd={worktree} '{task_id} and {branch}' {{literal}}")
    argv = profile.prepare(_ctx(tmp_path), prompt).argv
    assert argv == ["my-agent", f"--cwd={tmp_path / 'wt dir'}", "t and gadugi/t-1", "{literal}"]


@pytest.mark.parametrize(
    ("template", "reason"),
    [
        ("", "empty"),
        ("agent {nope}", "unknown placeholder"),
        ("agent 'open", "cannot be split"),
        ("agent {task_id", "expected '}'"),
    ],
)
def test_bad_command_templates(template: str, reason: str) -> None:
    with pytest.raises(ConfigError, match=reason.replace("{", r"\{")):
        CommandProfile(template)


def test_exit_codes_become_outcomes(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path)
    ctx.log_file.write_text("working\nboom: disk on fire\n")
    assert judge_exit(ctx, 0).success
    retry = judge_exit(ctx, 75)
    assert retry.transient and not retry.success
    failed = judge_exit(ctx, 2)
    assert not failed.transient and "code 2" in (failed.error or "")
    assert "disk on fire" in (failed.error or "")
    assert "killed by SIGKILL" in (judge_exit(ctx, -9).error or "")


def test_project_template_replaces_the_built_in_one(tmp_path: Path) -> None:
    builtin = load_template(tmp_path)
    assert "{prompt_text}" in builtin.text
    (tmp_path / ".gadugi/templates").mkdir(parents=True)
    (tmp_path / ".gadugi/templates/workflow.md").write_text("Do {task_id} on {branch}: {{x}}")
    custom = load_template(tmp_path)
    assert custom.render(task_id="a", branch="b") == "Do a on b: {x}"


@pytest.mark.parametrize("text", ["{unknown}", "{task_id.__class__}", "{", "{0}"])
def test_template_with_unknown_placeholder_is_refused(text: str) -> None:
    with pytest.raises(ConfigError, match="template"):
        check_template(text, "workflow.md")


def test_the_generated_prompt_carries_the_task_its_footprint_and_dependencies(
    tmp_path: Path,
) -> None:
    root = tmp_path / "proj"
    (root / "src").mkdir(parents=True)
    (root / "src/app.py").write_text("X = 1\n")
    git(root, "init", "-q", "-b", "main")
    repo = Repo(root)
    repo.shell_prompt("base.md", "true")
    repo.prompt(
        "edit.md",
        "---\ndepends_on: [base]\n---\n# Edit\n\nChange `src/app.py`.\n\n"
        '```sh\ncp "$GADUGI_PROMPT_FILE" ../seen.md\n```\n',
    )
    repo.commit()
    proc = subprocess.run(
        [sys.executable, "-m", "gadugi", "run", "--agent", "shell", "--json", "base", "edit"],
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env={**os.environ, **GIT_ENV},
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stderr
    branch = {t["task_id"]: t["branch"] for t in json.loads(proc.stdout)["tasks"]}
    seen = (root / ".worktrees" / "seen.md").read_text()
    assert "`src/app.py`" in seen  # the plan's footprint, found in the body
    assert f"base (branch {branch['base']})" in seen
    assert f"Branch: `{branch['edit']}`" in seen
    assert "Change `src/app.py`." in seen  # the task's whole original text
    assert "commit" in seen.lower()  # the workflow to follow
