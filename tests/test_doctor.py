"""``gadugi doctor``: real git repositories, the CLI as a subprocess, fake agent programs."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from conftest import Repo, git, run_cli
from gadugi.doctor import MIN_GIT, Status, diagnose


def fake_cli(folder: Path, name: str, version: str = "1.2.3 (fake)", code: int = 0) -> Path:
    """A program that answers ``--version`` like an agent CLI."""
    folder.mkdir(parents=True, exist_ok=True)
    exe = folder / name
    exe.write_text(f"#!/bin/sh\necho '{version}'\nexit {code}\n")
    exe.chmod(0o755)
    return exe


@pytest.fixture
def healthy(repo: Repo, tmp_path: Path) -> Repo:
    """A project whose configured default agent (claude) is a working program."""
    claude = fake_cli(tmp_path / "bin", "claude", "2.1.197 (Claude Code)")
    (repo.root / "gadugi.toml").write_text(f'claude_executable = "{claude}"\n')
    repo.prompt("one.md", "# One\n\nDo one thing.\n")
    repo.commit("prompts")
    return repo


# The fake claude is a working agent only with something to authenticate with.
CREDENTIALS = {"ANTHROPIC_API_KEY": "sk-ant-test-not-a-real-key"}


def doctor(root: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    done = run_cli(
        ["doctor", "--project-root", str(root), *args], root, env=CREDENTIALS | (env or {})
    )
    return done.returncode, done.stdout, done.stderr


def doctor_json(root: Path, env: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    code, out, _ = doctor(root, "--json", env=env)
    data: dict[str, Any] = json.loads(out)
    return code, data


def failed(data: dict[str, Any]) -> dict[str, str]:
    return {c["name"]: c["detail"] for c in data["checks"] if c["status"] == "fail"}


def test_healthy_project_exits_0(healthy: Repo) -> None:
    code, out, err = doctor(healthy.root)

    assert code == 0, out + err
    assert "all good" in out
    for name in ("git", "repository", "configuration", "base commit", "workflow template"):
        assert f"ok    {name}" in out
    assert "2.1.197 (Claude Code) (used by: default agent)" in out


def test_json_report(healthy: Repo) -> None:
    code, data = doctor_json(healthy.root)

    assert code == 0 and data["ok"] is True
    assert data["project_root"] == str(healthy.root)
    names = [c["name"] for c in data["checks"]]
    assert names[:3] == ["git", "repository", "configuration"]
    agents = {a["name"]: a for a in data["agents"]}
    assert set(agents) == {"claude", "codex", "gemini", "aider"}
    assert agents["claude"]["version"] == "2.1.197 (Claude Code)"
    assert agents["claude"]["needed_by"] == ["default agent"]


def test_missing_configured_agent(healthy: Repo, tmp_path: Path) -> None:
    (healthy.root / "gadugi.toml").write_text(
        'agent = "codex"\ncodex_executable = "no-such-codex"\n'
    )

    code, data = doctor_json(healthy.root)

    assert code == 1 and data["ok"] is False
    problem = failed(data)["agent codex"]
    assert "no-such-codex" in problem and "not found on PATH" in problem
    assert "npm install -g @openai/codex" in problem


def test_agent_whose_version_fails(healthy: Repo, tmp_path: Path) -> None:
    broken = fake_cli(tmp_path / "bin2", "claude", "segfault", code=3)
    (healthy.root / "gadugi.toml").write_text(f'claude_executable = "{broken}"\n')

    code, data = doctor_json(healthy.root)

    assert code == 1
    assert "exited 3: segfault" in failed(data)["agent claude"]


def test_agent_named_by_a_prompt_is_needed(healthy: Repo) -> None:
    healthy.prompt("two.md", "# Two\n", front="agent: gemini")
    env = {"PATH": "/usr/bin:/bin"}  # no gemini here, whatever the machine has

    code, data = doctor_json(healthy.root, env=env)

    assert code == 1
    assert "prompts/two.md" in failed(data)["agent gemini"]


def test_broken_configuration(healthy: Repo) -> None:
    (healthy.root / "gadugi.toml").write_text("max_parallel_tasks = [\n")

    code, out, _ = doctor(healthy.root)

    assert code == 1
    assert "fail  configuration" in out and "gadugi.toml" in out and "cannot be parsed" in out


def test_invalid_setting_is_named(healthy: Repo) -> None:
    (healthy.root / "gadugi.toml").write_text('codex_sandbox = "open"\n')

    code, data = doctor_json(healthy.root)

    assert code == 1
    assert "codex_sandbox" in failed(data)["configuration"]


def test_corrupt_registry(healthy: Repo) -> None:
    (healthy.root / ".gadugi").mkdir()
    (healthy.root / ".gadugi" / "state.db").write_bytes(b"this is not a database" * 100)

    code, out, _ = doctor(healthy.root)

    assert code == 1
    assert "fail  registry" in out and "state.db" in out


def test_a_real_registry_is_fine(healthy: Repo) -> None:
    from gadugi.registry import Registry

    Registry(healthy.root / ".gadugi" / "state.db").close()

    code, data = doctor_json(healthy.root)

    assert code == 0, failed(data)
    registry = next(c for c in data["checks"] if c["name"] == "registry")
    assert registry["detail"] == ".gadugi/state.db: 0 orchestration(s)"


def test_not_a_repository_and_no_commits(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    code, data = doctor_json(plain)
    assert code == 1
    assert "not inside a git repository" in failed(data)["repository"]

    git(plain, "init", "-q", "-b", "main")
    (plain / "prompts").mkdir()
    code, data = doctor_json(plain)
    assert code == 1
    assert "no commits yet" in failed(data)["base commit"]


def test_missing_prompts_folder_and_bad_template(healthy: Repo) -> None:
    shutil.rmtree(healthy.root / "prompts")
    template = healthy.root / ".gadugi" / "templates" / "workflow.md"
    template.parent.mkdir(parents=True)
    template.write_text("Do {the_task}\n")

    code, data = doctor_json(healthy.root)

    assert code == 1
    problems = failed(data)
    assert "prompts does not exist" in problems["prompts"]
    assert "unknown placeholder {the_task}" in problems["workflow template"]


def test_unreadable_prompt_file_is_a_warning(healthy: Repo) -> None:
    healthy.prompt("bad.md", "# Bad\n", front="priority: high")

    code, data = doctor_json(healthy.root)

    assert code == 0
    warning = next(c for c in data["checks"] if c["name"] == "prompt file")
    assert warning["status"] == "warn" and "prompts/bad.md" in warning["detail"]


def test_git_too_old(healthy: Repo, tmp_path: Path) -> None:
    real = shutil.which("git")
    assert real
    wrapper = tmp_path / "oldgit" / "git"
    wrapper.parent.mkdir()
    wrapper.write_text(
        f'#!/bin/sh\n[ "$1" = "--version" ] && {{ echo "git version 2.20.1"; exit 0; }}\n'
        f'exec {real} "$@"\n'
    )
    wrapper.chmod(0o755)
    env = {"PATH": f"{wrapper.parent}:{os.environ['PATH']}"}

    code, data = doctor_json(healthy.root, env=env)

    assert code == 1
    need = ".".join(map(str, MIN_GIT))
    assert f"git 2.20.1 is too old: need {need}" in failed(data)["git"]


def test_command_agent_program(healthy: Repo) -> None:
    (healthy.root / "gadugi.toml").write_text('agent_cmd = "no-such-program {prompt_file}"\n')

    code, data = doctor_json(healthy.root)

    assert code == 1
    assert "no-such-program not found" in failed(data)["agent command"]


def test_root_with_bypass_permissions(
    healthy: Repo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    claude = fake_cli(tmp_path / "bin3", "claude")
    (healthy.root / "gadugi.toml").write_text(
        f'claude_executable = "{claude}"\nclaude_permission_mode = "bypassPermissions"\n'
    )
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.delenv("IS_SANDBOX", raising=False)
    monkeypatch.delenv("CLAUDE_CODE_BUBBLEWRAP", raising=False)

    report = diagnose(healthy.root)

    assert not report.ok
    assert any(c.status is Status.FAIL and "root" in c.detail for c in report.checks)


def test_usage_error_exits_2(tmp_path: Path) -> None:
    done = run_cli(["doctor", "--project-root", str(tmp_path / "nope")], tmp_path)
    assert done.returncode == 2
