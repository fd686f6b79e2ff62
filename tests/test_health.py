"""Heartbeats, stalls, admission control, resource limits and start retries."""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest

import gadugi.coordinator
from conftest import Repo, git, run_cli, start_cli
from gadugi import OrchestrationConfig, OrchestratorCoordinator
from gadugi.agents.base import AgentContext, Launch, Outcome
from gadugi.agents.shell import ShellProfile
from gadugi.config import machine_memory_mb
from gadugi.health import Admission, Reading
from gadugi.tasks import Prompt


def _config(repo: Repo, text: str) -> None:
    (repo.root / "gadugi.toml").write_text(text)


def test_admission_says_why_a_task_must_wait() -> None:
    readings = [Reading(100.0, 0.5, 2), Reading(4000.0, 9.0, 2), Reading(4000.0, 0.5, 2)]
    gate = Admission(min_available_mb=256, max_load_per_cpu=3.0, read=lambda: readings.pop(0))
    assert "memory" in (gate.blocked(0.0) or "")
    assert "memory" in (gate.blocked(0.5) or "")  # sampled at most once a second
    assert "load" in (gate.blocked(1.0) or "")
    assert gate.blocked(2.0) is None
    assert Admission(0, 0, read=lambda: Reading(1.0, 99.0, 1)).blocked(0.0) is None


@pytest.mark.slow
def test_tasks_wait_under_the_memory_floor_and_status_says_why(repo: Repo) -> None:
    repo.shell_prompt("a.md", "true")
    repo.commit()
    # The highest floor allowed: the kernel alone keeps more than 1 MB from being available.
    _config(repo, f"min_available_memory_mb = {machine_memory_mb() - 1}\n")
    run = start_cli(["run", "--agent", "shell", "a"], repo.root)
    try:
        deadline = time.monotonic() + 30
        doc: dict[str, object] = {}
        while time.monotonic() < deadline:
            status = run_cli(["status", "--json"], repo.root)
            if status.returncode == 0:
                doc = json.loads(status.stdout)
                if doc.get("waiting_reason"):
                    break
            time.sleep(0.2)
        assert "waiting for memory" in str(doc["waiting_reason"])
        assert "waiting for memory" in run_cli(["status"], repo.root).stdout
        assert run_cli(["cancel", "a"], repo.root).returncode == 0
        out, _ = run.communicate(timeout=30)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 1
    assert "waiting for memory" in out  # the plain progress lines said so too


@pytest.mark.slow
def test_a_stalled_agent_is_marked_and_warned_about(repo: Repo) -> None:
    repo.shell_prompt("quiet.md", "echo starting\nsleep 8\necho done")
    repo.commit()
    _config(repo, "stall_timeout_minutes = 0.02\n")  # 1.2 seconds of silence
    run = start_cli(["run", "--agent", "shell", "--json", "quiet"], repo.root)
    seen = ""
    try:
        deadline = time.monotonic() + 30
        while run.poll() is None and time.monotonic() < deadline and "stalled" not in seen:
            status = run_cli(["status", "--json"], repo.root)
            if status.returncode == 0:
                seen = json.dumps(json.loads(status.stdout)["tasks"])
            time.sleep(0.2)
        out, _ = run.communicate(timeout=30)
    finally:
        if run.poll() is None:
            run.kill()
    assert "stalled: no output" in seen
    task = json.loads(out)["tasks"][0]
    assert task["status"] == "completed" and task["attempts"] == 1  # warn only
    assert task["error_message"] is None  # the mark cleared when output came again


@pytest.mark.slow
def test_a_stalled_agent_is_stopped_and_retried_when_configured(repo: Repo, tmp_path: Path) -> None:
    marker = tmp_path / "first"
    repo.shell_prompt(
        "hang.md", f"if [ ! -e {marker} ]; then touch {marker}; sleep 300; fi\necho ok"
    )
    repo.commit()
    _config(
        repo, "stall_timeout_minutes = 0.02\nstall_action = 'restart'\nkill_grace_seconds = 1\n"
    )
    proc = run_cli(["run", "--agent", "shell", "--retries", "1", "--json", "hang"], repo.root)
    task = json.loads(proc.stdout)["tasks"][0]
    assert task["status"] == "completed" and task["attempts"] == 2, task
    log = Path(task["log_file"]).read_text()
    assert "attempt 2" in log and "ok" in log


