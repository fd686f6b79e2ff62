"""git runs in a session of its own: a terminal's Ctrl-C reaches gadugi, never git."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import git, wait_until

CHILD = """
import signal, sys
from pathlib import Path
from gadugi.worktrees import run_git
seen = []
signal.signal(signal.SIGINT, lambda *_: seen.append("SIGINT"))
started, gate = sys.argv[1], sys.argv[2]
alias = f"!touch {started}; while [ ! -e {gate} ]; do sleep 0.02; done; echo finished"
res = run_git(["-c", "alias.slow=" + alias, "slow"], Path.cwd())
print(res.returncode, res.stdout.strip(), *seen)
"""


def test_a_ctrl_c_at_the_terminal_does_not_reach_git(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q")
    started, gate = tmp_path / "started", tmp_path / "gate"
    # A terminal sends Ctrl-C to its foreground process group: here, the child's own.
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(started), str(gate)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not started.exists():
            assert time.monotonic() < deadline and child.poll() is None, "git never started"
            time.sleep(0.02)
        os.killpg(child.pid, signal.SIGINT)
        gate.touch()
        out, _ = child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert out.split() == ["0", "finished", "SIGINT"]


def test_a_git_over_its_time_limit_is_stopped_with_what_it_started(tmp_path: Path) -> None:
    # A push whose transport hangs (an ssh that never answers) must not hold gadugi's loop.
    import psutil

    from gadugi.worktrees import run_git

    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    git(repo, "commit", "-q", "--allow-empty", "-m", "one")
    pids = tmp_path / "pids"
    ssh = tmp_path / "hanging-ssh"
    ssh.write_text(f'#!/bin/sh\necho $$ >> "{pids}"\nsleep 600 &\necho $! >> "{pids}"\nwait\n')
    ssh.chmod(0o755)
    hang = ["-c", f"core.sshCommand={ssh}", "push", "ssh://example.invalid/x"]

    res = run_git([*hang, "HEAD:refs/heads/x"], repo, timeout_s=1.0)

    assert res.returncode != 0 and "timed out after 1 s" in res.stderr
    started = [int(pid) for pid in pids.read_text().split()]
    assert len(started) == 2  # the ssh stand-in and the sleep it started

    def gone(pid: int) -> bool:
        try:
            return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE  # dead, not reaped yet
        except psutil.NoSuchProcess:
            return True

    wait_until(lambda: all(gone(pid) for pid in started))
