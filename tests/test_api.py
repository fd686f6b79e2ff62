"""The seed's Python API and the offline demonstration."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from conftest import GIT_ENV, Repo
from gadugi import OrchestrationConfig, OrchestratorCoordinator, TaskStatus
from gadugi.errors import RequestError


@pytest.mark.slow
def test_orchestrate_returns_the_seed_result(repo: Repo) -> None:
    for n in range(3):
        repo.shell_prompt(
            f"p{n}.md", f"sleep 1\necho {n} > f{n}\ngit add f{n}\ngit commit -qm f{n}"
        )
    repo.commit()
    config = OrchestrationConfig(max_parallel_tasks=3, agent="shell")
    result = OrchestratorCoordinator(config, project_root=repo.root).orchestrate(
        ["p0.md", "p1.md", "p2.md"]
    )
    assert (result.total_tasks, result.successful_tasks, result.failed_tasks) == (3, 3, 0)
    busy = sum(t.duration_seconds or 0 for t in result.tasks)
    assert result.parallel_speedup == pytest.approx(busy / result.execution_time_seconds, rel=0.01)
    # They ran at once (a structural check; speed itself is measured in bench/).
    starts = [t.started_at for t in result.tasks if t.started_at]
    ends = [t.completed_at for t in result.tasks if t.completed_at]
    assert len(starts) == len(ends) == 3 and max(starts) < min(ends)
    assert all(t.status == TaskStatus.COMPLETED and t.commits == 1 for t in result.tasks)
    assert result.exit_code == 0


def test_orchestrate_with_nothing_valid_raises_and_creates_nothing(repo: Repo) -> None:
    coordinator = OrchestratorCoordinator(
        OrchestrationConfig(agent="shell", max_load_per_cpu=0), project_root=repo.root
    )
    with pytest.raises(RequestError, match="not found"):
        coordinator.orchestrate(["ghost.md"])
    assert not (repo.root / ".gadugi").exists()


def test_demo_runs_offline_and_says_where_everything_is(tmp_path: Path) -> None:
    target = tmp_path / "demo"
    proc = subprocess.run(
        [sys.executable, "-m", "gadugi", "demo", "--dir", str(target)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, **GIT_ENV},
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stderr
    assert "4/4 completed" in proc.stdout
    assert str(target / ".gadugi/state.db") in proc.stdout
    branches = subprocess.run(
        ["git", "branch", "--list", "gadugi/*"],
        cwd=target,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert len(branches) == 5  # the four tasks' and the integration branch
    assert "main fast-forwarded" in proc.stdout
    # main holds every task's work, the stacked pair's changelog lines composed, and the
    # verification passes on it.
    for module in ("greeting", "math_helpers", "settings", "usage_example"):
        assert (target / f"{module}.py").is_file()
    changelog = (target / "CHANGELOG.md").read_text()
    assert "Add arithmetic helpers" in changelog and "Add default settings" in changelog
    check = subprocess.run(
        [sys.executable, "-m", "unittest", "-q"],
        cwd=target,
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stderr
    assert "Ran 5 tests" in check.stderr


def test_live_view_on_a_terminal_shows_rows_and_totals(repo: Repo) -> None:
    repo.shell_prompt("alpha.md", "echo step one\nsleep 1\necho step two")
    repo.shell_prompt("beta.md", "sleep 1")
    repo.commit()
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "gadugi", "run", "--agent", "shell", "alpha", "beta"],
        cwd=repo.root,
        stdin=subprocess.DEVNULL,
        stdout=follower,
        stderr=follower,
        env={**os.environ, **GIT_ENV, "COLUMNS": "100", "LINES": "30", "TERM": "xterm"},
    )
    os.close(follower)
    screen = b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(leader, 65536)
            except OSError:
                break
            if not chunk:
                break
            screen += chunk
        elif proc.poll() is not None:
            break
    proc.wait(timeout=10)
    os.close(leader)
    text = screen.decode("utf-8", "replace")
    assert proc.returncode == 0, text
    assert "\x1b[" in text  # drawn in place with terminal control sequences
    assert "running" in text and "step one" in text
    assert "2 completed · 2 tasks" in text


class _Explodes:
    """A listener that fails once the agent has started, standing in for any internal error."""

    def __init__(self, started: Path) -> None:
        self.started = started

    def changed(self, task: object) -> None:
        return

    def ticked(self, runs: object, now: float, note: str | None = None) -> None:
        if self.started.exists() and self.started.read_text().strip():
            raise RuntimeError("internal failure")


def test_an_internal_error_still_stops_every_agent(repo: Repo, tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    repo.shell_prompt("sleeper.md", f"echo $$ > {pid_file}\nsleep 300")
    repo.commit()
    config = OrchestrationConfig(agent="shell", kill_grace_seconds=1, max_load_per_cpu=0)
    listener = _Explodes(pid_file)
    coordinator = OrchestratorCoordinator(config, project_root=repo.root, listener=listener)
    with pytest.raises(RuntimeError, match="internal failure"):
        coordinator.orchestrate(["sleeper"])
    pid = int(pid_file.read_text())
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
