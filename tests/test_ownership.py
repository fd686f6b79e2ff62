"""One owner per orchestration, compare-and-set task writes, and what resume must not do twice.

The races here are real: forked processes released by one barrier claim the same
orchestration (or create identical ones) at the same instant, many times over.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import sqlite3
import subprocess
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import psutil
import pytest

from conftest import Repo, git, run_cli, start_cli, wait_until
from gadugi import recovery
from gadugi.config import OrchestrationConfig
from gadugi.coordinator import OrchestratorCoordinator
from gadugi.errors import GadugiError, RegistryError
from gadugi.lifecycle import ALLOWED, LostRace, Transition, TransitionError
from gadugi.registry import Registry
from gadugi.runner import Layout
from gadugi.tasks import TaskStatus

Q, R, C = TaskStatus.QUEUED, TaskStatus.RUNNING, TaskStatus.COMPLETED
TRIES = 50
FORK = multiprocessing.get_context("fork")


def _dead_pid() -> tuple[int, float]:
    """A pid and start time that name no live process (a crashed orchestrator)."""
    proc = subprocess.Popen(["true"])
    start = psutil.Process(proc.pid).create_time()
    proc.wait()
    return proc.pid, start


def _seed(reg: Registry, orch_id: str, tasks: list[dict[str, Any]], **kw: Any) -> None:
    pid, start = _dead_pid()
    reg.create_orchestration(orch_id, Path("/p"), "abc", {}, pid, start, False, tasks, **kw)


# -- the state machine and the compare-and-set ---------------------------------------------


def test_the_state_machine_allows_only_listed_moves() -> None:
    for old in TaskStatus:
        for new in TaskStatus:
            if new in ALLOWED[old]:
                Transition("t", old, new)
            else:
                with pytest.raises(TransitionError):
                    Transition("t", old, new)
    assert Q not in ALLOWED[Q] and C not in ALLOWED[Q]  # nothing completes without running


def test_a_transition_is_a_compare_and_set_on_status_and_owner(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "state.db")
    _seed(reg, "o", [{"task_id": "a", "name": "A", "prompt_file": "p/a.md"}], owner="me")
    reg.transition("o", Transition("a", Q, R), 1.0, owner="me", pid=7)
    with pytest.raises(LostRace):  # the row is no longer queued
        reg.transition("o", Transition("a", Q, R), 2.0, owner="me")
    with pytest.raises(LostRace):  # not the owner
        reg.transition("o", Transition("a", R, C), 2.0, owner="someone-else")
    row = reg.find_task("a", "o")
    assert (row["status"], row["pid"], row["completed_at"]) == ("running", 7, None)
    reg.transition("o", Transition("a", R, C), 3.0, owner="me")
    assert reg.find_task("a", "o")["completed_at"] == 3.0
    # Leaving a finished status clears the end time of the attempt before.
    reg.transition("o", Transition("a", C, Q, "again"), 4.0, owner="me")
    row = reg.find_task("a", "o")
    assert (row["status"], row["completed_at"], row["error_message"]) == ("queued", None, "again")


def test_status_is_never_written_around_the_state_machine(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "state.db")
    _seed(reg, "o", [{"task_id": "a", "name": "A", "prompt_file": "p/a.md"}])
    with pytest.raises(ValueError, match="transition"):
        reg.update_task("o", "a", status="completed")


def test_a_failed_transaction_leaves_nothing_behind(tmp_path: Path) -> None:
    """Two tasks with one id: the insert fails, and the orchestration row must go with it."""
    reg = Registry(tmp_path / "state.db")
    twice = [{"task_id": "a", "name": "A", "prompt_file": "p/a.md"}] * 2
    with pytest.raises(GadugiError):
        _seed(reg, "o", twice)
    assert reg.orchestrations() == []


# -- exactly one owner -------------------------------------------------------------------------


def _exit(out: Any) -> None:
    """Leave a forked child at once, after its report has reached the pipe."""
    out.close()
    out.join_thread()
    os._exit(0)


def _claim_and_report(root: Path, orch_id: str, barrier: Any, out: Any) -> None:
    """In a forked child: try to become the owner; report whether it did."""
    coordinator = OrchestratorCoordinator(project_root=root)
    registry = Registry(coordinator.state_dir / "state.db")
    try:
        barrier.wait(10)
        held = coordinator._claim(registry, orch_id)
        orch = recovery.resumable(registry, orch_id)
        coordinator._take_over(registry, orch, held)
        out.put(("owner", os.getpid()))
        barrier.wait(10)  # hold the lease until both have tried
    except GadugiError as exc:
        out.put(("refused", str(exc)))
        barrier.wait(10)
    except BaseException as exc:  # reported, so the test says what broke
        out.put(("error", repr(exc)))
    finally:
        registry.close()
        _exit(out)


@pytest.mark.slow
def test_concurrent_resumes_have_exactly_one_owner_every_time(repo: Repo) -> None:
    state = repo.root / ".gadugi"
    reg = Registry(state / "state.db")
    config = asdict(OrchestrationConfig(agent="shell"))
    tasks = [{"task_id": "a", "name": "A", "prompt_file": "prompts/a.md"}]
    repo.shell_prompt("a.md", "true")
    for n in range(TRIES):
        orch_id = f"orch-race-{n}"
        pid, start = _dead_pid()
        reg.create_orchestration(orch_id, repo.root, "HEAD", config, pid, start, False, tasks)
        barrier, out = FORK.Barrier(2), FORK.Queue()
        children = [
            FORK.Process(target=_claim_and_report, args=(repo.root, orch_id, barrier, out))
            for _ in range(2)
        ]
        for child in children:
            child.start()
        results = [out.get(timeout=30) for _ in children]
        for child in children:
            child.join(30)
        kinds = sorted(kind for kind, _ in results)
        assert kinds == ["owner", "refused"], (n, results)
        refusal = next(detail for kind, detail in results if kind == "refused")
        assert "owned by" in str(refusal) or "still running" in str(refusal), refusal
        owner_pid = next(detail for kind, detail in results if kind == "owner")
        assert reg.orchestration(orch_id)["pid"] == owner_pid
    reg.close()


def _run_and_report(root: Path, barrier: Any, out: Any) -> None:
    config = OrchestrationConfig(agent="shell", max_parallel_tasks=1, max_load_per_cpu=0)
    try:
        barrier.wait(10)
        result = OrchestratorCoordinator(config, root).orchestrate(["a.md"])
        out.put(("ran", result.successful_tasks))
    except GadugiError as exc:
        out.put(("refused", str(exc)))
    except BaseException as exc:  # reported, so the test says what broke
        out.put(("error", repr(exc)))
    finally:
        _exit(out)


@pytest.mark.slow
def test_identical_runs_started_together_run_the_task_once_every_time(
    repo: Repo, tmp_path: Path
) -> None:
    ledger, gate = tmp_path / "ledger", tmp_path / "gate"
    # The task holds until the test has seen the other run refused, so "at the same
    # instant" never depends on how fast this machine happens to be.
    repo.shell_prompt("a.md", f"echo ran >> {ledger}\nwhile [ ! -e {gate} ]; do sleep 0.02; done")
    repo.commit()
    for n in range(TRIES):
        gate.unlink(missing_ok=True)
        barrier, out = FORK.Barrier(2), FORK.Queue()
        children = [
            FORK.Process(target=_run_and_report, args=(repo.root, barrier, out)) for _ in range(2)
        ]
        for child in children:
            child.start()
        first = out.get(timeout=60)
        gate.touch()
        second = out.get(timeout=60)
        for child in children:
            child.join(30)
        assert [first[0], second[0]] == ["refused", "ran"], (n, first, second)
        assert "already running" in str(first[1])
        assert ledger.read_text().split() == ["ran"] * (n + 1), n
    # Each refused run left nothing: one orchestration per try, one lock file per one.
    reg = Registry(repo.root / ".gadugi/state.db", readonly=True)
    ids = {o["id"] for o in reg.orchestrations()}
    reg.close()
    assert len(ids) == TRIES
    locks = {p.stem for p in (repo.root / ".gadugi/locks").iterdir()}
    assert locks == ids
    logs = {p.name for p in (repo.root / ".gadugi/logs").iterdir()}
    assert logs == ids


# -- what resume must not do twice ---------------------------------------------------------------


def _task(db: Path) -> dict[str, Any]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    conn.row_factory = sqlite3.Row
    try:
        row = conn.execute("SELECT * FROM tasks").fetchone()
        return dict(row) if row else {}
    finally:
        conn.close()


@pytest.mark.slow
def test_resume_waits_for_an_agent_whose_supervisor_alone_was_killed(
    repo: Repo, tmp_path: Path
) -> None:
    """The orchestrator and the agent's supervisor die; the agent lives on. Resume must not
    start a second attempt in the same worktree until the first one's processes are gone."""
    ledger, gate = tmp_path / "ledger", tmp_path / "gate"
    repo.shell_prompt(
        "a.md",
        f"echo start >> {ledger}\nwhile [ ! -e {gate} ]; do sleep 0.05; done\necho end >> {ledger}",
    )
    repo.commit()
    db = repo.root / ".gadugi/state.db"
    run = start_cli(["run", "--agent", "shell", "--quiet", "a"], repo.root)
    try:
        wait_until(lambda: (ledger.exists() and db.exists() and _task(db).get("pid")) or run.poll())
        assert run.poll() is None, run.communicate()
        os.kill(run.pid, signal.SIGKILL)
        run.wait(10)
        supervisor = _task(db)["pid"]
        os.kill(supervisor, signal.SIGKILL)
    finally:
        if run.poll() is None:
            run.kill()
    resumed = start_cli(["resume", "--json"], repo.root)
    try:
        time.sleep(1.5)  # time enough for a wrong resume to have started attempt 2
        assert ledger.read_text().split() == ["start"]
        row = _task(db)
        assert (row["status"], row["completed_at"]) == ("running", None)
        gate.touch()
        out, err = resumed.communicate(timeout=60)
    finally:
        if resumed.poll() is None:
            resumed.kill()
    assert resumed.returncode == 0, err
    # The lost first attempt ended before the second began.
    assert ledger.read_text().split() == ["start", "end", "start", "end"]
    task = json.loads(out)["tasks"][0]
    assert task["status"] == "completed" and task["attempts"] == 2


