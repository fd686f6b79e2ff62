"""``gadugi doctor`` catches what would fail a run, each provoked for real: no credentials, no
git identity, a dirty main checkout, too little disk, a Git LFS hook without git-lfs, and an
installed orchestrator agent whose gadugi is gone or whose calls are not allowed."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from conftest import GIT_ENV, Repo, git, run_cli

# What `git lfs install` writes as .git/hooks/post-checkout.
LFS_HOOK = """#!/bin/sh
command -v git-lfs >/dev/null 2>&1 || { printf >&2 "\\n%s\\n\\n" "This repository is configured \
for Git LFS but 'git-lfs' was not found on your path."; exit 2; }
git lfs post-checkout "$@"
"""


def fake_claude(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    exe = folder / "claude"
    exe.write_text("#!/bin/sh\necho '2.1.197 (Claude Code)'\n")
    exe.chmod(0o755)
    return exe


@pytest.fixture
def project(repo: Repo, tmp_path: Path) -> Repo:
    claude = fake_claude(tmp_path / "bin")
    (repo.root / "gadugi.toml").write_text(f'claude_executable = "{claude}"\n')
    repo.prompt("one.md", "# One\n\nDo one thing.\n")
    repo.commit("prompts")
    return repo


def clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """An environment with nothing of the caller's: no keys, no logins, no git identity."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return {
        "PATH": os.environ["PATH"],
        "HOME": str(home),
        "GIT_CONFIG_NOSYSTEM": "1",
        "PYTHONPATH": os.environ.get("PYTHONPATH", ""),
        "LANG": "C.UTF-8",
        **extra,
    }


