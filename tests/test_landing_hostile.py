"""`gadugi land` against a hostile user and a hostile machine: what is in its way is refused
with a clear message, and nothing of the user's is touched or lost."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from conftest import Repo, git, kill_9_once, run_cli, wait_until
from test_land import (
    by_task,
    land_cli,
    merges,
    run_tasks,
    start_land,
    two_tasks,
    user_repo,
)

__all__ = ["user_repo"]  # the fixture, imported for the tests here


def land_worktree(repo: Repo, orch_id: str) -> Path:
    return repo.root / ".worktrees" / f"land-{orch_id.rsplit('-', 1)[-1]}"


@pytest.mark.parametrize("what", ["a plain folder", "a worktree without its .git"])
def test_a_folder_in_place_of_the_integration_worktree_is_never_checked_out(
    user_repo: Repo, what: str
) -> None:
    two_tasks(user_repo)
    run = run_tasks(user_repo, "low", "high")
    in_the_way = land_worktree(user_repo, run["orchestration_id"])
    # Either way git run there would find the main checkout around it.
    if what == "a plain folder":
        in_the_way.mkdir()
    else:
        git(user_repo.root, "worktree", "add", "-q", "--detach", str(in_the_way), "main")
        (in_the_way / ".git").unlink()
    (user_repo.root / "README.md").write_text("precious\n")
    head = git(user_repo.root, "symbolic-ref", "HEAD")

    done = land_cli(user_repo, "--verify", "true")

    assert done.returncode == 1
    assert f"{in_the_way} is in the way" in done.stderr
    assert "Traceback" not in done.stderr
    # The main checkout is as it was: its branch, and the change not yet committed.
    assert git(user_repo.root, "symbolic-ref", "HEAD") == head
    assert (user_repo.root / "README.md").read_text() == "precious\n"
    assert merges(user_repo, f"gadugi/land/{run['orchestration_id']}") == []


def test_a_file_or_a_symlink_in_place_of_the_integration_worktree(user_repo: Repo) -> None:
    two_tasks(user_repo)
    run = run_tasks(user_repo, "low", "high")
    path = land_worktree(user_repo, run["orchestration_id"])
    for make in (os.mkfifo, lambda p: p.symlink_to(user_repo.root)):
        make(path)
        done = land_cli(user_repo, "--verify", "true")
        assert done.returncode == 1, done.stderr
        assert f"{path} is in the way" in done.stderr
        assert "Traceback" not in done.stderr
        path.unlink()
    # Out of the way, it lands.
    assert land_cli(user_repo, "--verify", "true").returncode == 0


def test_an_integration_worktree_deleted_by_hand_is_made_again(user_repo: Repo) -> None:
    two_tasks(user_repo)
    run = run_tasks(user_repo, "low", "high")
    path = land_worktree(user_repo, run["orchestration_id"])
    git(user_repo.root, "worktree", "add", "-q", "--detach", str(path), "main")
    shutil.rmtree(path)  # gone, while git still has it registered

    done = land_cli(user_repo, "--verify", "true", "--json")

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["landing"]["landed"] == 2


def test_a_state_folder_that_cannot_hold_logs_is_refused_before_anything(
    user_repo: Repo,
) -> None:
    two_tasks(user_repo)
    run = run_tasks(user_repo, "low", "high")
    logs = user_repo.root / ".gadugi" / "logs"
    logs.rename(user_repo.root / "logs.aside")
    os.mkfifo(logs)
    refs = git(user_repo.root, "for-each-ref")

    done = land_cli(user_repo, "--verify", "true")

    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert ".gadugi/logs is not a directory" in done.stderr
    assert git(user_repo.root, "for-each-ref") == refs
    status = json.loads(run_cli(["status", "--json"], user_repo.root).stdout)
    assert status["orchestration_id"] == run["orchestration_id"]
    assert status["state"] == "finished"  # not taken over, and not left "running"


def test_a_log_folder_replaced_mid_landing_stops_it_with_a_message(user_repo: Repo) -> None:
    two_tasks(user_repo)
    run = run_tasks(user_repo, "low", "high")
    # The first verification puts a FIFO where the next one's log would go.
    verify = (
        'logs="$GADUGI_PROJECT_ROOT/.gadugi/logs/$GADUGI_ORCHESTRATION_ID"; '
        '[ -p "$logs" ] || { mv "$logs" "$GADUGI_PROJECT_ROOT/logs.aside"; mkfifo "$logs"; }'
    )

    done = land_cli(user_repo, "--verify", verify, "--json")

    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert "landing stopped: cannot start the verification of low" in done.stderr
    result = json.loads(done.stdout)
    assert by_task(result)["high"]["landing"]["status"] == "landed"
    assert len(merges(user_repo, f"gadugi/land/{run['orchestration_id']}")) == 1


def test_more_bad_requests_exit_2_and_change_nothing(user_repo: Repo, tmp_path: Path) -> None:
    remote = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", str(remote))
    git(user_repo.root, "remote", "add", "origin", str(remote))
    no_gh = tmp_path / "no-gh"
    no_gh.mkdir()
    for tool in ("git", "bash"):
        found = shutil.which(tool)
        assert found
        (no_gh / tool).symlink_to(found)
    two_tasks(user_repo)
    run_tasks(user_repo, "low", "high")
    refs = git(user_repo.root, "for-each-ref")
    for args, env, says in [
        ([""], {}, "no orchestration id given"),  # "$ORCH" unset: not the newest one
        (["--verify", ""], {}, "--verify needs a shell command"),
        (["--verify", "  "], {}, "--verify needs a shell command"),
        (["--verify", "x" * 10_001], {}, "--verify needs a shell command"),
        (["--push", "origin", "--pr"], {"PATH": str(no_gh)}, "--pr needs gh"),
    ]:
        done = land_cli(user_repo, *args, env=env)
        assert done.returncode == 2, (args, done.stderr)
        assert says in done.stderr, (args, done.stderr)
        assert "Traceback" not in done.stderr
    assert git(user_repo.root, "for-each-ref") == refs
    assert git(remote, "for-each-ref") == ""


def test_an_orchestration_with_nothing_completed_has_nothing_to_land(user_repo: Repo) -> None:
    user_repo.shell_prompt("broken.md", "exit 3")
    user_repo.commit()
    failed = run_cli(["run", "--agent", "shell", "--quiet", "--json", "broken"], user_repo.root)
    assert failed.returncode == 1
    orch_id = json.loads(failed.stdout)["orchestration_id"]
    refs = git(user_repo.root, "for-each-ref")

    for args in ([], [orch_id], ["--into", "main"]):
        done = land_cli(user_repo, *args)
        assert done.returncode == 2, (args, done.stderr)
        assert f"nothing to land: no task of {orch_id} completed (broken: failed)" in done.stderr
    assert git(user_repo.root, "for-each-ref") == refs  # no empty integration branch


def test_a_verification_that_floods_its_output_leaves_a_short_note(user_repo: Repo) -> None:
    two_tasks(user_repo)
    run_tasks(user_repo, "low", "high")
    flood = "head -c 5000000 /dev/zero | tr '\\0' x; echo; echo the last words; exit 1"

    done = land_cli(user_repo, "--verify", flood, "--json")

    assert done.returncode == 1
    tasks = by_task(json.loads(done.stdout))
    for task in tasks.values():
        note = task["landing"]["note"]
        assert task["landing"]["status"] == "needs_person"
        assert "the last words" in note and len(note) < 5000
    assert len(done.stdout) + len(done.stderr) < 50_000
    assert (user_repo.root / ".gadugi/state.db").stat().st_size < 1_000_000


def test_cleanup_keeps_a_candidate_that_holds_the_only_copy_of_a_task(user_repo: Repo) -> None:
    two_tasks(user_repo)
    run = run_tasks(user_repo, "low", "high")
    orch_id = run["orchestration_id"]
    assert land_cli(user_repo, "--verify", "test ! -e low.txt").returncode == 1
    low = by_task(run)["low"]["branch"]
    work = git(user_repo.root, "rev-parse", low).strip()
    git(user_repo.root, "branch", "-D", low)  # its red candidate is all that holds it now
    git(user_repo.root, "reflog", "expire", "--expire=now", "--all")

    done = run_cli(["cleanup"], user_repo.root)

    assert done.returncode == 0, done.stderr
    kept = git(user_repo.root, "for-each-ref", "--format=%(refname)", f"refs/gadugi/land/{orch_id}")
    assert kept.split() == [f"refs/gadugi/land/{orch_id}/low.1"]
    assert f"refs/gadugi/land/{orch_id}/low.1: " in done.stdout
    reachable = git(user_repo.root, "rev-list", "--all").split()
    assert work in reachable

    forced = run_cli(["cleanup", "--force"], user_repo.root)
    assert forced.returncode == 0, forced.stderr
    assert git(user_repo.root, "for-each-ref", f"refs/gadugi/land/{orch_id}") == ""


def test_cleanup_deletes_the_candidates_of_a_rebuilt_queue(user_repo: Repo, tmp_path: Path) -> None:
    git(user_repo.root, "branch", "release")
    two_tasks(user_repo)
    run = run_tasks(user_repo, "low", "high")
    orch_id = run["orchestration_id"]
    flag = tmp_path / "moved"
    hotfix = (
        f'if [ ! -e {flag} ]; then touch {flag}; r="$GADUGI_PROJECT_ROOT"; '
        'c=$(git -C "$r" commit-tree -p release -m hotfix "release^{tree}"); '
        'git -C "$r" update-ref refs/heads/release "$c"; fi'
    )
    assert land_cli(user_repo, "--into", "release", "--verify", hotfix).returncode == 0
    kept = git(user_repo.root, "for-each-ref", f"refs/gadugi/land/{orch_id}/").splitlines()
    assert any("/rebuilt.1" in line for line in kept) and len(kept) > 3

    done = run_cli(["cleanup"], user_repo.root)

    assert done.returncode == 0, done.stderr
    # Only gadugi's own merges were left to them: every task commit is on release.
    assert git(user_repo.root, "for-each-ref", f"refs/gadugi/land/{orch_id}/") == ""
    assert user_repo.branches() == []


def start_rebase(where: Path) -> None:
    """A rebase of the branch checked out at ``where``, stopped half-way (an exec failed)."""
    stopped = subprocess.run(
        ["git", "rebase", "-q", "--exec", "false", "HEAD~1"],
        cwd=where,
        capture_output=True,
        text=True,
        check=False,
    )
    assert stopped.returncode != 0
    assert git(where, "rev-parse", "--git-path", "rebase-merge").strip()


@pytest.mark.parametrize("what", ["rebase", "merge"])
def test_into_a_branch_in_the_middle_of_a_rebase_or_merge_is_refused(
    user_repo: Repo, what: str
) -> None:
    two_tasks(user_repo)
    run_tasks(user_repo, "low", "high")
    if what == "rebase":
        start_rebase(user_repo.root)  # main, rebased: HEAD is detached meanwhile
    else:
        # Nothing to commit, so the checkout looks clean; MERGE_HEAD says otherwise.
        side = git(user_repo.root, "commit-tree", "-p", "HEAD~1", "-m", "side", "HEAD~1^{tree}")
        git(user_repo.root, "merge", "-q", "--no-commit", "-s", "ours", side.strip())
        assert git(user_repo.root, "status", "--porcelain", "--untracked-files=no") == ""
    refs = git(user_repo.root, "for-each-ref")

    done = land_cli(user_repo, "--into", "main")

    assert done.returncode == 2
    assert f"a {what} of main is under way in {user_repo.root}" in done.stderr
    assert git(user_repo.root, "for-each-ref") == refs


def test_into_a_branch_whose_rebase_starts_while_landing_is_left_alone(
    user_repo: Repo, tmp_path: Path
) -> None:
    git(user_repo.root, "branch", "release")
    two_tasks(user_repo)
    run_tasks(user_repo, "low", "high")
    other = tmp_path / "other"
    git(user_repo.root, "worktree", "add", "-q", str(other), "release")
    flag = tmp_path / "started"
    # The last verification starts a rebase of release in its own worktree.
    verify = (
        f'[ "$GADUGI_LAND_TASK_ID" != low ] || [ -e {flag} ] || {{ touch {flag}; '
        f"cd {other} && git rebase -q --exec false HEAD~1; true; }}"
    )
    release = git(user_repo.root, "rev-parse", "release")

    done = land_cli(user_repo, "--into", "release", "--verify", verify)

    assert done.returncode == 1
    assert f"a rebase of release is under way in {other}" in done.stderr
    assert git(user_repo.root, "rev-parse", "release") == release
    # The person's rebase finishes as if gadugi had never been there.
    git(other, "rebase", "--abort")
    assert git(other, "rev-parse", "HEAD") == release


def test_a_task_branch_moved_back_by_hand_is_not_reported_landed(user_repo: Repo) -> None:
    two_tasks(user_repo)
    run = run_tasks(user_repo, "low", "high")
    high = by_task(run)["high"]["branch"]
    work = git(user_repo.root, "rev-parse", high).strip()
    git(user_repo.root, "branch", "-f", high, "main")  # none of the task's commit is on it

    done = land_cli(user_repo, "--json")

    assert done.returncode == 1
    landing = by_task(json.loads(done.stdout))["high"]["landing"]
    assert landing["status"] == "needs_person"
    assert f"its branch {high} was moved back" in landing["note"]
    branch = f"gadugi/land/{run['orchestration_id']}"
    assert [m.split("|")[0] for m in merges(user_repo, branch)] == ["Land low: low"]

    git(user_repo.root, "branch", "-f", high, work)  # put back: its turn comes again
    again = land_cli(user_repo, "--json")
    assert again.returncode == 0, again.stderr
    assert by_task(json.loads(again.stdout))["high"]["landing"]["status"] == "landed"
    assert git(user_repo.root, "show", f"{branch}:high.txt") == "high\n"


@pytest.mark.parametrize("ignored", [False, True])
def test_into_a_checkout_whose_untracked_files_are_in_the_way(
    user_repo: Repo, ignored: bool
) -> None:
    two_tasks(user_repo)
    run_tasks(user_repo, "low", "high")
    if ignored:  # git itself would overwrite an ignored file without a word
        with (user_repo.root / ".git/info/exclude").open("a") as exclude:
            exclude.write("high.txt\n")
    (user_repo.root / "notes.txt").write_text("mine\n")  # untracked, in nobody's way
    (user_repo.root / "high.txt").write_text("mine too\n")  # untracked, and a task adds it
    main = git(user_repo.root, "rev-parse", "main")

    done = land_cli(user_repo, "--into", "main")

    assert done.returncode == 1
    said = [line for line in done.stderr.splitlines() if "high.txt" in line]
    assert said == [
        f"gadugi: main was left as it is: untracked or ignored files in {user_repo.root} would be "
        "overwritten (high.txt); move them aside, then run gadugi land again"
    ]
    assert git(user_repo.root, "rev-parse", "main") == main
    assert (user_repo.root / "high.txt").read_text() == "mine too\n"

    (user_repo.root / "high.txt").unlink()
    again = land_cli(user_repo, "--into", "main")
    assert again.returncode == 0, again.stderr
    assert (user_repo.root / "high.txt").read_text() == "high\n"
    assert (user_repo.root / "notes.txt").read_text() == "mine\n"


def test_an_integration_branch_that_keeps_moving_ends_the_landing(user_repo: Repo) -> None:
    two_tasks(user_repo)
    run = run_tasks(user_repo, "low", "high")
    orch_id = run["orchestration_id"]
    # Every verification moves the integration branch on, so no merge can ever be applied.
    verify = (
        "r=$GADUGI_PROJECT_ROOT; b=refs/heads/gadugi/land/$GADUGI_ORCHESTRATION_ID; "
        'c=$(git -C "$r" commit-tree -p $b -m moved "$b^{tree}"); git -C "$r" update-ref $b $c'
    )

    done = land_cli(user_repo, "--verify", verify)

    assert done.returncode == 1
    assert f"landing stopped: gadugi/land/{orch_id} moved under 3 merges in a row" in done.stderr
    kept = git(user_repo.root, "for-each-ref", f"refs/gadugi/land/{orch_id}/").splitlines()
    assert len(kept) == 3


def test_the_into_branch_deleted_while_landing(user_repo: Repo) -> None:
    git(user_repo.root, "branch", "release")
    two_tasks(user_repo)
    run = run_tasks(user_repo, "low", "high")
    branch = f"gadugi/land/{run['orchestration_id']}"
    verify = 'git -C "$GADUGI_PROJECT_ROOT" branch -q -D release 2>/dev/null; true'

    done = land_cli(user_repo, "--into", "release", "--verify", verify)

    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert f"landing stopped: release was deleted while landing; {branch} holds" in done.stderr
    assert len(merges(user_repo, branch)) == 2  # the landed work is all there
    assert "release" not in git(user_repo.root, "branch", "--format=%(refname:short)").split()


def test_an_into_branch_that_keeps_moving_ends_the_landing(user_repo: Repo) -> None:
    git(user_repo.root, "branch", "release")
    two_tasks(user_repo)
    run = run_tasks(user_repo, "low", "high")
    # Every verification puts a hotfix on release: each queue is out of date when done.
    verify = (
        'r="$GADUGI_PROJECT_ROOT"; c=$(git -C "$r" commit-tree -p release -m hotfix '
        '"release^{tree}"); git -C "$r" update-ref refs/heads/release "$c"'
    )

    done = land_cli(user_repo, "--into", "release", "--verify", verify)

    assert done.returncode == 1
    assert "landing stopped: release moved under 3 queues in a row" in done.stderr
    kept = git(user_repo.root, "for-each-ref", f"refs/gadugi/land/{run['orchestration_id']}/")
    assert sum("/rebuilt." in line for line in kept.splitlines()) == 2


def test_a_commit_a_verification_made_in_the_integration_worktree_stays(
    user_repo: Repo,
) -> None:
    two_tasks(user_repo)
    run_tasks(user_repo, "low", "high")
    verify = 'git commit -q --allow-empty -m "by verify $GADUGI_LAND_TASK_ID"'

    done = land_cli(user_repo, "--verify", verify)

    assert done.returncode == 0, done.stderr
    made = git(user_repo.root, "log", "--all", "--format=%s").splitlines()
    assert sorted(s for s in made if s.startswith("by verify")) == [
        "by verify high",
        "by verify low",
    ]


def test_cleanup_after_a_killed_landing_then_land_again_loses_nothing(
    user_repo: Repo, tmp_path: Path
) -> None:
    two_tasks(user_repo)
    run = run_tasks(user_repo, "low", "high")
    orch_id = run["orchestration_id"]
    tips = {
        t["task_id"]: git(user_repo.root, "rev-parse", t["branch"]).strip() for t in run["tasks"]
    }
    pids = tmp_path / "pids"
    verify = f"echo $$ >> {pids}; touch {tmp_path}/started; sleep 600"
    kill_9_once(start_land(user_repo, "--verify", verify), tmp_path / "started")
    os.kill(int(pids.read_text().split()[0]), signal.SIGKILL)  # the verification it left
    resumed = run_cli(["resume", orch_id], user_repo.root)
    assert resumed.returncode == 1  # finished, but not landed
    assert f"landing pending: gadugi land {orch_id} lands it" in resumed.stdout
    assert "None" not in resumed.stdout
    assert land_worktree(user_repo, orch_id).exists()  # left behind, at a candidate

    cleaned = run_cli(["cleanup"], user_repo.root)
    assert cleaned.returncode == 0, cleaned.stderr
    # The integration worktree is the orchestration's: it goes, and with it nothing of
    # the tasks' work (their branches stay, as no other ref holds their commits).
    assert not land_worktree(user_repo, orch_id).exists(), cleaned.stdout
    assert set(tips.values()) <= set(git(user_repo.root, "rev-list", "--all").split())
    again = land_cli(user_repo, orch_id)

    assert "Traceback" not in again.stderr
    reachable = set(git(user_repo.root, "rev-list", "--all").split())
    assert set(tips.values()) <= reachable, (cleaned.stdout, again.stdout)
    assert not land_worktree(user_repo, orch_id).exists()


def test_two_landers_at_once_one_owns_it_and_merges_once(user_repo: Repo, tmp_path: Path) -> None:
    two_tasks(user_repo)
    run = run_tasks(user_repo, "low", "high")
    gate = tmp_path / "gate"
    verify = f"touch {tmp_path}/started; while [ ! -e {gate} ]; do sleep 0.05; done"
    first = start_land(user_repo, "--verify", verify)
    try:
        wait_until(lambda: (tmp_path / "started").exists() or first.poll() is not None)
        second = land_cli(user_repo, "--verify", verify)
        gate.touch()
        first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
            first.communicate()
    assert second.returncode == 2
    assert f"orchestration {run['orchestration_id']} is owned by gadugi pid" in second.stderr
    assert first.returncode == 0
    branch = f"gadugi/land/{run['orchestration_id']}"
    assert [m.split("|")[0] for m in merges(user_repo, branch)] == [
        "Land high: high",
        "Land low: low",
    ]


def test_a_branch_in_the_way_of_the_integration_branch(user_repo: Repo) -> None:
    two_tasks(user_repo)
    run_tasks(user_repo, "low", "high")
    git(user_repo.root, "branch", "gadugi/land")  # git cannot then make gadugi/land/<orch>
    refs = git(user_repo.root, "for-each-ref")

    for args in (["land"], ["run", "--agent", "shell", "--land", "low"]):
        done = run_cli(args, user_repo.root)
        assert done.returncode == 2, (args, done.stderr)
        assert "a branch gadugi/land is in the way of the integration branch" in done.stderr
        assert git(user_repo.root, "for-each-ref") == refs


@pytest.mark.parametrize(
    "setting",
    [
        "land_retries = nan",
        "land_retries = inf",
        "land_retries = -1",
        "land_retries = 1e308",
        'land_retries = "abc"',
        "land_retries = true",
        "verify_timeout_minutes = nan",
        "verify_timeout_minutes = inf",
        "verify_timeout_minutes = -1",
        "verify_timeout_minutes = 1e308",
        'verify_timeout_minutes = "abc"',
        "verify_timeout_minutes = true",
    ],
)
def test_an_invalid_project_configuration_is_refused_by_land(user_repo: Repo, setting: str) -> None:
    two_tasks(user_repo)
    run_tasks(user_repo, "low", "high")
    (user_repo.root / "gadugi.toml").write_text(f"max_load_per_cpu = 0\n{setting}\n")
    refs = git(user_repo.root, "for-each-ref")

    done = land_cli(user_repo)

    assert done.returncode == 2, done.stderr
    key = setting.split(" ", maxsplit=1)[0]
    assert f"invalid configuration in gadugi.toml: {key}: " in done.stderr
    assert "Traceback" not in done.stderr
    assert git(user_repo.root, "for-each-ref") == refs