def _orphan_supervisor(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(["sleep", "30"], env={**os.environ, **env}, start_new_session=True)


def test_resume_adopts_an_agent_started_just_before_the_crash(repo: Repo) -> None:
    """Between spawning an agent and recording it running, only the attempt number is on
    record; resume must find that agent and watch it instead of starting another."""
    layout = Layout(
        repo.root, "orch-x", repo.root / ".worktrees", repo.root / "logs", repo.root / "p"
    )
    repo.shell_prompt("a.md", "true")
    agent = _orphan_supervisor({"GADUGI_ORCHESTRATION_ID": "orch-x", "GADUGI_TASK_ID": "a"})
    try:
        row = _row(status="queued", attempts=1)
        attempts = [_attempt_row(number=1, status="running")]
        runs = recovery.restore_runs([row], attempts, layout, OrchestrationConfig(agent="shell"))
        assert runs[0].status is R
        assert runs[0].child is not None and runs[0].child.pid == agent.pid
    finally:
        agent.kill()
        agent.wait()


def test_a_resumed_attempt_gets_its_own_deadline_and_a_parked_task_keeps_waiting(
    repo: Repo,
) -> None:
    layout = Layout(
        repo.root, "orch-y", repo.root / ".worktrees", repo.root / "logs", repo.root / "p"
    )
    repo.shell_prompt("a.md", "true", front="timeout_minutes: 10")
    repo.shell_prompt("b.md", "true")
    now = time.time()
    first_start = now - 3600  # attempt 1 began an hour ago; attempt 2 a second ago
    rows = [
        _row(status="running", attempts=2, started_at=first_start, pid=0),
        _row(task_id="b", prompt="prompts/b.md", status="queued", not_before=now + 600),
    ]
    attempts = [
        _attempt_row(number=1, status="retrying", started_at=first_start),
        _attempt_row(number=2, status="running", started_at=now - 1),
    ]
    a, b = recovery.restore_runs(rows, attempts, layout, OrchestrationConfig(agent="shell"))
    assert a.deadline == pytest.approx(now - 1 + 600)
    assert b.hold_until == pytest.approx(now + 600)


def test_resume_refuses_unknown_status_and_unreadable_config_clearly(repo: Repo) -> None:
    layout = Layout(
        repo.root, "orch-z", repo.root / ".worktrees", repo.root / "logs", repo.root / "p"
    )
    repo.shell_prompt("a.md", "true")
    with pytest.raises(RegistryError, match="'exploded'"):
        recovery.restore_runs([_row(status="exploded")], [], layout, OrchestrationConfig())
    with pytest.raises(RegistryError, match="configuration"):
        recovery.stored_config("not json")
    with pytest.raises(RegistryError, match="configuration"):
        recovery.stored_config({"max_parallel_tasks": -3})


def test_resume_of_a_registry_with_an_unknown_status_exits_2(repo: Repo) -> None:
    repo.shell_prompt("a.md", "true")
    repo.commit()
    db = repo.root / ".gadugi/state.db"
    reg = Registry(db)
    pid, start = _dead_pid()
    config = asdict(OrchestrationConfig(agent="shell"))
    tasks = [{"task_id": "a", "name": "A", "prompt_file": "prompts/a.md"}]
    reg.create_orchestration("orch-bad", repo.root, "HEAD", config, pid, start, False, tasks)
    reg.conn.execute("UPDATE tasks SET status = 'exploded'")
    reg.close()
    done = run_cli(["resume", "orch-bad"], repo.root)
    assert done.returncode == 2, done.stderr
    assert "exploded" in done.stderr and "Traceback" not in done.stderr


def test_cancel_of_an_orphaned_task_claims_the_orchestration_first(
    repo: Repo, tmp_path: Path
) -> None:
    """A cancel whose orchestrator is gone acts as owner for the moment, and leaves the
    orchestration resumable; a resume afterwards does not run the cancelled task."""
    ledger = tmp_path / "ledger"
    repo.shell_prompt("a.md", f"echo a >> {ledger}\nsleep 30")
    repo.shell_prompt("b.md", f"echo b >> {ledger}", front="depends_on: [a.md]")
    repo.commit()
    db = repo.root / ".gadugi/state.db"
    run = start_cli(["run", "--agent", "shell", "--quiet", "a", "b"], repo.root)
    try:
        wait_until(ledger.exists)
        os.kill(run.pid, signal.SIGKILL)
        run.wait(10)
    finally:
        if run.poll() is None:
            run.kill()
    done = run_cli(["cancel", "a"], repo.root)
    assert done.returncode == 0, done.stderr
    assert "cancelled" in done.stdout
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    owner = conn.execute("SELECT owner, pid FROM orchestrations").fetchone()
    conn.close()
    assert owner == (None, None)  # given up again: resume can take it
    resumed = run_cli(["resume", "--json"], repo.root)
    statuses = {t["task_id"]: t["status"] for t in json.loads(resumed.stdout)["tasks"]}
    assert statuses == {"a": "cancelled", "b": "cancelled"}
    assert ledger.read_text().split() == ["a"]
    assert git(repo.root, "branch", "--list", "gadugi/*").count("gadugi/") == 1  # b never began


def _row(
    task_id: str = "a", prompt: str = "prompts/a.md", status: str = "queued", **kw: Any
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "task_id": task_id,
        "seq": 0,
        "priority": 0,
        "depends_on": [],
        "conflicts_with": [],
        "status": status,
        "prompt_file": prompt,
        "name": task_id,
        "branch": f"gadugi/{task_id}",
        "worktree": f"/nonexistent/.worktrees/{task_id}",
        "worktree_removed": 0,
        "base_commit": None,
        "attempts": 0,
        "started_at": None,
        "completed_at": None,
        "exit_code": None,
        "error_message": None,
        "agent": {},
        "last_heartbeat": None,
        "last_line": None,
        "pid": None,
        "pid_start_time": None,
        "not_before": None,
    }
    row.update(kw)
    return row


def _attempt_row(number: int, status: str, started_at: float | None = None) -> dict[str, Any]:
    return {
        "task_id": "a",
        "number": number,
        "status": status,
        "started_at": started_at or time.time(),
    }


def _open_and_report(path: Path, barrier: Any, out: Any) -> None:
    try:
        barrier.wait(10)
        Registry(path).close()
        out.put(("opened", ""))
    except BaseException as exc:  # reported, so the test says what broke
        out.put(("error", repr(exc)))
    finally:
        _exit(out)


def test_two_processes_bring_an_old_registry_up_to_date_together(tmp_path: Path) -> None:
    """Columns added since a registry was made are added once, however many open it."""
    for n in range(20):
        path = tmp_path / f"state-{n}.db"
        Registry(path).close()
        conn = sqlite3.connect(path)
        for table, columns in (
            ("tasks", ("not_before", "worktree_state")),
            ("orchestrations", ("owner",)),
        ):
            for column in columns:
                conn.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
        conn.commit()
        conn.close()
        barrier, out = FORK.Barrier(2), FORK.Queue()
        children = [
            FORK.Process(target=_open_and_report, args=(path, barrier, out)) for _ in range(2)
        ]
        for child in children:
            child.start()
        results = [out.get(timeout=30) for _ in children]
        for child in children:
            child.join(30)
        assert results == [("opened", "")] * 2, (n, results)
        reg = Registry(path)
        assert "worktree_state" in {r[1] for r in reg.conn.execute("PRAGMA table_info(tasks)")}
        reg.close()
