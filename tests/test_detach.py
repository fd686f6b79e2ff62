"""``gadugi run --detach`` and ``gadugi wait``: an orchestration that outlives its caller.

The caller is a real shell in a process group of its own, killed as a whole with SIGKILL
(what a terminal closing, or Claude Code ending a Bash tool's command, does to it); the
orchestrator, the shell agents and git are real processes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from conftest import GIT_ENV, Repo, run_cli

pytestmark = pytest.mark.slow


def _until(predicate: Any, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def _gated_prompts(repo: Repo, gate: Path, names: list[str]) -> None:
    """Tasks that wait (at most 60 s) for ``gate`` to exist, then commit a file each."""
    for name in names:
        repo.shell_prompt(
            f"{name}.md",
            f"for i in $(seq 600); do [ -e {gate} ] && break; sleep 0.1; done\n"
            f"echo {name} > {name}.txt && git add {name}.txt && git commit -q -m {name}",
        )
    repo.commit()


def _detach(repo: Repo, *args: str) -> dict[str, Any]:
    done = run_cli(["run", "--detach", "--json", "--agent", "shell", *args], repo.root)
    assert done.returncode == 0, done.stderr
    started: dict[str, Any] = json.loads(done.stdout)
    return started


def _stat_fields(pid: int) -> list[str]:
    """/proc/<pid>/stat after the command name: state, ppid, pgrp, session, tty_nr, ..."""
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2 :].split()


def test_a_detached_run_finishes_after_its_callers_process_group_is_killed(
    repo: Repo, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    _gated_prompts(repo, gate, ["alpha", "beta"])
    out = tmp_path / "caller.out"
    # The caller lingers after gadugi returns, as a Claude Code session or a terminal would.
    script = (
        f"{sys.executable} -m gadugi run --detach --json --agent shell alpha beta > {out}; sleep 60"
    )
    caller = subprocess.Popen(
        ["bash", "-c", script],
        cwd=repo.root,
        env={**os.environ, **GIT_ENV},
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        _until(lambda: out.exists() and out.read_text().endswith("\n"))
        started = json.loads(out.read_text())
        orch_id, pid = started["orchestration_id"], started["pid"]

        # Recorded before the caller heard of it: status finds it at once.
        status = run_cli(["status", "--orchestration", orch_id, "--json"], repo.root)
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["orchestrator_alive"] is True

        _state, _ppid, pgrp, session, tty_nr = _stat_fields(pid)[:5]
        assert int(session) == int(pgrp) != os.getsid(caller.pid)  # its own session ...
        assert int(session) != pid  # ... led by nobody alive: it can never get a terminal
        assert tty_nr == "0"
        assert os.readlink(f"/proc/{pid}/fd/0") == os.devnull
        log = Path(started["log_file"])
        assert log == repo.root / ".gadugi" / "logs" / orch_id / "orchestrator.log"
        assert os.readlink(f"/proc/{pid}/fd/1") == os.readlink(f"/proc/{pid}/fd/2") == str(log)

        os.killpg(caller.pid, signal.SIGHUP)
        os.killpg(caller.pid, signal.SIGKILL)
        caller.wait(timeout=10)
        assert psutil.Process(pid).is_running()
        gate.touch()

        done = run_cli(["wait", orch_id, "--json", "--timeout", "120"], repo.root, timeout=150)
    finally:
        if caller.poll() is None:
            os.killpg(caller.pid, signal.SIGKILL)
            caller.wait()
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result == repo.final()
    assert [(t["task_id"], t["status"], t["commits"]) for t in result["tasks"]] == [
        ("alpha", "completed", 1),
        ("beta", "completed", 1),
    ]
    # What the orchestrator printed went to its log: the progress lines and the summary.
    assert f"orchestration {orch_id}: 2/2 completed" in log.read_text()


def test_wait_times_out_with_124_then_returns_the_result(repo: Repo, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    _gated_prompts(repo, gate, ["slow"])
    orch_id = _detach(repo, "slow")["orchestration_id"]

    early = run_cli(["wait", orch_id, "--timeout", "0.5", "--json"], repo.root)
    assert early.returncode == 124, early.stderr
    assert json.loads(early.stdout) == {
        "orchestration_id": orch_id,
        "state": "running",
        "timed_out": True,
    }
    assert f"gadugi wait {orch_id}" in early.stderr

    gate.touch()
    done = run_cli(["wait", "--timeout", "120"], repo.root, timeout=150)  # the newest
    assert done.returncode == 0, done.stderr
    assert f"orchestration {orch_id}: 1/1 completed" in done.stdout
    assert "slow" in done.stdout and "1 commit(s)" in done.stdout


def test_wait_gives_runs_exit_codes(repo: Repo, tmp_path: Path) -> None:
    repo.shell_prompt("bad.md", "exit 3")
    repo.commit()
    orch_id = _detach(repo, "bad")["orchestration_id"]
    done = run_cli(["wait", orch_id, "--json", "--timeout", "120"], repo.root, timeout=150)
    assert done.returncode == 1, done.stderr
    assert json.loads(done.stdout)["tasks"][0]["status"] == "failed"

    gate = tmp_path / "gate"
    _gated_prompts(repo, gate, ["stopped"])
    started = _detach(repo, "stopped")
    os.kill(started["pid"], signal.SIGTERM)  # what a shutdown sends: an interrupted run
    done = run_cli(["wait", started["orchestration_id"], "--timeout", "120"], repo.root)
    assert done.returncode == 130, done.stdout + done.stderr


def test_a_killed_detached_orchestrator_is_reported_then_resumed(
    repo: Repo, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    _gated_prompts(repo, gate, ["alpha"])
    started = _detach(repo, "alpha")
    orch_id = started["orchestration_id"]
    os.kill(started["pid"], signal.SIGKILL)

    orphaned = run_cli(["wait", orch_id, "--json", "--timeout", "60"], repo.root)
    assert orphaned.returncode == 1
    assert json.loads(orphaned.stdout)["orchestrator_alive"] is False
    assert f"gadugi resume {orch_id}" in orphaned.stderr

    gate.touch()
    resumed = run_cli(["resume", orch_id, "--json"], repo.root)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["tasks"][0]["commits"] == 1
    again = run_cli(["wait", orch_id, "--json"], repo.root)
    assert again.returncode == 0 and json.loads(again.stdout) == json.loads(resumed.stdout)


def test_a_refused_detached_run_exits_2_and_leaves_nothing(repo: Repo) -> None:
    repo.shell_prompt("a.md", "true")
    repo.commit()
    before = repo.snapshot()

    missing = run_cli(["run", "--detach", "--agent", "shell", "nope"], repo.root)
    assert missing.returncode == 2
    assert "nope" in missing.stderr and missing.stdout == ""

    # Refused inside the detached process itself (before the orchestration is recorded):
    # the message and the exit code still reach the caller.
    absent = run_cli(
        ["run", "--detach", "--agent", "codex", "a"], repo.root, env={"PATH": "/usr/bin:/bin"}
    )
    assert absent.returncode == 2, absent.stderr
    assert "codex" in absent.stderr and absent.stdout == ""
    assert repo.snapshot() == before


def test_a_second_detached_run_of_the_same_prompts_is_refused(repo: Repo, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    _gated_prompts(repo, gate, ["alpha"])
    first = _detach(repo, "alpha")["orchestration_id"]
    second = run_cli(["run", "--detach", "--agent", "shell", "alpha"], repo.root)
    gate.touch()
    assert second.returncode == 2, second.stderr
    assert f"orchestration {first} is already running prompts/alpha.md" in second.stderr
    assert run_cli(["wait", first, "--timeout", "120"], repo.root).returncode == 0
