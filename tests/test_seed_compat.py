"""The seed guide's literal usage, verbatim: its Python snippet, ``process_registry``,
``run_orchestrator.sh`` and ``orchestrator_cli.py`` (from the distribution's top-level
modules and from the ``.claude/orchestrator/`` launchers that ``install-agent --layout``
lays out), and ``gadugi cancel --task-id``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import GIT_ENV, Repo, run_cli, start_cli

# From the guide's "Python API Usage", unchanged.
SEED_SNIPPET = """\
from orchestrator_main import OrchestratorCoordinator, OrchestrationConfig

# Create configuration
config = OrchestrationConfig(
    max_parallel_tasks=4,
    execution_timeout_hours=2
)

# Initialize coordinator
coordinator = OrchestratorCoordinator(config, project_root=".")

# Execute orchestration
result = coordinator.orchestrate(["feature-1.md", "feature-2.md"])

# Check results
print(f"Success: {result.successful_tasks}/{result.total_tasks}")
print(f"Speedup: {result.parallel_speedup:.1f}x")
"""
pytestmark = pytest.mark.slow
PYTHON3 = shutil.which("python3") or sys.executable


def _shell(
    command: str, cwd: Path, *, env: dict[str, str] | None = None, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", command],
        cwd=cwd,
        env={**os.environ, **GIT_ENV, **(env or {})},
        input=input,
        stdin=None if input is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _stored_config(repo: Repo) -> dict[str, Any]:
    data = json.loads(run_cli(["status", "--json"], repo.root).stdout)
    exported = repo.root / "export.json"
    assert run_cli(["export", "--output", str(exported)], repo.root).returncode == 0
    orch = next(
        o
        for o in json.loads(exported.read_text())["orchestrations"]
        if o["id"] == data["orchestration_id"]
    )
    config: dict[str, Any] = orch["config"]
    return config


@pytest.fixture
def seed_repo(repo: Repo) -> Repo:
    for name in ("feature-1", "feature-2", "bug-fix", "task1", "task2", "test"):
        repo.shell_prompt(
            f"{name}.md", f"echo {name} > {name}.txt && git add -A && git commit -q -m {name}"
        )
    # The project's configuration, which the seed's API reads as the command line does.
    (repo.root / "gadugi.toml").write_text("monitoring_interval_seconds = 7\n")
    repo.commit()
    return repo


def test_the_seed_python_snippet_runs_unchanged(seed_repo: Repo) -> None:
    (seed_repo.root / "snippet.py").write_text(SEED_SNIPPET)
    env = {"GADUGI_AGENT": "shell", "GADUGI_MAX_PARALLEL": "1"}  # the snippet's 4 wins

    done = _shell(f"{sys.executable} snippet.py", seed_repo.root, env=env)

    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "Success: 2/2"
    assert lines[1].startswith("Speedup: ") and lines[1].endswith("x")
    config = _stored_config(seed_repo)
    assert (config["agent"], config["max_parallel_tasks"]) == ("shell", 4)
    assert config["monitoring_interval_seconds"] == 7  # from gadugi.toml
    assert sorted(seed_repo.branches())[0].startswith("gadugi/feature-1-")


def test_process_registry_module_is_gadugis_status_export_and_cancel(seed_repo: Repo) -> None:
    assert run_cli(["run", "--agent", "shell", "feature-1"], seed_repo.root).returncode == 0
    py = f"{sys.executable} -m process_registry"

    status = _shell(f"{py} status", seed_repo.root)
    assert status.returncode == 0, status.stderr
    assert status.stdout == run_cli(["status"], seed_repo.root).stdout
    assert "feature-1" in status.stdout and "completed" in status.stdout

    exported = _shell(f"{py} export --output monitoring_data.json", seed_repo.root)
    assert exported.returncode == 0, exported.stderr
    data = json.loads((seed_repo.root / "monitoring_data.json").read_text())
    assert data["orchestrations"][0]["tasks"][0]["task_id"] == "feature-1"

    cancel = _shell(f"{py} cancel --task-id feature-1", seed_repo.root)
    assert cancel.returncode == 0, cancel.stderr
    assert cancel.stdout.strip() == "feature-1 already completed; nothing to cancel"

    unknown = _shell(f"{py} restart", seed_repo.root)
    assert unknown.returncode == 2 and "status|export|cancel" in unknown.stderr


def test_cancel_takes_task_id_as_an_option(repo: Repo, tmp_path: Path) -> None:
    started = tmp_path / "started"
    repo.shell_prompt("task-abc-123.md", f"touch {started}\nsleep 60")
    repo.commit()
    run = start_cli(["run", "--agent", "shell", "--quiet", "task-abc-123"], repo.root)
    try:
        deadline = time.monotonic() + 60
        while not started.exists():
            assert time.monotonic() < deadline and run.poll() is None, "the task never started"
            time.sleep(0.05)
        done = run_cli(["cancel", "--task-id", "task-abc-123"], repo.root)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "task-abc-123: cancelled"
        assert run.wait(timeout=60) == 1
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()

    both = run_cli(["cancel", "a", "--task-id", "b"], repo.root)
    assert both.returncode == 2 and "two different tasks named" in both.stderr
    neither = run_cli(["cancel"], repo.root)
    assert neither.returncode == 2 and "--task-id TASK_ID" in neither.stderr


def test_layout_runs_every_seed_usage_line_from_claude_orchestrator(seed_repo: Repo) -> None:
    done = run_cli(["install-agent", "--layout"], seed_repo.root)
    assert done.returncode == 0, done.stderr
    here = seed_repo.root / ".claude" / "orchestrator"
    names = ["orchestrator_cli.py", "orchestrator_main.py", "process_registry.py"]
    assert sorted(p.name for p in here.iterdir()) == [*names[:2], names[2], "run_orchestrator.sh"]
    assert all(os.access(here / n, os.X_OK) for n in ("run_orchestrator.sh", names[0], names[2]))
    (seed_repo.root / "gadugi.toml").write_text('agent = "shell"\n')

    def ok(command: str, input: str | None = None) -> str:
        ran = _shell(command, here, input=input)
        assert ran.returncode == 0, f"{command}: {ran.stdout}{ran.stderr}"
        return ran.stdout

    assert "3/3 completed" in ok("./run_orchestrator.sh feature-1.md feature-2.md bug-fix.md")
    assert "1/1 completed" in ok(
        'echo "Execute these prompts: test.md" | ./run_orchestrator.sh --stdin'
    )
    assert "2/2 completed" in ok(
        "./run_orchestrator.sh --max-parallel 6 --timeout 3 task1.md task2.md"
    )
    assert "1/1 completed" in ok("./run_orchestrator.sh --interactive", input="feature-1.md\n\n")
    assert "2/2 completed" in ok("./run_orchestrator.sh --verbose task1.md task2.md")
    assert "1/1 completed" in ok(f"{PYTHON3} orchestrator_cli.py bug-fix.md")

    assert "completed" in ok(f"{PYTHON3} process_registry.py status")
    ok(f"{PYTHON3} process_registry.py export --output monitoring_data.json")
    assert json.loads((here / "monitoring_data.json").read_text())["orchestrations"]
    assert "already completed" in ok(f"{PYTHON3} process_registry.py cancel --task-id bug-fix")

    # The guide's troubleshooting: the launchers' folder on PYTHONPATH, then the snippet.
    (seed_repo.root / "snippet.py").write_text(SEED_SNIPPET)
    ran = _shell(f"{sys.executable} snippet.py", seed_repo.root, env={"PYTHONPATH": str(here)})
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.startswith("Success: 2/2\n")
