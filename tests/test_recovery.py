"""Crash safety: kill -9 the orchestrator mid-run, resume, and nothing runs twice or is lost."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import time
from pathlib import Path

import psutil
import pytest

from conftest import Repo, git, run_cli, run_then_kill_9, start_cli, wait_until

TASKS = [f"job{n}" for n in range(6)]


RUNNING = "SELECT count(*) FROM tasks WHERE status = 'running'"


def _count(db: Path, sql: str) -> int:
    if not db.exists():
        return 0
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            return int(conn.execute(sql).fetchone()[0])
        finally:
            conn.close()
    except sqlite3.OperationalError:
        return 0


def _lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def _agents_of(orch_id: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            if proc.environ().get("GADUGI_ORCHESTRATION_ID") == orch_id:
                found.append(proc)
        except psutil.Error:
            continue
    return found


@pytest.fixture
def crash_repo(repo: Repo, tmp_path: Path) -> tuple[Repo, Path]:
    ledger = tmp_path / "ledger"
    for name in TASKS:
        repo.shell_prompt(
            f"{name}.md",
            f"sleep 1\necho {name} > {name}.txt\ngit add {name}.txt\ngit commit -qm {name}\n"
            f"echo {name} >> {ledger}",
        )
    repo.commit()
    return repo, ledger


KILL_POINTS = {
    "before-any-start": lambda db, ledger: _count(db, "SELECT count(*) FROM orchestrations") >= 1,
    "first-running": lambda db, ledger: _count(db, RUNNING) >= 1,
    "some-finished": lambda db, ledger: len(_lines(ledger)) >= 2,
    "almost-done": lambda db, ledger: len(_lines(ledger)) >= 5,
}


@pytest.mark.slow
@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_kill_9_then_resume_completes_every_task_exactly_once(
    crash_repo: tuple[Repo, Path], point: str
) -> None:
    repo, ledger = crash_repo
    db = repo.root / ".gadugi/state.db"
    run = start_cli(
        ["run", "--agent", "shell", "--max-parallel", "2", "--quiet", *TASKS], repo.root
    )
    try:
        wait_until(lambda: KILL_POINTS[point](db, ledger) or run.poll() is not None)
        os.kill(run.pid, signal.SIGKILL)
        run.wait(timeout=10)
    finally:
        if run.poll() is None:
            run.kill()
    # The agents it started run on without it; let them finish while nobody watches.
    time.sleep(1.5)
    status = json.loads(run_cli(["status", "--json"], repo.root).stdout)
    orch_id = status["orchestration_id"]
    assert status["state"] == "running"  # what a dead orchestrator leaves behind

    resumed = run_cli(["resume", "--json"], repo.root, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    result = json.loads(resumed.stdout)
    assert result["orchestration_id"] == orch_id
    assert {t["task_id"]: t["status"] for t in result["tasks"]} == dict.fromkeys(TASKS, "completed")
    # The run cut short and the resume are two segments; the time nobody drove is neither.
    assert [s["kind"] for s in result["segments"]] == ["run", "resume"]
    walls = sum(s["execution_time_seconds"] for s in result["segments"])
    assert result["execution_time_seconds"] == pytest.approx(walls, abs=0.01)
    assert sorted(_lines(ledger)) == sorted(TASKS)  # every task finished exactly once
    for task in result["tasks"]:
        assert task["commits"] == 1
        assert git(repo.root, "show", f"{task['branch']}:{task['task_id']}.txt").strip()
    assert _agents_of(orch_id) == []
    assert json.loads(run_cli(["status", "--json"], repo.root).stdout)["state"] == "finished"


@pytest.mark.slow
def test_an_agent_killed_while_the_orchestrator_was_down_runs_again(
    repo: Repo, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger"
    marker = tmp_path / "started"
    repo.shell_prompt(
        "victim.md",
        f"echo start >> {ledger}\n[ -e {marker} ] && exit 0\ntouch {marker}\nsleep 300",
    )
    repo.commit()
    orch_id = run_then_kill_9(repo, marker, "victim")
    for proc in _agents_of(orch_id):  # as if the machine had lost the agent too
        proc.kill()
    wait_until(lambda: _agents_of(orch_id) == [])
    resumed = run_cli(["resume", "--json"], repo.root)
    assert resumed.returncode == 0, resumed.stderr
    task = json.loads(resumed.stdout)["tasks"][0]
    assert task["status"] == "completed" and task["attempts"] == 2
    assert _lines(ledger) == ["start", "start"]


def test_resume_refuses_a_live_or_finished_orchestration(repo: Repo, tmp_path: Path) -> None:
    marker = tmp_path / "started"
    repo.shell_prompt("slow.md", f"touch {marker}\nsleep 30")
    repo.shell_prompt("quick.md", "true")
    repo.commit()
    nothing = run_cli(["resume"], repo.root)
    assert nothing.returncode == 2 and "no orchestrations yet" in nothing.stderr
    run = start_cli(["run", "--agent", "shell", "--quiet", "slow"], repo.root)
    try:
        wait_until(marker.exists)
        orch_id = json.loads(run_cli(["status", "--json"], repo.root).stdout)["orchestration_id"]
        live = run_cli(["resume", orch_id], repo.root)
        assert live.returncode == 2 and "still running" in live.stderr
        again = run_cli(["run", "--agent", "shell", "slow", "quick"], repo.root)
        assert again.returncode == 2
        assert orch_id in again.stderr and "prompts/slow.md" in again.stderr
        assert run_cli(["cancel", "slow"], repo.root).returncode == 0
    finally:
        run.wait(timeout=30)
    finished = run_cli(["resume", orch_id], repo.root)
    assert finished.returncode == 2 and "nothing to resume" in finished.stderr


def test_retry_runs_a_failed_task_again_in_its_worktree(repo: Repo, tmp_path: Path) -> None:
    marker = tmp_path / "tried"
    repo.shell_prompt(
        "flaky.md",
        f"echo progress >> work.txt\nif [ ! -e {marker} ]; then touch {marker}; exit 3; fi\n"
        "git add work.txt\ngit commit -qm 'finished the work'",
    )
    repo.shell_prompt("solid.md", "true")
    repo.commit()
    first = run_cli(["run", "--agent", "shell", "--json", "flaky", "solid"], repo.root)
    assert first.returncode == 1
    worktree = next(t for t in json.loads(first.stdout)["tasks"] if t["task_id"] == "flaky")[
        "worktree"
    ]
    refused = run_cli(["retry", "solid"], repo.root)
    assert refused.returncode == 2 and "only failed" in refused.stderr
    again = run_cli(["retry", "flaky", "--json"], repo.root)
    assert again.returncode == 0, again.stderr
    result = json.loads(again.stdout)
    assert result["successful_tasks"] == 2
    task = next(t for t in result["tasks"] if t["task_id"] == "flaky")
    assert task["attempts"] == 2 and task["commits"] == 1
    # The second attempt continued in the same worktree: both attempts' lines are there.
    assert git(repo.root, "show", f"{task['branch']}:work.txt").split() == ["progress"] * 2
    assert task["worktree"] is None and not Path(worktree).exists()


@pytest.mark.slow
def test_cancel_stops_the_agent_itself_when_the_orchestrator_is_gone(
    repo: Repo, tmp_path: Path
) -> None:
    marker = tmp_path / "started"
    repo.shell_prompt("long.md", f"touch {marker}\nsleep 300")
    repo.shell_prompt("short.md", "true")
    repo.commit()
    orch_id = run_then_kill_9(repo, marker, "--max-parallel", "1", "long", "short")
    cancelled = run_cli(["cancel", "long"], repo.root)
    assert cancelled.returncode == 0, cancelled.stderr
    assert "orchestrator is gone" in cancelled.stdout
    assert _agents_of(orch_id) == []
    resumed = run_cli(["resume", "--json"], repo.root)
    statuses = {t["task_id"]: t["status"] for t in json.loads(resumed.stdout)["tasks"]}
    assert statuses == {"long": "cancelled", "short": "completed"}


def _stamp(value: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(value).timestamp()


def test_retry_adds_a_segment_and_exits_by_the_retried_task(repo: Repo, tmp_path: Path) -> None:
    marker = tmp_path / "tried"
    repo.shell_prompt("flaky.md", f"if [ ! -e {marker} ]; then touch {marker}; exit 3; fi")
    repo.shell_prompt("broken.md", "exit 1")
    repo.commit()
    first = run_cli(["run", "--agent", "shell", "--json", "flaky", "broken"], repo.root)
    assert first.returncode == 1
    run_result = json.loads(first.stdout)
    [run_segment] = run_result["segments"]
    assert run_segment["kind"] == "run" and sorted(run_segment["tasks"]) == ["broken", "flaky"]
    assert run_segment["execution_time_seconds"] == run_result["execution_time_seconds"]

    text = run_cli(["retry", "flaky"], repo.root)
    # The retried task completed: the other failure is not this command's outcome.
    assert text.returncode == 0, text.stdout + text.stderr
    assert " flaky " in text.stdout and " broken " not in text.stdout

    again = run_cli(["retry", "flaky", "--force", "--json"], repo.root)
    assert again.returncode == 0, again.stderr
    result = json.loads(again.stdout)
    kinds = [s["kind"] for s in result["segments"]]
    assert kinds == ["run", "retry", "retry"]
    assert [s["tasks"] for s in result["segments"][1:]] == [["flaky"], ["flaky"]]
    assert result["segments"][0] == run_segment  # the run's own figures stay as they were
    walls = [s["execution_time_seconds"] for s in result["segments"]]
    assert result["execution_time_seconds"] == pytest.approx(sum(walls), abs=0.01)
    span = _stamp(result["finished_at"]) - _stamp(result["started_at"])
    assert result["execution_time_seconds"] < span  # the idle time between them is not work
    for earlier, later in zip(result["segments"], result["segments"][1:], strict=False):
        assert _stamp(later["started_at"]) >= _stamp(earlier["finished_at"])
    flaky = next(t for t in result["tasks"] if t["task_id"] == "flaky")
    assert flaky["attempts"] == 3
    shown = json.loads(run_cli(["show", "flaky", "--json"], repo.root).stdout)
    runs = sum(a["duration_seconds"] for a in shown["attempts"])
    assert flaky["duration_seconds"] == pytest.approx(runs, abs=0.01)
    assert flaky["duration_seconds"] < _stamp(flaky["completed_at"]) - _stamp(flaky["started_at"])
    status = json.loads(run_cli(["status", "--json"], repo.root).stdout)
    runtime = next(t for t in status["tasks"] if t["task_id"] == "flaky")["runtime_seconds"]
    assert runtime == pytest.approx(flaky["duration_seconds"], abs=0.01)

    whole = run_cli(["retry", "flaky", "--force", "--all"], repo.root)
    assert whole.returncode == 1  # the whole orchestration: broken still failed
    assert " flaky " in whole.stdout and " broken " in whole.stdout
