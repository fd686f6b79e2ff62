"""Shared fixtures: real git repositories in temporary folders and the CLI as a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

pytest_plugins = ["claude_fixtures", "dashboard_fixtures"]

# These machines are shared: other work can hold the load average above the default
# ceiling for minutes, and every run the suite starts would wait for it. The ceiling is
# tested with its own readings (test_health, test_runner_tick); a test that wants the
# real one removes the variable from its environment.
os.environ.setdefault("GADUGI_MAX_LOAD_PER_CPU", "0")

GIT_ENV = {
    "GIT_AUTHOR_NAME": "Test",
    "GIT_AUTHOR_EMAIL": "test@example.invalid",
    "GIT_COMMITTER_NAME": "Test",
    "GIT_COMMITTER_EMAIL": "test@example.invalid",
}


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args],
        cwd=repo,
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, **GIT_ENV},
    ).stdout


class Repo:
    """A real git repository with a prompts/ folder."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def prompt(self, name: str, body: str, front: str | None = None) -> Path:
        path = self.root / "prompts" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        text = (f"---\n{front.strip()}\n---\n" if front is not None else "") + body
        path.write_text(text, encoding="utf-8")
        return path

    def shell_prompt(
        self, name: str, script: str, front: str | None = None, title: str | None = None
    ) -> Path:
        heading = title or name.removesuffix(".md")
        return self.prompt(name, f"# {heading}\n\n```sh\n{script.strip()}\n```\n", front)

    def commit(self, message: str = "prompts") -> None:
        git(self.root, "add", "-A")
        git(self.root, "commit", "-q", "--allow-empty", "-m", message)

    def branches(self) -> list[str]:
        out = git(self.root, "branch", "--list", "gadugi/*", "--format=%(refname:short)")
        return out.split()

    def worktrees(self) -> list[str]:
        out = git(self.root, "worktree", "list", "--porcelain")
        return [line.split(" ", 1)[1] for line in out.splitlines() if line.startswith("worktree ")]

    def final(self) -> dict[str, Any]:
        files = sorted((self.root / ".gadugi/monitoring").glob("*_final.json"))
        assert files, "no final result written"
        data: dict[str, Any] = json.loads(files[-1].read_text())
        return data

    def snapshot(self) -> tuple[list[str], list[str], list[str], bool]:
        """What a refused request must leave unchanged."""
        files = sorted(
            str(p.relative_to(self.root))
            for p in self.root.rglob("*")
            if ".git" not in p.relative_to(self.root).parts[:1]
        )
        return files, self.branches(), self.worktrees(), (self.root / ".gadugi").exists()


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    root = tmp_path / "project"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    git(root, "config", "user.name", "Test")
    git(root, "config", "user.email", "test@example.invalid")
    (root / "README.md").write_text("# project\n")
    (root / "prompts").mkdir()
    r = Repo(root)
    r.commit("initial")
    return r


def run_cli(
    args: Sequence[str],
    cwd: Path,
    *,
    input: str | None = None,
    timeout: float = 120,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gadugi", *args],
        cwd=cwd,
        input=input,
        text=True,
        capture_output=True,
        timeout=timeout,
        check=False,
        env={**os.environ, **GIT_ENV, **(env or {})},
        stdin=None if input is not None else subprocess.DEVNULL,
    )


def start_cli(args: Sequence[str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "gadugi", *args],
        cwd=cwd,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env={**os.environ, **GIT_ENV},
    )


def wait_until(predicate: Any, timeout: float = 60) -> None:
    """Poll ``predicate`` until it is true; fail the test after ``timeout`` seconds."""
    import time

    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def kill_9_once(proc: Any, marker: Path) -> None:
    """kill -9 ``proc`` (only it) as soon as ``marker`` exists; it must still run then."""
    import signal

    try:
        wait_until(lambda: marker.exists() or proc.poll() is not None)
        assert proc.poll() is None, proc.communicate()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()


def run_then_kill_9(repo: Repo, marker: Path, *args: str) -> str:
    """Start a shell-agent run, kill -9 gadugi (only it) once ``marker`` exists; its id."""
    kill_9_once(start_cli(["run", "--agent", "shell", "--quiet", *args], repo.root), marker)
    status = json.loads(run_cli(["status", "--json"], repo.root).stdout)
    orch_id: str = status["orchestration_id"]
    return orch_id
