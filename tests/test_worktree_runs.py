"""Worktrees through real ``gadugi run`` and ``resume``: failed creates, crashes mid-create,
and agents that commit off their task branch."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from conftest import Repo, git, run_cli, run_then_kill_9

COMMIT = "echo {name} > {name}.txt\ngit add {name}.txt\ngit commit -qm {name}\n"


def _hook(repo: Repo, body: str) -> Path:
    hook = repo.root / ".git/hooks/post-checkout"
    hook.write_text(f"#!/bin/sh\n{body}")
    hook.chmod(0o755)
    return hook


def _run(repo: Repo, *args: str) -> dict[str, Any]:
    done = run_cli(["run", "--agent", "shell", "--json", *args], repo.root)
    assert done.stdout, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def _gadugi_admin_dirs(repo: Repo) -> list[str]:
    admin = repo.root / ".git/worktrees"
    return sorted(p.name for p in admin.iterdir()) if admin.exists() else []


def test_a_failing_post_checkout_hook_fails_the_task_and_leaves_nothing(
    repo: Repo, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger"
    hook = _hook(repo, "echo 'git-lfs was not found on your path' >&2\nexit 2\n")
    repo.shell_prompt("t.md", f"echo ran >> {ledger}")
    repo.commit()
    done = run_cli(["run", "--agent", "shell", "t"], repo.root)
    assert "no worktree was made" in done.stdout and "worktree removed" not in done.stdout
    (task,) = repo.final()["tasks"]
    assert task["status"] == "failed"
    assert "post-checkout hook" in task["error_message"] and str(hook) in task["error_message"]
    assert "git-lfs was not found" in task["error_message"]
    assert task["worktree"] is None and task["branch"] is None and task["attempts"] == 0
    assert not ledger.exists()  # the agent never ran
    assert repo.branches() == []  # one failure, not a hundred names tried
    assert repo.worktrees() == [str(repo.root)]
    assert not (repo.root / ".worktrees").exists() or not any((repo.root / ".worktrees").iterdir())
    assert _gadugi_admin_dirs(repo) == []


@pytest.mark.slow
def test_kill_9_while_git_runs_the_hook_then_resume_adopts_the_worktree(
    repo: Repo, tmp_path: Path
) -> None:
    marker, gate = tmp_path / "in-hook", tmp_path / "gate"
    # gadugi dies while git waits for its hook; git and the hook live on and finish.
    _hook(
        repo,
        f"touch {marker}\n"
        f"for i in $(seq 1200); do [ -e {gate} ] && exit 0; sleep 0.05; done\nexit 1\n",
    )
    repo.shell_prompt("t.md", COMMIT.format(name="t"))
    repo.commit()
    orch_id = run_then_kill_9(repo, marker, "t")
    gate.touch()
    resumed = run_cli(["resume", "--json"], repo.root)
    assert resumed.returncode == 0, resumed.stderr
    (task,) = json.loads(resumed.stdout)["tasks"]
    suffix = orch_id.rsplit("-", 1)[-1]
    assert task["status"] == "completed" and task["commits"] == 1
    assert task["branch"] == f"gadugi/t-{suffix}"
    assert repo.branches() == [f"gadugi/t-{suffix}"]  # the recorded name, no "-2"
    assert repo.worktrees() == [str(repo.root)]
    assert _gadugi_admin_dirs(repo) == []


# A smudge filter that, during a worktree's checkout, names the git processes running it
# and waits for a gate: the test then kills them as a crash of the machine's processes would.
BLOCKING_FILTER = """#!/bin/sh
gate={gate}
if [ ! -e $gate ]; then
    parent=$PPID
    grandparent=$(awk '{{print $4}}' /proc/$parent/stat)
    echo "$$ $parent $grandparent" > {pids}.tmp && mv {pids}.tmp {pids}
    for i in $(seq 1200); do [ -e $gate ] && break; sleep 0.05; done
