"""gadugi cleanup: removes what finished runs left, keeps everything that holds work."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import Repo, git, run_cli, start_cli
from gadugi.cleanup import ActionKind, CleanupPlan, apply, plan_cleanup
from gadugi.registry import Registry


def _run(repo: Repo, *names: str) -> dict[str, Any]:
    proc = run_cli(["run", "--agent", "shell", "--json", *names], repo.root)
    data: dict[str, Any] = json.loads(proc.stdout)
    return data


def _setup(repo: Repo) -> dict[str, dict[str, Any]]:
    repo.shell_prompt("merged.md", "echo m > m.txt\ngit add m.txt\ngit commit -qm m")
    repo.shell_prompt("unmerged.md", "echo u > u.txt\ngit add u.txt\ngit commit -qm u")
    repo.shell_prompt("dirty.md", "echo draft > d.txt")
    repo.shell_prompt("empty.md", "true")
    # Left as the agent left it, so that a worktree holds uncommitted work.
    (repo.root / "gadugi.toml").write_text("autocommit = false\n")
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


def _tasks(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {t["task_id"]: t for t in result["tasks"]}


def _tip(repo: Repo, rev: str) -> str:
    return git(repo.root, "rev-parse", "--verify", f"{rev}^{{commit}}").strip()


def _held_by_a_ref(repo: Repo, sha: str) -> bool:
    return bool(git(repo.root, "for-each-ref", "--contains", sha).strip())


COMMIT_A = "echo a > a.txt\ngit add a.txt\ngit commit -qm a"


def test_a_dependent_branch_that_added_nothing_does_not_take_its_base_down_with_it(
    repo: Repo,
) -> None:
    # top starts from base's branch and commits nothing: both branches hold base's commit,
    # and each alone may go, but not both.
    repo.shell_prompt("base.md", COMMIT_A)
    repo.shell_prompt("top.md", "true", front="depends_on: [base]")
    repo.commit()
    tasks = _tasks(_run(repo, "base", "top"))
    work = _tip(repo, tasks["base"]["branch"])
    assert _tip(repo, tasks["top"]["branch"]) == work

    proc = run_cli(["cleanup"], repo.root)
    assert proc.returncode == 0, proc.stderr
    assert _held_by_a_ref(repo, work), proc.stdout
    # The branch that made the commit is the one kept; the empty one goes.
    assert repo.branches() == [tasks["base"]["branch"]]
    assert "registry rows and logs kept" in proc.stdout


def test_a_branch_whose_commits_live_on_in_a_kept_gadugi_branch_is_deleted(repo: Repo) -> None:
    repo.shell_prompt("base.md", COMMIT_A)
    repo.shell_prompt(
        "top.md", "echo b > b.txt\ngit add b.txt\ngit commit -qm b", front="depends_on: [base]"
    )
    repo.commit()
    tasks = _tasks(_run(repo, "base", "top"))
    tips = {name: _tip(repo, t["branch"]) for name, t in tasks.items()}

    proc = run_cli(["cleanup"], repo.root)
    assert proc.returncode == 0, proc.stderr
    assert repo.branches() == [tasks["top"]["branch"]]
    assert f"deleted branch {tasks['base']['branch']}" in proc.stdout
    assert f"kept {tasks['top']['branch']}: 1 commit(s)" in proc.stdout
    assert all(_held_by_a_ref(repo, sha) for sha in tips.values())


@pytest.mark.parametrize(
    ("keeper", "setup"),
    [
        ("tag", ["tag", "keep", "{branch}"]),
        ("remote-tracking ref", ["update-ref", "refs/remotes/origin/keep", "{branch}"]),
        ("refs/gadugi ref", ["update-ref", "refs/gadugi/kept/x", "{branch}"]),
        ("detached main checkout", ["checkout", "-q", "--detach", "{branch}"]),
        ("other worktree", ["worktree", "add", "-q", "--detach", "{other}", "{branch}"]),
    ],
)
def test_refs_and_heads_outside_the_branches_keep_commits_safe(
    repo: Repo, keeper: str, setup: list[str]
) -> None:
    repo.shell_prompt("work.md", COMMIT_A)
    repo.commit()
    branch = _tasks(_run(repo, "work"))["work"]["branch"]
    work = _tip(repo, branch)
    other = repo.root.parent / "other"
    git(repo.root, *(arg.format(branch=branch, other=other) for arg in setup))

    proc = run_cli(["cleanup"], repo.root)
    assert proc.returncode == 0, proc.stderr
    assert branch not in repo.branches(), f"{keeper} holds the work, yet: {proc.stdout}"
    reached = git(repo.root, "rev-list", "--all").split()  # every worktree's HEAD too
    assert work in reached


def _failed_task_with_a_worktree(repo: Repo, script: str = COMMIT_A) -> dict[str, Any]:
    """A failed task's worktree stays (clean, with its branch) for someone to look at."""
    repo.shell_prompt("broken.md", f"{script}\nexit 1")
    repo.commit()
    task = _tasks(_run(repo, "broken"))["broken"]
    assert task["status"] == "failed" and Path(task["worktree"]).is_dir()
    return task