def doctor(root: Path, env: dict[str, str]) -> tuple[int, dict[str, list[tuple[str, str]]]]:
    done = subprocess.run(
        [sys.executable, "-m", "gadugi", "doctor", "--json"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    data: dict[str, Any] = json.loads(done.stdout)
    found: dict[str, list[tuple[str, str]]] = {}
    for check in data["checks"]:
        found.setdefault(check["name"], []).append((check["status"], check["detail"]))
    return done.returncode, found


KEY = {"ANTHROPIC_API_KEY": "sk-ant-test-not-a-real-key", **GIT_ENV}


def test_claude_without_credentials_fails_and_each_kind_of_login_is_seen(
    project: Repo, tmp_path: Path
) -> None:
    env = clean_env(tmp_path, **GIT_ENV)
    code, found = doctor(project.root, env)
    assert code == 1
    assert (
        "fail",
        "claude cannot authenticate: no key in its environment and no login it can "
        "see; set ANTHROPIC_API_KEY, or run `claude` once and log in (/login)",
    ) in found["agent claude"]

    code, found = doctor(project.root, {**env, "ANTHROPIC_API_KEY": "sk-ant-x"})
    assert code == 0 and ("ok", "credentials: $ANTHROPIC_API_KEY") in found["agent claude"]

    login = Path(env["HOME"]) / ".claude" / ".credentials.json"
    login.parent.mkdir()
    login.write_text("{}")
    code, found = doctor(project.root, env)
    assert code == 0 and ("ok", f"credentials: {login}") in found["agent claude"]


def test_no_git_identity_fails(project: Repo, tmp_path: Path) -> None:
    git(project.root, "config", "--unset", "user.name")
    git(project.root, "config", "--unset", "user.email")
    env = clean_env(tmp_path, ANTHROPIC_API_KEY="sk-ant-x")

    code, found = doctor(project.root, env)

    assert code == 1
    [(status, detail)] = found["git identity"]
    assert status == "fail" and "agents' commits would fail" in detail
    assert "git config --global user.email" in detail
    code, found = doctor(project.root, {**env, **GIT_ENV})
    assert code == 0 and found["git identity"][0][0] == "ok"


def test_a_dirty_main_checkout_is_a_warning_here_and_at_the_start_of_run(
    project: Repo, tmp_path: Path
) -> None:
    (project.root / "README.md").write_text("changed\n")
    (project.root / "notes.txt").write_text("new\n")

    code, found = doctor(project.root, clean_env(tmp_path, **KEY))

    assert code == 0
    [(status, detail)] = found["main checkout"]
    assert status == "warn"
    assert "2 uncommitted change(s) (README.md, notes.txt)" in detail
    assert "agents will not see" in detail

    project.shell_prompt("t.md", "true")
    git(project.root, "add", "prompts/t.md")
    git(project.root, "commit", "-q", "-m", "t")
    ran = run_cli(["run", "--agent", "shell", "t"], project.root)
    assert ran.returncode == 0, ran.stderr
    assert "warning: 2 uncommitted change(s)" in ran.stderr


def test_a_git_lfs_hook_without_git_lfs_fails(project: Repo, tmp_path: Path) -> None:
    hook = project.root / ".git" / "hooks" / "post-checkout"
    hook.write_text(LFS_HOOK)
    hook.chmod(0o755)
    env = clean_env(tmp_path, **KEY)
    lfs = subprocess.run(["git", "lfs", "version"], env=env, capture_output=True, check=False)
    assert lfs.returncode != 0  # git-lfs is not installed here

    code, found = doctor(project.root, env)

    assert code == 1
    [(status, detail)] = found["post-checkout hook"]
    assert status == "fail"
    assert f"{hook} needs git-lfs, which is not installed" in detail
    # What doctor predicts is what a run meets: git cannot create a worktree.
    added = subprocess.run(
        ["git", "worktree", "add", "-q", "-b", "probe", str(tmp_path / "probe")],
        cwd=project.root,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert added.returncode != 0 and "git-lfs" in added.stderr


def test_too_little_disk_for_the_worktrees_fails(tmp_path: Path) -> None:
    small = tmp_path / "small"
    small.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs", str(small)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        root = small / "project"
        root.mkdir()
        git(root, "init", "-q", "-b", "main")
        (root / "prompts").mkdir()
        (root / "prompts" / "one.md").write_text("# One\n")
        (root / "blob.bin").write_bytes(os.urandom(4 * 2**20))  # 4 MiB a worktree, 4 of them
        git(root, "add", "-A")
        git(root, "-c", "user.name=T", "-c", "user.email=t@e.invalid", "commit", "-q", "-m", "x")
        (root / "gadugi.toml").write_text(
            f'claude_executable = "{fake_claude(tmp_path / "bin")}"\n'
        )

        code, found = doctor(root, clean_env(tmp_path, **KEY))

        assert code == 1
        [(status, detail)] = found["disk space"]
        assert status == "fail" and "4 worktree(s) of 4.0 MiB" in detail
        assert "lower max_parallel_tasks" in detail
    finally:
        subprocess.run(["umount", str(small)], check=False)


def test_an_installed_agent_whose_gadugi_is_gone_or_not_allowed(
    project: Repo, tmp_path: Path
) -> None:
    launcher = tmp_path / "gone" / "gadugi"
    launcher.parent.mkdir()
    launcher.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m gadugi "$@"\n')
    launcher.chmod(0o755)
    env = clean_env(tmp_path, **KEY)
    installed = run_cli(["install-agent", "--command", str(launcher)], project.root)
    assert installed.returncode == 0, installed.stderr

    code, found = doctor(project.root, env)
    assert code == 0
    agent = project.root / ".claude" / "agents" / "orchestrator-agent.md"
    command = project.root / ".claude" / "commands" / "agent" / "orchestrator-agent.md"
    assert found["orchestrator agent"] == [
        ("ok", f"{command} calls {launcher}"),
        (
            "warn",
            f"{agent}: Claude Code asks before each of its gadugi calls, and headless "
            f"`claude -p` denies them, until Bash({launcher}:*) is allowed; run "
            "`gadugi install-agent --allow` to add it to .claude/settings.local.json",
        ),
    ]

    assert (
        run_cli(["install-agent", "--allow", "--command", str(launcher)], project.root).returncode
        == 0
    )
    code, found = doctor(project.root, env)
    assert [s for s, _ in found["orchestrator agent"]] == ["ok", "ok"]

    launcher.unlink()
    code, found = doctor(project.root, env)
    assert code == 1
    for status, detail in found["orchestrator agent"]:
        assert status == "fail"
        assert f"calls `{launcher}`, which is not found" in detail
        assert "run `gadugi install-agent` again" in detail


def test_verification_importing_the_main_checkout_is_a_warning(
    project: Repo, tmp_path: Path
) -> None:
    """The fact seen on these machines: an editable install of the main checkout makes a
    worktree's tests import the main checkout's code. doctor says so, and how to fix it."""
    (project.root / "pyproject.toml").write_text('[project]\nname = "mini"\nversion = "0.1"\n')
    (project.root / "setup.py").write_text("from setuptools import setup\n\nsetup()\n")
    (project.root / "src" / "mini").mkdir(parents=True)
    (project.root / "src" / "mini" / "__init__.py").write_text('VALUE = "main"\n')
    project.commit("a src-layout package")
    venv = tmp_path / "venv"
    made = subprocess.run(
        f"{shlex.quote(sys.executable)} -m venv --without-pip --system-site-packages {venv} && "
        f"{venv}/bin/python setup.py -q develop",
        shell=True,
        cwd=project.root,
        capture_output=True,
        text=True,
        check=False,
    )
    assert made.returncode == 0, made.stderr
    env = clean_env(tmp_path, **KEY)

    code, found = doctor(project.root, {**env, "PATH": f"{venv}/bin:{env['PATH']}"})

    assert code == 0
    [(status, detail)] = found["project imports"]
    assert status == "warn"
    assert f"imports mini from {project.root / 'src' / 'mini'} (the main checkout)" in detail
    assert "setup_command" in detail and ".venv/bin/pytest" in detail
    code, found = doctor(project.root, env)
    assert found["project imports"] == [
        ("ok", "`python3` on PATH (no verify_command): mini found only in the worktree")
    ]

    settings = project.root / "gadugi.toml"
    base = settings.read_text()
    settings.write_text(base + f'verify_command = "{venv}/bin/python -m pytest -q"\n')
    code, found = doctor(project.root, env)
    [(status, detail)] = found["project imports"]
    assert status == "warn" and detail.startswith(f"verify_command `{venv}/bin/python -m pytest")
    settings.write_text(base + 'verify_command = ".venv/bin/pytest -q"\n')
    code, found = doctor(project.root, env)
    [(status, detail)] = found["project imports"]
    assert status == "warn" and "but no setup_command makes it there" in detail
    settings.write_text(
        base + 'verify_command = ".venv/bin/pytest -q"\n'
        'setup_command = "python3 -m venv .venv && .venv/bin/pip install -e ."\n'
    )
    code, found = doctor(project.root, env)
    assert found["project imports"] == [
        ("ok", "verify_command `.venv/bin/pytest -q` uses an environment inside each worktree")
    ]


def test_a_setup_cache_key_that_matches_nothing_is_a_warning(project: Repo, tmp_path: Path) -> None:
    settings = project.root / "gadugi.toml"
    settings.write_text(
        settings.read_text() + 'setup_cache_key = ["uv.lock"]\nsetup_cache_paths = [".venv"]\n'
    )
    env = clean_env(tmp_path, **KEY)

    code, found = doctor(project.root, env)
    assert code == 0
    [(status, detail)] = found["setup cache"]
    assert status == "warn" and "matches no file here" in detail

    (project.root / "uv.lock").write_text("version = 1\n")
    code, found = doctor(project.root, env)
    assert found["setup cache"] == [("ok", ".venv keyed on uv.lock")]
