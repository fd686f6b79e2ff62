"""gadugi cleanup: removes what finished runs left, keeps everything that holds work."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from conftest import Repo, git, run_cli


def _run(repo: Repo, *names: str) -> dict[str, Any]:
    proc = run_cli(["run", "--agent", "shell", "--json", *names], repo.root)
    data: dict[str, Any] = json.loads(proc.stdout)
    return data


def _setup(repo: Repo) -> dict[str, dict[str, Any]]:
    repo.shell_prompt("merged.md", "echo m > m.txt\ngit add m.txt\ngit commit -qm m")
    repo.shell_prompt("unmerged.md", "echo u > u.txt\ngit add u.txt\ngit commit -qm u")
    repo.shell_prompt("dirty.md", "echo draft > d.txt")
    repo.shell_prompt("empty.md", "true")
    repo.commit()
    result = _run(repo, "merged", "unmerged", "dirty", "empty")
    tasks = {t["task_id"]: t for t in result["tasks"]}
    git(repo.root, "merge", "-q", "--no-edit", tasks["merged"]["branch"])
    return tasks


def test_cleanup_keeps_dirty_worktrees_and_unmerged_branches(repo: Repo) -> None:
    tasks = _setup(repo)
    before = repo.snapshot()
    dry = run_cli(["cleanup", "--dry-run"], repo.root)
    assert dry.returncode == 0, dry.stderr
    assert f"would delete branch {tasks['merged']['branch']}" in dry.stdout
    assert repo.snapshot() == before  # a dry run changes nothing

    proc = run_cli(["cleanup"], repo.root)
    assert proc.returncode == 0, proc.stderr
    branches = repo.branches()
    assert tasks["merged"]["branch"] not in branches
    assert tasks["empty"]["branch"] not in branches
    assert tasks["unmerged"]["branch"] in branches
    assert tasks["dirty"]["branch"] in branches
    assert (Path(tasks["dirty"]["worktree"]) / "d.txt").read_text() == "draft\n"
    assert "uncommitted changes" in proc.stdout and "exist on no other branch" in proc.stdout
    # The orchestration still holds work, so its records and logs stay.
    assert "registry rows and logs kept" in proc.stdout
    assert run_cli(["status"], repo.root).returncode == 0


def test_force_removes_everything_and_forgets_the_orchestration(repo: Repo) -> None:
    tasks = _setup(repo)
    orch_dir = Path(tasks["dirty"]["log_file"]).parent
    proc = run_cli(["cleanup", "--force"], repo.root)
    assert proc.returncode == 0, proc.stderr
    assert repo.branches() == []
    assert repo.worktrees() == [str(repo.root)]
    assert not orch_dir.exists()
    status = run_cli(["status"], repo.root)
    assert status.returncode == 2 and "no orchestrations yet" in status.stderr
    assert git(repo.root, "log", "--oneline", "-1").strip()  # the main branch is untouched


def test_older_than_spares_recent_runs(repo: Repo) -> None:
    tasks = _setup(repo)
    proc = run_cli(["cleanup", "--older-than", "1"], repo.root)
    assert proc.returncode == 0
    assert "nothing to clean up" in proc.stdout
    assert tasks["merged"]["branch"] in repo.branches()


def test_orphaned_worktree_records_are_reported_and_pruned(repo: Repo) -> None:
    tasks = _setup(repo)
    shutil.rmtree(tasks["dirty"]["worktree"])  # deleted behind git's back
    proc = run_cli(["cleanup"], repo.root)
    assert "orphaned worktree record" in proc.stdout
    assert "pruned" in proc.stdout
    assert "orphaned" not in run_cli(["cleanup", "--dry-run"], repo.root).stdout


def test_cleanup_without_a_registry(repo: Repo) -> None:
    proc = run_cli(["cleanup"], repo.root)
    assert proc.returncode == 2 and "no orchestrations yet" in proc.stderr


def test_stale_agent_processes_of_finished_runs_are_reported(repo: Repo) -> None:
    repo.shell_prompt("quick.md", "true")
    repo.commit()
    orch_id = _run(repo, "quick")["orchestration_id"]
    # A process that still carries a finished run's identity (as if it had escaped it).
    env = {**os.environ, "GADUGI_ORCHESTRATION_ID": orch_id, "GADUGI_TASK_ID": "quick"}
    stray = subprocess.Popen(["sleep", "60"], env=env, start_new_session=True)
    try:
        proc = run_cli(["cleanup", "--dry-run"], repo.root)
        assert f"stale process {stray.pid} (task quick of finished {orch_id})" in proc.stdout
    finally:
        stray.kill()
        stray.wait()