def test_resource_limits_reach_the_agent(repo: Repo) -> None:
    repo.shell_prompt(
        "limited.md",
        "echo files=$(ulimit -n) memory=$(ulimit -v)",
        front="open_files_limit: 64\nmemory_limit_mb: 2048",
    )
    repo.commit()
    proc = run_cli(["run", "--agent", "shell", "--json", "limited"], repo.root)
    task = json.loads(proc.stdout)["tasks"][0]
    assert task["status"] == "completed", task
    assert Path(task["log_file"]).read_text().strip() == f"files=64 memory={2048 * 1024}"


@pytest.mark.slow
def test_a_held_ref_lock_is_waited_out(repo: Repo, monkeypatch: pytest.MonkeyPatch) -> None:
    orch_id = "orch-20260101-000000-beef"
    monkeypatch.setattr(gadugi.coordinator, "new_orchestration_id", lambda: orch_id)
    repo.shell_prompt("locked.md", "true")
    repo.commit()
    lock = repo.root / ".git/refs/heads/gadugi/locked-beef.lock"
    lock.parent.mkdir(parents=True)
    lock.write_text("held by another git process\n")
    threading.Timer(1.2, lock.unlink).start()
    config = OrchestrationConfig(agent="shell")
    result = OrchestratorCoordinator(config, project_root=repo.root).orchestrate(["locked"])
    assert result.tasks[0].status == "completed", result.tasks[0].error_message
    assert "gadugi/locked-beef" in git(repo.root, "branch", "--list", "gadugi/*")


def test_a_lock_that_is_never_released_fails_with_the_last_error(
    repo: Repo, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("gadugi.runner.START_RETRY_BASE_S", 0.01)
    orch_id = "orch-20260101-000000-cafe"
    monkeypatch.setattr(gadugi.coordinator, "new_orchestration_id", lambda: orch_id)
    repo.shell_prompt("stuck.md", "true")
    repo.commit()
    lock = repo.root / ".git/refs/heads/gadugi/stuck-cafe.lock"
    lock.parent.mkdir(parents=True)
    lock.write_text("held\n")
    config = OrchestrationConfig(agent="shell")
    result = OrchestratorCoordinator(config, project_root=repo.root).orchestrate(["stuck"])
    task = result.tasks[0]
    assert task.status == "failed"
    assert task.error_message is not None
    assert "gave up after 6 tries" in task.error_message and ".lock" in task.error_message


class _LimitedOnce:
    """The shell agent, except that its first attempt reports a usage limit with a reset."""

    name = "limited"

    def __init__(self, reset_in_s: float) -> None:
        self.inner = ShellProfile()
        self.reset_in_s = reset_in_s
        self.judged = 0

    def prepare(self, ctx: AgentContext, prompt: Prompt) -> Launch:
        return self.inner.prepare(ctx, prompt)

    def judge(self, ctx: AgentContext, exit_code: int) -> Outcome:
        self.judged += 1
        if self.judged == 1:
            reset = time.time() + self.reset_in_s
            return Outcome(
                False, transient=True, error="usage limit reached", agent={"retry_after": reset}
            )
        return self.inner.judge(ctx, exit_code)


def test_a_usage_limit_parks_the_task_without_spending_retries(
    repo: Repo, monkeypatch: pytest.MonkeyPatch
) -> None:
    profile = _LimitedOnce(reset_in_s=1.5)
    monkeypatch.setattr(gadugi.coordinator, "profile_for", lambda name, config: profile)
    repo.shell_prompt("capped.md", "echo working")
    repo.commit()
    config = OrchestrationConfig(agent="shell", retries=0, usage_limit_margin_seconds=0)
    result = OrchestratorCoordinator(config, project_root=repo.root).orchestrate(["capped"])
    task = result.tasks[0]
    assert task.status == "completed" and task.attempts == 2  # no retry budget was needed
    assert task.started_at is not None and task.completed_at is not None
    span = datetime.fromisoformat(task.completed_at) - datetime.fromisoformat(task.started_at)
    assert span.total_seconds() >= 1.4  # it waited for the reset,
    assert task.duration_seconds is not None
    assert task.duration_seconds < span.total_seconds()  # and the wait is not run time