fi
exec cat
"""


@pytest.mark.slow
def test_git_killed_mid_checkout_then_resume_remakes_the_worktree_under_its_name(
    repo: Repo, tmp_path: Path
) -> None:
    gate, pids = tmp_path / "gate", tmp_path / "pids"
    script = tmp_path / "filter.sh"
    script.write_text(BLOCKING_FILTER.format(gate=gate, pids=pids))
    script.chmod(0o755)
    (repo.root / ".gitattributes").write_text("k.bin filter=blocking\n")
    for name in ("a.txt", "k.bin", "z.txt"):
        (repo.root / name).write_text(f"{name}\n")
    repo.shell_prompt("t.md", "test -s k.bin && test -s z.txt\n" + COMMIT.format(name="t"))
    repo.commit()
    git(repo.root, "config", "filter.blocking.smudge", str(script))
    git(repo.root, "config", "filter.blocking.clean", "cat")

    orch_id = run_then_kill_9(repo, pids, "t")
    # `git worktree add` first: killed after its checkout, it would clean up after itself.
    for pid in reversed([int(p) for p in pids.read_text().split()]):
        os.kill(pid, signal.SIGKILL)
    suffix = orch_id.rsplit("-", 1)[-1]
    half_made = repo.root / f".worktrees/t-{suffix}"
    assert (half_made / "a.txt").exists() and not (half_made / "z.txt").exists()
    gate.touch()

    resumed = run_cli(["resume", "--json"], repo.root)
    assert resumed.returncode == 0, resumed.stderr
    (task,) = json.loads(resumed.stdout)["tasks"]
    assert task["status"] == "completed" and task["commits"] == 1, task
    assert repo.branches() == [f"gadugi/t-{suffix}"]
    assert repo.worktrees() == [str(repo.root)]
    assert _gadugi_admin_dirs(repo) == []


def test_commits_on_a_detached_head_land_on_the_task_branch(repo: Repo) -> None:
    repo.shell_prompt("t.md", "git checkout -q --detach\n" + COMMIT.format(name="t"))
    repo.commit()
    (task,) = _run(repo, "t")["tasks"]
    assert task["status"] == "completed"
    assert task["commits"] == 1
    assert git(repo.root, "show", f"{task['branch']}:t.txt") == "t\n"
    assert "fast-forwarded" in task["error_message"]
    assert task["worktree"] is None  # everything is on the branch, so the worktree goes


def test_a_head_off_the_task_branch_is_kept_and_reported(repo: Repo) -> None:
    repo.shell_prompt(
        "t.md",
        COMMIT.format(name="one") + "git checkout -q --detach HEAD~1\n" + COMMIT.format(name="two"),
    )
    repo.commit()
    (task,) = _run(repo, "t")["tasks"]
    kept = f"refs/gadugi/kept/{Path(task['worktree']).name}"
    assert task["status"] == "completed" and task["commits"] == 1
    assert kept in task["error_message"] and "worktree kept" in task["error_message"]
    assert Path(task["worktree"]).is_dir()
    assert git(repo.root, "show", f"{kept}:two.txt") == "two\n"
    assert git(repo.root, "show", f"{task['branch']}:one.txt") == "one\n"


def test_retry_force_of_a_completed_task_goes_on_from_its_own_branch(repo: Repo) -> None:
    repo.shell_prompt("a.md", "echo $RANDOM >> a.txt\ngit add a.txt\ngit commit -qm a")
    repo.commit()
    first = run_cli(["run", "--agent", "shell", "--json", "a"], repo.root)
    assert first.returncode == 0, first.stderr
    branch = json.loads(first.stdout)["tasks"][0]["branch"]
    refused = run_cli(["retry", "a"], repo.root)
    assert refused.returncode == 2 and "--force" in refused.stderr
    again = run_cli(["retry", "--force", "--json", "a"], repo.root)
    assert again.returncode == 0, again.stderr
    task = json.loads(again.stdout)["tasks"][0]
    # The same branch gained the second attempt's commit on top of the first one's.
    assert task["branch"] == branch and task["commits"] == 2 and task["attempts"] == 2
    assert repo.branches() == [branch]
    assert repo.worktrees() == [str(repo.root)]  # removed again: all of it is committed