def test_a_worktree_whose_detached_head_holds_commits_is_kept_without_force(repo: Repo) -> None:
    task = _failed_task_with_a_worktree(repo)
    worktree = Path(task["worktree"])
    git(worktree, "checkout", "-q", "--detach")
    git(worktree, "commit", "-q", "--allow-empty", "-m", "on no branch")
    detached = git(worktree, "rev-parse", "HEAD").strip()
    assert detached != _tip(repo, task["branch"])

    proc = run_cli(["cleanup"], repo.root)
    assert proc.returncode == 0, proc.stderr
    assert worktree.is_dir() and git(worktree, "rev-parse", "HEAD").strip() == detached
    assert f"kept {worktree}: its HEAD holds 1 commit(s)" in proc.stdout
    assert task["branch"] in repo.branches()

    forced = run_cli(["cleanup", "--force"], repo.root)
    assert forced.returncode == 0, forced.stderr
    assert not worktree.exists() and repo.branches() == []


def test_a_failed_worktree_removal_keeps_the_orchestration(repo: Repo) -> None:
    task = _failed_task_with_a_worktree(repo)
    worktree = Path(task["worktree"])
    log_dir = Path(task["log_file"]).parent
    dot_git = worktree / ".git"
    link = dot_git.read_text()
    dot_git.write_text("not a gitdir line\n")  # git can neither inspect nor remove it

    proc = run_cli(["cleanup", "--force"], repo.root)
    assert proc.returncode == 1, proc.stdout
    assert f"could not remove worktree {worktree}" in proc.stdout
    assert "registry rows and logs kept" in proc.stdout
    assert "forgot" not in proc.stdout
    assert run_cli(["status"], repo.root).returncode == 0 and log_dir.is_dir()
    assert worktree.is_dir() and task["branch"] in repo.branches()

    dot_git.write_text(link)
    again = run_cli(["cleanup", "--force"], repo.root)
    assert again.returncode == 0, again.stdout
    assert "forgot" in again.stdout and not log_dir.exists()


def test_two_cleanups_at_once_do_each_removal_once(repo: Repo) -> None:
    names = [f"empty{n}" for n in range(8)]
    for name in names:
        repo.shell_prompt(f"{name}.md", "true")
    repo.commit()
    tasks = _tasks(_run(repo, *names))
    both = [start_cli(["cleanup"], repo.root) for _ in range(2)]
    outputs = []
    for proc in both:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, out + err
        outputs.append(out)
    said = "".join(outputs)
    assert "could not" not in said
    for task in tasks.values():
        assert said.count(f"deleted branch {task['branch']}\n") == 1
    assert said.count("forgot ") == 1
    assert repo.branches() == []


def test_a_running_orchestration_is_never_touched(repo: Repo, tmp_path: Path) -> None:
    go = tmp_path / "go"
    repo.shell_prompt("done.md", "true")
    repo.shell_prompt(
        "waiting.md",
        f"echo w > w.txt\nfor _ in $(seq 600); do [ -e {go} ] && break; sleep 0.1; done",
    )
    repo.commit()
    finished = _tasks(_run(repo, "done"))["done"]
    run = start_cli(["run", "--agent", "shell", "--json", "waiting"], repo.root)
    try:
        deadline = time.monotonic() + 120  # the run may first wait for the load to fall
        worktrees = repo.root / ".worktrees"
        while not list(worktrees.glob("*waiting*/w.txt")) and time.monotonic() < deadline:
            time.sleep(0.1)
        (started,) = worktrees.glob("*waiting*")
        proc = run_cli(["cleanup", "--force"], repo.root)
        assert proc.returncode == 0, proc.stderr
        assert f"deleted branch {finished['branch']}" in proc.stdout
        assert started.is_dir() and (started / "w.txt").exists()
        assert len(repo.branches()) == 1
    finally:
        go.touch()
        out, _ = run.communicate(timeout=120)
    assert json.loads(out)["tasks"][0]["status"] == "completed"


def _plan(repo: Repo, force: bool = False) -> tuple[Registry, CleanupPlan]:
    registry = Registry.existing(repo.root / ".gadugi" / "state.db")
    return registry, plan_cleanup(repo.root, registry, 0.0, force)


