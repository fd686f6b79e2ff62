"""Processes end to end: signals told apart, Ctrl-C, strays, a full process table, stops
that never block the loop. Real git, real processes, the CLI as a subprocess."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest

from conftest import GIT_ENV, Repo, git, run_cli, start_cli


def _wait(predicate: Callable[[], bool], what: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.02)


@pytest.fixture
def repo(repo: Repo) -> Repo:
    # These tests are about processes, not admission: a busy machine must not hold them.
    (repo.root / "gadugi.toml").write_text("max_load_per_cpu = 0\n")
    return repo


def _tasks(out: str) -> dict[str, dict[str, Any]]:
    return {t["task_id"]: t for t in json.loads(out)["tasks"]}


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _attempt_codes(repo: Repo) -> list[Any]:
    conn = sqlite3.connect(f"file:{repo.root / '.gadugi/state.db'}?mode=ro", uri=True)
    try:
        return [row[0] for row in conn.execute("SELECT exit_code FROM attempts")]
    finally:
        conn.close()


def _owner_pid(repo: Repo) -> int | None:
    conn = sqlite3.connect(f"file:{repo.root / '.gadugi/state.db'}?mode=ro", uri=True)
    try:
        row = conn.execute("SELECT pid FROM orchestrations").fetchone()
        return int(row[0]) if row and row[0] is not None else None
    finally:
        conn.close()


def test_a_killed_agent_is_reported_killed_not_exited_with_137(repo: Repo) -> None:
    repo.shell_prompt("killed.md", "kill -KILL $$")
    repo.shell_prompt("exits.md", "exit 137")
    repo.commit()
    proc = run_cli(["run", "--agent", "shell", "--json", "killed", "exits"], repo.root)
    assert proc.returncode == 1, proc.stderr
    tasks = _tasks(proc.stdout)
    assert tasks["killed"]["exit_code"] is None
    assert "killed by SIGKILL" in tasks["killed"]["error_message"]
    assert tasks["exits"]["exit_code"] == 137
    assert "exited with code 137" in tasks["exits"]["error_message"]


@pytest.mark.slow
def test_a_cancelled_adopted_agent_records_no_sentinel_exit_code(
    repo: Repo, tmp_path: Path
) -> None:
    marker = tmp_path / "up"
    repo.shell_prompt("long.md", f"touch {marker}\nsleep 300")
    repo.commit()
    first = start_cli(["run", "--agent", "shell", "--quiet", "long"], repo.root)
    db = repo.root / ".gadugi/state.db"
    try:
        _wait(marker.exists, "the agent started")
        os.kill(first.pid, signal.SIGKILL)  # the orchestrator dies; the agent runs on
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
    assert db.exists()
    resumed = start_cli(["resume", "--json"], repo.root)
    try:
        # Cancelled once resume owns the orchestration, so that it is resume that stops the
        # agent it adopted (a cancel with no live owner would stop it itself).
        _wait(lambda: _owner_pid(repo) == resumed.pid, "resume took over")
        cancel = run_cli(["cancel", "long"], repo.root)
        assert cancel.returncode == 0, cancel.stderr
        out, err = resumed.communicate(timeout=60)
    finally:
        if resumed.poll() is None:
            resumed.kill()
    task = _tasks(out)["long"]
    assert task["status"] == "cancelled", err
    assert task["exit_code"] is None
    assert all(code is None or code >= 0 for code in _attempt_codes(repo))


@pytest.mark.slow
def test_ctrl_c_while_git_makes_a_worktree_starts_no_agent(repo: Repo, tmp_path: Path) -> None:
    started, gate, ran = tmp_path / "started", tmp_path / "gate", tmp_path / "agent-ran"
    hook = repo.root / ".git/hooks/post-checkout"
    hook.write_text(f"#!/bin/sh\ntouch {started}\nwhile [ ! -e {gate} ]; do sleep 0.05; done\n")
    hook.chmod(0o755)
    repo.shell_prompt("a.md", f"touch {ran}")
    repo.commit()
    # A terminal sends Ctrl-C to its foreground process group: gadugi's own, here.
    run = subprocess.Popen(
        [sys.executable, "-m", "gadugi", "run", "--agent", "shell", "--json", "a"],
        cwd=repo.root,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env={**os.environ, **GIT_ENV},
        start_new_session=True,
    )
    try:
        _wait(started.exists, "git ran the post-checkout hook")
        os.killpg(run.pid, signal.SIGINT)
        gate.touch()
        out, err = run.communicate(timeout=60)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 130, err
    assert not ran.exists(), "the agent was started after Ctrl-C"
    task = _tasks(out)["a"]
    assert task["status"] == "cancelled" and task["attempts"] == 0
    # git finished its step: one worktree and one branch, not a half-made one and a "-2".
    assert len(repo.branches()) == 1


def test_a_daemon_that_clears_its_environment_does_not_outlive_the_run(
    repo: Repo, tmp_path: Path
) -> None:
    pid_file = tmp_path / "daemon"
    repo.shell_prompt(
        "leaky.md",
        f"env -i setsid sh -c 'echo $$ > {pid_file}; exec sleep 300' </dev/null >/dev/null 2>&1 &\n"
        f"while [ ! -s {pid_file} ]; do sleep 0.02; done",
    )
    repo.commit()
    proc = run_cli(["run", "--agent", "shell", "--json", "leaky"], repo.root)
    assert proc.returncode == 0, proc.stderr
    pid = int(pid_file.read_text())
    assert _gone(pid), f"daemon {pid} outlived the run"
    assert "left behind by an agent" in proc.stderr


def test_a_tick_never_blocks_on_stopping_leftovers(repo: Repo, tmp_path: Path) -> None:
    """``lingers`` exits at once but leaves a process in its group that ignores SIGTERM;
    stopping it takes the whole grace period. ``second`` ends meanwhile: its recorded time
    must be its own, not the time of a tick that was blocked."""
    leftover = tmp_path / "leftover"
    repo.shell_prompt(
        "lingers.md",
        f"sh -c 'trap \"\" TERM; echo $$ > {leftover}; exec sleep 300' &\n"
        f"while [ ! -s {leftover} ]; do sleep 0.02; done",
    )
    repo.shell_prompt("second.md", "sleep 1")
    repo.commit()
    proc = run_cli(
        ["run", "--agent", "shell", "--json", "--max-parallel", "2", "lingers", "second"],
        repo.root,
    )
    assert proc.returncode == 0, proc.stderr
    tasks = _tasks(proc.stdout)
    # `sleep 1` cannot have taken less than a second.
    assert tasks["second"]["duration_seconds"] >= 1.0, tasks["second"]
    assert _gone(int(leftover.read_text()))


# -- a full process table ---------------------------------------------------------------

LIMITED = """
import os, resource, sys
n = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_NPROC, (n, n))
os.execv(sys.executable, [sys.executable, "-m", "gadugi", *sys.argv[2:]])
"""


@pytest.mark.slow
def test_a_full_process_table_lowers_parallelism_and_every_task_still_runs() -> None:
    """Real forks fail: the run has a fresh real user id (root is exempt from RLIMIT_NPROC,
    so as root it keeps its effective id but gives up the capabilities that lift the
    limit), and room for the orchestrator, two agents with their supervisors, and one git,
    but not for git's own helpers beside them. Each task's agent is one process."""
    if os.geteuid() == 0 and shutil.which("setpriv") is None:
        pytest.skip("as root this needs setpriv to drop the exemption from RLIMIT_NPROC")
    with tempfile.TemporaryDirectory(prefix="gadugi-nproc-") as name:
        work = Path(name)
        work.chmod(0o755)  # some of git's checks ask as the real user (access(2))
        root = work / "project"
        root.mkdir()
        git(root, "init", "-q", "-b", "main")
        (root / "prompts").mkdir()
        for n in range(4):
            (root / "prompts" / f"t{n}.md").write_text(f"# t{n}\n\n```sh\nexec sleep 1\n```\n")
        (root / "gadugi.toml").write_text("max_load_per_cpu = 0\nmin_available_memory_mb = 0\n")
        git(root, "add", "-A")
        git(root, "-c", "user.name=T", "-c", "user.email=t@e", "commit", "-qm", "prompts")
        argv = [sys.executable, "-c", LIMITED, "6"]
        argv += ["run", "--agent", "shell", "--json", "--max-parallel", "4"]
        argv += ["t0", "t1", "t2", "t3"]
        if os.geteuid() == 0:
            uid = 3_000_000 + os.getpid() % 1_000_000  # a real user id nothing else runs as
            argv = ["setpriv", f"--ruid={uid}", "--bounding-set=-sys_resource,-sys_admin", *argv]
        env = {**os.environ, **GIT_ENV, "PYTHONPATH": os.pathsep.join(sys.path)}
        proc = subprocess.run(
            argv, cwd=root, capture_output=True, text=True, timeout=240, env=env, check=False
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        tasks = _tasks(proc.stdout)
        assert {t["status"] for t in tasks.values()} == {"completed"}
        assert "at most" in proc.stderr and "at once" in proc.stderr
