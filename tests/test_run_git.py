"""git runs in a session of its own: a terminal's Ctrl-C reaches gadugi, never git."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import git

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