def test_apply_keeps_what_changed_after_the_plan_was_made(repo: Repo) -> None:
    repo.shell_prompt("broken.md", "exit 1")
    repo.shell_prompt("empty.md", "true")
    repo.commit()
    result = _run(repo, "broken", "empty")
    tasks = _tasks(result)
    registry, plan = _plan(repo)
    try:
        assert [a.kind for a in plan.actions].count(ActionKind.FORGET) == 1
        # Meanwhile someone writes into the worktree and commits onto the other branch.
        (Path(tasks["broken"]["worktree"]) / "new.txt").write_text("work\n")
        branch = tasks["empty"]["branch"]
        tree = git(repo.root, "rev-parse", f"{branch}^{{tree}}").strip()
        moved = git(repo.root, "commit-tree", "-p", branch, "-m", "late", tree).strip()
        git(repo.root, "update-ref", f"refs/heads/{branch}", moved)
        done = apply(repo.root, registry, plan, repo.root / ".gadugi")
    finally:
        registry.close()
    assert any(
        line.startswith(f"could not remove worktree {tasks['broken']['worktree']}") for line in done
    )
    assert any(line.startswith(f"could not delete branch {branch}") for line in done)
    assert _tip(repo, branch) == moved
    assert (Path(tasks["broken"]["worktree"]) / "new.txt").exists()
    assert not any(line.startswith("forgot") for line in done)
    assert (
        run_cli(["status", "--orchestration", result["orchestration_id"]], repo.root).returncode
        == 0
    )


def test_apply_takes_a_worktree_that_vanished_meanwhile_as_removed(repo: Repo) -> None:
    task = _failed_task_with_a_worktree(repo, "true")
    registry, plan = _plan(repo)
    try:
        shutil.rmtree(task["worktree"])
        git(repo.root, "worktree", "prune")
        done = apply(repo.root, registry, plan, repo.root / ".gadugi")
    finally:
        registry.close()
    assert not any(line.startswith("could not") for line in done), done
    assert any(line.startswith("forgot") for line in done) and repo.branches() == []


def test_apply_leaves_an_orchestration_that_was_taken_over_meanwhile(repo: Repo) -> None:
    task = _failed_task_with_a_worktree(repo, "true")
    orch_id = Path(task["log_file"]).parent.name
    registry, plan = _plan(repo, force=True)
    try:
        registry.take_over(orch_id, os.getpid(), None)  # as `gadugi retry` does
        done = apply(repo.root, registry, plan, repo.root / ".gadugi")
    finally:
        registry.close()
    assert done == [f"skipped {orch_id}: it is running again"]
    assert Path(task["worktree"]).is_dir() and repo.branches() == [task["branch"]]


def test_an_orphaned_record_whose_head_holds_commits_is_pruned_only_with_force(
    repo: Repo,
) -> None:
    repo.shell_prompt("quick.md", "true")
    repo.commit()
    _run(repo, "quick")
    other = repo.root.parent / "scratch"
    git(repo.root, "worktree", "add", "-q", "--detach", str(other))
    git(other, "commit", "-q", "--allow-empty", "-m", "only here")
    shutil.rmtree(other)  # the record still names the commit; a prune would drop it

    proc = run_cli(["cleanup"], repo.root)
    assert proc.returncode == 0, proc.stderr
    assert f"orphaned worktree record: {other}" in proc.stdout
    assert f"kept {other}: its HEAD holds 1 commit(s)" in proc.stdout
    assert str(other) in repo.worktrees()

    forced = run_cli(["cleanup", "--force"], repo.root)
    assert f"pruned orphaned worktree record {other}" in forced.stdout
    assert repo.worktrees() == [str(repo.root)]


def test_an_orchestration_another_process_owns_is_skipped(repo: Repo) -> None:
    """A finished orchestration that a retry (or resume) is just taking over is left alone:
    cleanup claims each orchestration's lease before it removes anything of it."""
    from gadugi import lease

    repo.shell_prompt("a.md", "echo a > a.txt\ngit add a.txt\ngit commit -qm a")
    repo.commit()
    task = _tasks(_run(repo, "a"))["a"]
    reg = Registry(repo.root / ".gadugi/state.db", readonly=True)
    orch_id = reg.orchestration()["id"]
    reg.close()
    with lease.claim(repo.root / ".gadugi", orch_id):
        proc = run_cli(["cleanup", "--force"], repo.root)
    assert proc.returncode == 0, proc.stderr
    assert f"skipped {orch_id}: another gadugi process owns it" in proc.stdout
    assert repo.branches() == [task["branch"]]
    done = run_cli(["cleanup", "--force"], repo.root)
    assert f"deleted branch {task['branch']}" in done.stdout and repo.branches() == []


def test_a_custom_monitoring_dir_is_excluded_and_cleaned_up(repo: Repo) -> None:
    (repo.root / "gadugi.toml").write_text('monitoring_dir = "watch/gadugi"\n')
    repo.shell_prompt("merged.md", "echo m > m.txt\ngit add m.txt\ngit commit -qm m")
    repo.commit()
    result = _run(repo, "merged")
    orch_id = result["orchestration_id"]
    folder = repo.root / "watch/gadugi"
    assert (folder / f"{orch_id}_final.json").exists()
    assert git(repo.root, "status", "--porcelain") == ""  # excluded, like .gadugi/ itself
    assert "/watch/gadugi/" in (repo.root / ".git/info/exclude").read_text().split()
    git(repo.root, "merge", "-q", "--no-edit", result["tasks"][0]["branch"])
    proc = run_cli(["cleanup"], repo.root)
    assert proc.returncode == 0, proc.stderr
    assert not (folder / f"{orch_id}_final.json").exists()
    assert not (folder / f"{orch_id}_status.json").exists()
