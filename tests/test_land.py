"""`gadugi land`: completed tasks merged in plan order, verified, and integrated, on real git."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from conftest import Repo, git, kill_9_once, run_cli, wait_until

# The user's identity comes from the repository's configuration here, not the environment
# the other tests give git, so the landing merges must find it themselves.
USER_ENV = {
    k: v
    for k, v in os.environ.items()
    if k not in ("GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL")
}


RUN = [sys.executable, "-m", "gadugi", "run", "--agent", "shell"]


def land_cli(repo: Repo, *args: str, env: dict[str, str] | None = None) -> Any:
    return subprocess.run(
        [sys.executable, "-m", "gadugi", "land", *args],
        cwd=repo.root,
        text=True,
        capture_output=True,
        timeout=120,
        check=False,
        env={**USER_ENV, **(env or {})},
        stdin=subprocess.DEVNULL,
    )


def start_land(repo: Repo, *args: str, env: dict[str, str] | None = None) -> Any:
    return subprocess.Popen(
        [sys.executable, "-m", "gadugi", "land", "--quiet", *args],
        cwd=repo.root,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**USER_ENV, **(env or {})},
        stdin=subprocess.DEVNULL,
    )


@contextmanager
def running(repo: Repo, *args: str) -> Iterator[Any]:
    """`gadugi run --agent shell --quiet --json ARGS` in the background, as the user;
    killed on the way out should the test end before it does."""
    run = subprocess.Popen(
        [*RUN, "--quiet", "--json", *args],
        cwd=repo.root,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=USER_ENV,
        stdin=subprocess.DEVNULL,
    )
    try:
        yield run
    finally:
        if run.poll() is None:
            run.kill()
            run.communicate()


def result_of(run: Any) -> dict[str, Any]:
    """The result a background run prints, once it has exited 0."""
    out, err = run.communicate(timeout=120)
    assert run.returncode == 0, err
    result: dict[str, Any] = json.loads(out)
    return result


def writes(path: str, text: str) -> str:
    return f"printf '%s\\n' '{text}' > {path}\ngit add {path}\ngit commit -q -m 'write {path}'"


@pytest.fixture
def user_repo(repo: Repo) -> Repo:
    git(repo.root, "config", "user.name", "Ada Lovelace")
    git(repo.root, "config", "user.email", "ada@example.invalid")
    # Other work on a shared machine must not hold these runs back (admission control).
    # Landing without re-runs unless a test asks for them (land_retries).
    (repo.root / "gadugi.toml").write_text("max_load_per_cpu = 0\nland_retries = 0\n")
    repo.commit("configuration")
    return repo


def run_tasks(repo: Repo, *prompts: str) -> dict[str, Any]:
    repo.commit()
    done = run_cli(["run", "--agent", "shell", "--quiet", "--json", *prompts], repo.root)
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def merges(repo: Repo, ref: str, base: str = "main") -> list[str]:
    """The integration branch's landing merges, oldest first, as 'subject|author'."""
    out = git(
        repo.root,
        "log",
        "--merges",
        "--first-parent",
        "--reverse",
        "--format=%s|%an <%ae>",
        f"{base}..{ref}",
    )
    return out.splitlines()


def by_task(result: dict[str, Any]) -> dict[str, Any]:
    return {t["task_id"]: t for t in result["tasks"]}


def two_tasks(repo: Repo) -> None:
    repo.shell_prompt("low.md", writes("low.txt", "low"), front="priority: 0")
    repo.shell_prompt("high.md", writes("high.txt", "high"), front="priority: 5")


def test_completed_tasks_land_in_plan_order_as_the_user(user_repo: Repo) -> None:
    two_tasks(user_repo)
    run = run_tasks(user_repo, "low", "high")
    main_before = git(user_repo.root, "rev-parse", "main")

    done = land_cli(user_repo, "--json")

    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    branch = f"gadugi/land/{run['orchestration_id']}"
    assert result["landing"] == {
        "branch": branch,
        "head": git(user_repo.root, "rev-parse", branch).strip(),
        "into": None,
        "landed": 2,
        "verified": False,
    }
    # Priority first (high before low); each merge authored and committed by the user.
    assert merges(user_repo, branch) == [
        "Land high: high|Ada Lovelace <ada@example.invalid>",
        "Land low: low|Ada Lovelace <ada@example.invalid>",
    ]
    committer = git(user_repo.root, "log", "-1", "--format=%cn <%ce>", branch).strip()
    assert committer == "Ada Lovelace <ada@example.invalid>"
    tasks = by_task(result)
    assert {t["landing"]["status"] for t in tasks.values()} == {"landed"}
    assert tasks["low"]["landing"]["commit"] == result["landing"]["head"]
    assert git(user_repo.root, "show", f"{branch}:high.txt") == "high\n"
    # No --into: the user's branch and checkout are as they were.
    assert git(user_repo.root, "rev-parse", "main") == main_before
    assert not (user_repo.root / "high.txt").exists()

    status = json.loads(run_cli(["status", "--json"], user_repo.root).stdout)
    assert {t["task_id"]: t["landing"]["status"] for t in status["tasks"]} == {
        "low": "landed",
        "high": "landed",
    }

    again = land_cli(user_repo, "--json")  # nothing new: nothing merged twice
    assert again.returncode == 0, again.stderr
    assert len(merges(user_repo, branch)) == 2


def test_a_dependency_lands_before_its_dependent(user_repo: Repo) -> None:
    user_repo.shell_prompt("base.md", writes("base.txt", "base"))
    user_repo.shell_prompt(
        "top.md", writes("top.txt", "top"), front="depends_on: [base.md]\npriority: 9"
    )
    run = run_tasks(user_repo, "top", "base")
    done = land_cli(user_repo)
    assert done.returncode == 0, done.stderr
    subjects = [
        m.split("|")[0] for m in merges(user_repo, f"gadugi/land/{run['orchestration_id']}")
    ]
    assert subjects == ["Land base: base", "Land top: top"]


def conflicting_pair(repo: Repo) -> None:
    repo.shell_prompt("one.md", writes("shared.txt", "one"))
    repo.shell_prompt("two.md", writes("shared.txt", "two"))


def test_a_conflict_needs_a_person_with_the_commands_then_lands(user_repo: Repo) -> None:
    conflicting_pair(user_repo)
    user_repo.shell_prompt("three.md", writes("three.txt", "3"), front="depends_on: [two.md]")
    run = run_tasks(user_repo, "one", "two", "three")
    orch_id = run["orchestration_id"]
    branch = f"gadugi/land/{orch_id}"

    done = land_cli(user_repo, "--json")

    assert done.returncode == 1
    tasks = by_task(json.loads(done.stdout))
    assert tasks["one"]["landing"]["status"] == "landed"
    two = tasks["two"]["landing"]
    assert two["status"] == "needs_person"
    assert "conflicts in shared.txt" in two["note"]
    shown = run_cli(["show", "two", "--json"], user_repo.root)
    assert json.loads(shown.stdout)["landing"] == two
    text = run_cli(["show", "two"], user_repo.root).stdout
    assert "landing:    needs_person (0 candidates): merging" in text
    assert f"git merge {branch}" in two["note"] and f"gadugi land {orch_id}" in two["note"]
    assert len(merges(user_repo, branch)) == 1
    assert tasks["three"]["landing"]["status"] == "needs_person"  # it holds two's work
    assert "waits for two" in tasks["three"]["landing"]["note"]

    # A person follows the commands on the task branch, then lands again.
    fix = user_repo.root.parent / "fix"
    git(user_repo.root, "worktree", "add", "-q", str(fix), by_task(run)["two"]["branch"])
    subprocess.run(["git", "merge", "-q", branch], cwd=fix, capture_output=True, check=False)
    (fix / "shared.txt").write_text("one\ntwo\n")
    git(fix, "commit", "-q", "-am", "resolve")
    again = land_cli(user_repo, "--json")
    assert again.returncode == 0, again.stderr
    landed = by_task(json.loads(again.stdout))
    assert landed["two"]["landing"]["status"] == "landed"
    assert landed["three"]["landing"]["status"] == "landed"  # its turn came with two's
    assert git(user_repo.root, "show", f"{branch}:three.txt") == "3\n"
    assert git(user_repo.root, "show", f"{branch}:shared.txt") == "one\ntwo\n"


def test_a_red_verification_never_advances_the_branch(user_repo: Repo) -> None:
    user_repo.shell_prompt("good.md", writes("good.txt", "good"))
    user_repo.shell_prompt("bad.md", writes("bad.txt", "bad"))
    run = run_tasks(user_repo, "good", "bad")
    orch_id = run["orchestration_id"]
    branch = f"gadugi/land/{orch_id}"

    done = land_cli(user_repo, "--json", "--verify", "echo checking; test ! -e bad.txt")

    assert done.returncode == 1
    result = json.loads(done.stdout)
    tasks = by_task(result)
    assert tasks["good"]["landing"]["status"] == "landed"
    bad = tasks["bad"]["landing"]
    assert bad["status"] == "needs_person" and bad["attempts"] == 1
    assert "verification `echo checking; test ! -e bad.txt` exited with code 1" in bad["note"]
    assert "checking" in bad["note"]  # the failure's tail
    assert result["landing"]["verified"] is True  # the head is the green merge of good
    head = result["landing"]["head"]
    assert git(user_repo.root, "rev-parse", branch).strip() == head
    assert "bad.txt" not in git(user_repo.root, "ls-tree", "--name-only", branch)
    # The red candidate stays reachable, and each verification has its log.
    kept = git(user_repo.root, "for-each-ref", "--format=%(refname)", f"refs/gadugi/land/{orch_id}")
    assert f"refs/gadugi/land/{orch_id}/bad.1" in kept.split()
    logs = sorted((user_repo.root / ".gadugi/logs" / orch_id).glob("land.*.verify.log"))
    assert [p.name for p in logs] == ["land.1.verify.log", "land.2.verify.log"]


def test_into_fast_forwards_a_clean_checked_out_main(user_repo: Repo) -> None:
    two_tasks(user_repo)
    run = run_tasks(user_repo, "low", "high")
    done = land_cli(user_repo, "--into", "main", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["landing"]["into"] == "main"
    assert git(user_repo.root, "rev-parse", "main").strip() == result["landing"]["head"]
    assert (user_repo.root / "high.txt").read_text() == "high\n"  # main's files hold the work
    assert git(user_repo.root, "status", "--porcelain", "--untracked-files=no") == ""
    assert run["orchestration_id"] in result["landing"]["branch"]


def test_into_refuses_a_dirty_checkout_and_changes_nothing(user_repo: Repo) -> None:
    two_tasks(user_repo)
    run_tasks(user_repo, "low", "high")
    (user_repo.root / "README.md").write_text("edited\n")
    main_before = git(user_repo.root, "rev-parse", "main")
    refs_before = git(user_repo.root, "for-each-ref")

    done = land_cli(user_repo, "--into", "main")

    assert done.returncode == 2
    assert "uncommitted changes (README.md)" in done.stderr
    assert git(user_repo.root, "rev-parse", "main") == main_before
    assert git(user_repo.root, "for-each-ref") == refs_before
    assert (user_repo.root / "README.md").read_text() == "edited\n"


def test_a_branch_that_moved_during_landing_gets_the_queue_rebuilt(
    user_repo: Repo, tmp_path: Path
) -> None:
    git(user_repo.root, "branch", "release")
    two_tasks(user_repo)
    run = run_tasks(user_repo, "low", "high")
    flag = tmp_path / "moved"
    # The first verification moves release on, as a person pushing a hotfix would.
    verify = (
        f'if [ ! -e {flag} ]; then touch {flag}; r="$GADUGI_PROJECT_ROOT"; '
        'c=$(git -C "$r" commit-tree -p release -m hotfix "release^{tree}"); '
        'git -C "$r" update-ref refs/heads/release "$c"; fi'
    )
    done = land_cli(user_repo, "--into", "release", "--verify", verify, "--json")
    assert done.returncode == 0, done.stderr
    assert "release moved" in done.stderr
    result = json.loads(done.stdout)
    release = git(user_repo.root, "rev-parse", "release").strip()
    assert release == result["landing"]["head"]
    assert git(user_repo.root, "log", "--first-parent", "--format=%s", "release").splitlines()[
        :3
    ] == [
        "Land low: low",
        "Land high: high",
        "hotfix",
    ]
    orch_id = run["orchestration_id"]
    kept = git(user_repo.root, "for-each-ref", "--format=%(refname)", f"refs/gadugi/land/{orch_id}")
    assert f"refs/gadugi/land/{orch_id}/rebuilt.1" in kept.split()


def test_kill_9_mid_verification_then_land_again(user_repo: Repo, tmp_path: Path) -> None:
    two_tasks(user_repo)
    run = run_tasks(user_repo, "low", "high")
    branch = f"gadugi/land/{run['orchestration_id']}"
    gate = tmp_path / "gate"
    pids = tmp_path / "pids"
    verify = (
        f"echo $$ >> {pids}; touch {tmp_path}/started.$GADUGI_LAND_TASK_ID; "
        f"while [ ! -e {gate} ]; do sleep 0.05; done"
    )
    kill_9_once(start_land(user_repo, "--verify", verify), tmp_path / "started.high")
    stale = int(pids.read_text().split()[0])
    assert _alive(stale)  # the verification outlived its lander: the next one must stop it
    assert merges(user_repo, branch) == []
    # cleanup leaves the orchestration its lander left, and says how to finish it.
    told = run_cli(["cleanup"], user_repo.root)
    assert f"finish it with gadugi land {run['orchestration_id']}" in told.stdout + told.stderr

    gate.touch()
    done = land_cli(user_repo, "--verify", verify, "--json")

    assert done.returncode == 0, done.stderr
    assert not _alive(stale)
    assert [m.split("|")[0] for m in merges(user_repo, branch)] == [
        "Land high: high",
        "Land low: low",
    ]
    tasks = by_task(json.loads(done.stdout))
    assert tasks["high"]["landing"]["attempts"] == 1  # its kept candidate was verified again


@pytest.mark.parametrize(
    ("fault", "verify", "candidates"),
    [("after-advance", None, 1), ("after-advance", "true", 1), ("after-keep", "true", 2)],
)
def test_kill_9_between_git_and_the_registry_merges_once(
    user_repo: Repo, fault: str, verify: str | None, candidates: int
) -> None:
    two_tasks(user_repo)
    run = run_tasks(user_repo, "low", "high")
    branch = f"gadugi/land/{run['orchestration_id']}"
    flags = ["--verify", verify] if verify else []

    killed = land_cli(user_repo, *flags, env={"GADUGI_LAND_FAULT": fault})
    assert killed.returncode == -signal.SIGKILL
    # after-advance: the ref moved and the registry never heard; after-keep: a candidate
    # is kept that the registry never heard of
    assert len(merges(user_repo, branch)) == (fault == "after-advance")

    done = land_cli(user_repo, *flags, "--json")

    assert done.returncode == 0, done.stderr
    assert [m.split("|")[0] for m in merges(user_repo, branch)] == [
        "Land high: high",
        "Land low: low",
    ]
    tasks = by_task(json.loads(done.stdout))
    assert {t["landing"]["status"] for t in tasks.values()} == {"landed"}
    assert (
        tasks["high"]["landing"]["commit"]
        == git(user_repo.root, "rev-parse", f"{branch}~1").strip()
    )
    kept = git(user_repo.root, "for-each-ref", f"refs/gadugi/land/{run['orchestration_id']}/")
    # A candidate a crash left unrecorded stays reachable too, beside the one that landed.
    assert sum("/high." in line for line in kept.splitlines()) == candidates


def test_push_to_a_remote_and_open_pull_requests(user_repo: Repo, tmp_path: Path) -> None:
    remote = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", str(remote))
    git(user_repo.root, "remote", "add", "origin", str(remote))
    calls = tmp_path / "gh-calls.jsonl"
    env = gh_stand_in(tmp_path, calls)
    two_tasks(user_repo)
    run = run_tasks(user_repo, "low", "high")
    branch = f"gadugi/land/{run['orchestration_id']}"

    done = land_cli(user_repo, "--push", "origin", "--pr", env=env)

    assert done.returncode == 0, done.stderr
    pushed = git(remote, "for-each-ref", "--format=%(refname:short)").split()
    task_branches = [t["branch"] for t in run["tasks"]]
    assert sorted(pushed) == sorted([branch, *task_branches])
    assert git(remote, "rev-parse", branch) == git(user_repo.root, "rev-parse", branch)
    made = [json.loads(line) for line in calls.read_text().splitlines()]
    assert len(made) == 2
    for args in made:
        assert args[:2] == ["pr", "create"]
        opts = dict(zip(args[2::2], args[3::2], strict=True))
        assert opts["--base"] == branch and opts["--head"] in task_branches
        assert "Verification: none (merge only)" in opts["--body"]
        assert "1 file changed" in opts["--body"]


def test_one_pull_request_for_the_integration_branch(user_repo: Repo, tmp_path: Path) -> None:
    remote = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", str(remote))
    git(user_repo.root, "remote", "add", "origin", str(remote))
    calls = tmp_path / "gh-calls.jsonl"
    env = gh_stand_in(tmp_path, calls)
    two_tasks(user_repo)
    run = run_tasks(user_repo, "low", "high")

    done = land_cli(user_repo, "--push", "origin", "--pr=integration", env=env)

    assert done.returncode == 0, done.stderr
    [args] = [json.loads(line) for line in calls.read_text().splitlines()]
    opts = dict(zip(args[2::2], args[3::2], strict=True))
    assert opts["--head"] == f"gadugi/land/{run['orchestration_id']}"
    assert opts["--base"] == "main"
    assert "## low: low" in opts["--body"] and "## high: high" in opts["--body"]
    assert "pull request for" in done.stderr and "example.invalid/pr/1" in done.stderr


def gh_stand_in(tmp_path: Path, calls: Path) -> dict[str, str]:
    """A `gh` on PATH that records its arguments and answers with a pull request's URL."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    gh = bin_dir / "gh"
    gh.write_text(
        f"#!{sys.executable}\nimport json, sys\n"
        f"open({str(calls)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n"
        "print('https://example.invalid/pr/1')\n"
    )
    gh.chmod(0o755)
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}


def test_a_rejected_push_is_reported_never_forced(user_repo: Repo, tmp_path: Path) -> None:
    remote = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", str(remote))
    git(user_repo.root, "remote", "add", "origin", str(remote))
    two_tasks(user_repo)
    run = run_tasks(user_repo, "low", "high")
    branch = f"gadugi/land/{run['orchestration_id']}"
    # The remote already has another history under the integration branch's name.
    other = git(user_repo.root, "commit-tree", "-m", "theirs", "main^{tree}").strip()
    git(user_repo.root, "push", "-q", str(remote), f"{other}:refs/heads/{branch}")

    done = land_cli(user_repo, "--push", "origin")

    assert done.returncode == 1
    assert f"push of {branch} to origin was rejected" in done.stderr
    assert git(remote, "rev-parse", branch).strip() == other


def test_bad_requests_exit_2_and_change_nothing(user_repo: Repo) -> None:
    two_tasks(user_repo)
    run_tasks(user_repo, "low", "high")
    refs = git(user_repo.root, "for-each-ref")
    for args, says in [
        (["orch-nope"], "no orchestration"),
        (["--into", "nope"], "no such branch"),
        (["--into", "-x"], "not a branch name"),
        (["--push", "nowhere"], "no such remote"),
        (["--pr"], "--pr needs --push"),
    ]:
        done = land_cli(user_repo, *args)
        assert done.returncode == 2, (args, done.stderr)
        assert says in done.stderr, (args, done.stderr)
    assert git(user_repo.root, "for-each-ref") == refs


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.split(")")[-1].split()[0] != "Z"


def test_run_land_lands_each_task_while_others_still_run(user_repo: Repo, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    user_repo.shell_prompt("fast.md", writes("fast.txt", "fast"))
    user_repo.shell_prompt(
        "slow.md", f"while [ ! -e {gate} ]; do sleep 0.05; done\n" + writes("slow.txt", "slow")
    )
    user_repo.commit()
    with running(user_repo, "--land", "--into", "main", "fast", "slow") as run:

        def fast_landed() -> bool:
            assert run.poll() is None, run.communicate()
            refs = git(
                user_repo.root,
                "for-each-ref",
                "--format=%(refname:short)",
                "refs/heads/gadugi/land",
            )
            return bool(refs.strip()) and len(merges(user_repo, refs.split()[0])) == 1

        wait_until(fast_landed)
        status = json.loads(run_cli(["status", "--json"], user_repo.root).stdout)
        assert {t["task_id"]: t["status"] for t in status["tasks"]}["slow"] == "running"
        # The run owns its landing: a second lander is refused, and changes nothing.
        refused = land_cli(user_repo)
        assert refused.returncode == 2 and "is owned by" in refused.stderr
        gate.touch()
        result = result_of(run)
    assert result["landing"]["landed"] == 2 and result["landing"]["into"] == "main"
    assert {t["landing"]["status"] for t in result["tasks"]} == {"landed"}
    assert git(user_repo.root, "rev-parse", "main").strip() == result["landing"]["head"]
    assert (user_repo.root / "slow.txt").read_text() == "slow\n"
    subjects = [m.split("|")[0] for m in merges(user_repo, result["landing"]["branch"], "HEAD~2")]
    assert subjects == ["Land fast: fast", "Land slow: slow"]


def test_cleanup_removes_candidates_and_keeps_an_unmerged_integration_branch(
    user_repo: Repo,
) -> None:
    two_tasks(user_repo)
    run = run_tasks(user_repo, "low", "high")
    orch_id = run["orchestration_id"]
    branch = f"gadugi/land/{orch_id}"
    assert land_cli(user_repo, "--verify", "true").returncode == 0
    assert not list((user_repo.root / ".worktrees").glob("land-*"))  # gone once landed
    head = git(user_repo.root, "rev-parse", branch)

    done = run_cli(["cleanup"], user_repo.root)

    assert done.returncode == 0, done.stderr
    assert git(user_repo.root, "for-each-ref", f"refs/gadugi/land/{orch_id}") == ""
    assert user_repo.branches() == [branch]  # the tasks' commits live on in it
    assert git(user_repo.root, "rev-parse", branch) == head
    assert f"{branch}: " in done.stdout and "--force" in done.stdout

    assert land_cli(user_repo, orch_id, "--into", "main").returncode == 0
    again = run_cli(["cleanup"], user_repo.root)
    assert again.returncode == 0, again.stderr
    assert user_repo.branches() == []  # merged into main: nothing is lost without it
    assert (user_repo.root / "high.txt").exists()


def test_doctor_says_land_needs_git_2_38(repo: Repo, tmp_path: Path) -> None:
    real = shutil.which("git")
    assert real
    wrapper = tmp_path / "oldgit" / "git"
    wrapper.parent.mkdir()
    wrapper.write_text(
        f'#!/bin/sh\n[ "$1" = "--version" ] && {{ echo "git version 2.37.1"; exit 0; }}\n'
        f'exec {real} "$@"\n'
    )
    wrapper.chmod(0o755)
    checks = {}
    for path in (os.environ["PATH"], f"{wrapper.parent}:{os.environ['PATH']}"):
        done = run_cli(["doctor", "--json"], repo.root, env={"PATH": path})
        checks[path] = {c["name"]: c for c in json.loads(done.stdout)["checks"]}
    now, old = checks.values()
    assert "git for land" not in now  # this machine's git is new enough
    assert old["git"]["status"] == "ok"
    assert old["git for land"]["status"] == "warn"
    assert "need 2.38 or newer" in old["git for land"]["detail"]


def with_reruns(repo: Repo, retries: int = 1) -> None:
    (repo.root / "gadugi.toml").write_text(f"max_load_per_cpu = 0\nland_retries = {retries}\n")


# Writes its side of shared.txt; asked again with the integration branch merged in and
# conflicting (a merge under way), it resolves the conflict as an agent would.
RESOLVER = (
    "if git rev-parse -q --verify MERGE_HEAD >/dev/null; then\n"
    "  printf 'one\\ntwo\\n' > shared.txt; git add shared.txt; git commit -q --no-edit\n"
    "else\n" + writes("shared.txt", "two") + "\nfi"
)


def test_a_conflicting_task_is_re_run_on_the_integration_head_and_lands(
    user_repo: Repo,
) -> None:
    with_reruns(user_repo)
    user_repo.shell_prompt("one.md", writes("shared.txt", "one"))
    user_repo.shell_prompt("two.md", RESOLVER)
    run = run_tasks(user_repo, "one", "two")
    branch = f"gadugi/land/{run['orchestration_id']}"

    done = land_cli(user_repo, "--json")

    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    tasks = by_task(result)
    assert {t["landing"]["status"] for t in tasks.values()} == {"landed"}
    assert tasks["two"]["attempts"] == 2  # the re-run continued the task
    assert git(user_repo.root, "show", f"{branch}:shared.txt") == "one\ntwo\n"
    # The re-run went on from the integration head: merged into the task branch.
    tip = git(user_repo.root, "log", "-1", "--format=%an|%P", tasks["two"]["branch"]).strip()
    assert tip.startswith("Ada Lovelace|") and len(tip.split("|")[1].split()) == 2
    assert [m.split("|")[0] for m in merges(user_repo, branch)] == [
        "Land one: one",
        "Land two: two",
    ]


def test_a_re_run_that_leaves_the_conflict_ends_with_a_person(user_repo: Repo) -> None:
    with_reruns(user_repo)
    user_repo.shell_prompt("one.md", writes("shared.txt", "one"))
    gives_up = (
        "if ! git rev-parse -q --verify MERGE_HEAD; then\n" + writes("shared.txt", "two") + "\nfi"
    )
    user_repo.shell_prompt("two.md", gives_up)
    run = run_tasks(user_repo, "one", "two")
    branch = f"gadugi/land/{run['orchestration_id']}"

    done = land_cli(user_repo, "--json")

    assert done.returncode == 1
    two = by_task(json.loads(done.stdout))["two"]
    assert two["landing"]["status"] == "needs_person"
    assert "re-run ended failed" in two["landing"]["note"]
    assert "conflicts left unresolved in shared.txt" in two["landing"]["note"]
    # Conflict markers were never committed, and nothing of two reached the branch.
    assert "<<<<<<<" not in git(user_repo.root, "show", f"{two['branch']}:shared.txt")
    assert git(user_repo.root, "show", f"{branch}:shared.txt") == "one\n"


def test_a_red_verification_is_re_run_with_its_output_then_lands(user_repo: Repo) -> None:
    with_reruns(user_repo)
    user_repo.shell_prompt("good.md", writes("good.txt", "good"))
    fixer = (
        "if [ -e bad.txt ]; then\n  git rm -q bad.txt\n"
        + writes("fixed.txt", "fixed")
        + "\nelse\n"
        + writes("bad.txt", "bad")
        + "\nfi"
    )
    user_repo.shell_prompt("bad.md", fixer)
    run = run_tasks(user_repo, "good", "bad")
    branch = f"gadugi/land/{run['orchestration_id']}"

    done = land_cli(user_repo, "--json", "--verify", "echo checking; test ! -e bad.txt")

    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    bad = by_task(result)["bad"]
    assert bad["landing"]["status"] == "landed" and bad["landing"]["attempts"] == 2
    assert result["landing"]["verified"] is True
    files = git(user_repo.root, "ls-tree", "--name-only", branch).split()
    assert "fixed.txt" in files and "bad.txt" not in files
    prompt = user_repo.root / ".gadugi/prompts" / run["orchestration_id"] / "bad.md"
    assert "test ! -e bad.txt" in prompt.read_text()  # the agent was told what failed


def test_land_without_a_git_identity_exits_2_and_changes_nothing(user_repo: Repo) -> None:
    two_tasks(user_repo)
    run_tasks(user_repo, "low", "high")
    for key in ("user.name", "user.email"):
        git(user_repo.root, "config", "--unset", key)
    git(user_repo.root, "config", "user.useConfigOnly", "true")
    refs = git(user_repo.root, "for-each-ref")
    home = user_repo.root.parent / "home"
    home.mkdir()

    done = land_cli(user_repo, env={"HOME": str(home), "GIT_CONFIG_NOSYSTEM": "1"})

    assert done.returncode == 2
    assert "git has no identity to commit with" in done.stderr
    assert git(user_repo.root, "for-each-ref") == refs


def test_land_detached_then_wait(user_repo: Repo, tmp_path: Path) -> None:
    two_tasks(user_repo)
    run = run_tasks(user_repo, "low", "high")
    gate = tmp_path / "gate"
    started = land_cli(
        user_repo, "--detach", "--verify", f"while [ ! -e {gate} ]; do sleep 0.05; done"
    )
    assert started.returncode == 0, started.stderr
    assert started.stdout.strip() == run["orchestration_id"]
    waiting = run_cli(["wait", "--timeout", "0.2"], user_repo.root)
    assert waiting.returncode == 124  # still landing: held at the first verification
    gate.touch()
    waited = run_cli(["wait", "--json", "--timeout", "120"], user_repo.root)
    assert waited.returncode == 0, waited.stderr
    assert json.loads(waited.stdout)["landing"]["landed"] == 2


def test_kill_9_of_run_land_mid_verification_then_resume(user_repo: Repo, tmp_path: Path) -> None:
    two_tasks(user_repo)
    gate = tmp_path / "gate"
    # The tasks' own verification passes at once; the landing's waits on the gate.
    verify = (
        f'[ -z "$GADUGI_LAND_COMMIT" ] || {{ touch {tmp_path}/started; '
        f"while [ ! -e {gate} ]; do sleep 0.05; done; }}"
    )
    (user_repo.root / "gadugi.toml").write_text(
        f"max_load_per_cpu = 0\nland_retries = 0\nverify_command = '{verify}'\n"
    )
    user_repo.commit()
    run = subprocess.Popen(
        [*RUN, "--quiet", "--land", "low", "high"],
        cwd=user_repo.root,
        env=USER_ENV,
        stdin=subprocess.DEVNULL,
    )
    kill_9_once(run, tmp_path / "started")
    orch_id = json.loads(run_cli(["status", "--json"], user_repo.root).stdout)["orchestration_id"]
    branch = f"gadugi/land/{orch_id}"
    # The first to land merged onto the base: its tree is the one its own verification
    # passed, so it landed at once. The second's merge is a new tree, verified when killed.
    before = merges(user_repo, branch)
    assert len(before) == 1
    gate.touch()

    resumed = subprocess.run(
        [sys.executable, "-m", "gadugi", "resume", "--json", orch_id],
        cwd=user_repo.root,
        env=USER_ENV,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert resumed.returncode == 0, resumed.stderr
    result = json.loads(resumed.stdout)
    assert result["landing"]["landed"] == 2 and result["landing"]["verified"] is True
    after = merges(user_repo, branch)
    assert after[0] == before[0] and len(after) == 2
    assert sorted(m.split("|")[0] for m in after) == ["Land high: high", "Land low: low"]


def test_a_step_git_refuses_ends_the_landing_not_the_loop(user_repo: Repo, tmp_path: Path) -> None:
    two_tasks(user_repo)
    run = run_tasks(user_repo, "low", "high")
    branch = f"gadugi/land/{run['orchestration_id']}"
    gate = tmp_path / "gate"
    verify = f"touch {tmp_path}/started; while [ ! -e {gate} ]; do sleep 0.05; done"
    lander = start_land(user_repo, "--json", "--verify", verify)
    try:
        wait_until(lambda: (tmp_path / "started").exists() or lander.poll() is not None)
        git(user_repo.root, "update-ref", "-d", f"refs/heads/{branch}")  # deleted under it
        gate.touch()
        out, err = lander.communicate(timeout=120)
    finally:
        if lander.poll() is None:
            lander.kill()
            lander.communicate()
    assert lander.returncode == 1
    assert f"landing stopped: {branch} was deleted while landing" in err
    result = json.loads(out)
    assert result["error_summary"] == [
        f"landing: landing stopped: {branch} was deleted while landing; run gadugi land again"
    ]
    assert {t["status"] for t in result["tasks"]} == {"completed"}


@pytest.mark.parametrize("same_command", [True, False])
def test_a_candidate_its_task_verified_as_it_is_is_not_verified_again(
    user_repo: Repo, same_command: bool
) -> None:
    user_repo.shell_prompt("first.md", writes("first.txt", "1"))
    user_repo.shell_prompt("child.md", writes("child.txt", "2"), front="depends_on: [first.md]")
    user_repo.shell_prompt("other.md", writes("other.txt", "3"))
    user_repo.commit()
    check = "test -s first.txt || test -s other.txt"
    done = run_cli(
        [
            "run",
            "--agent",
            "shell",
            "--quiet",
            "--json",
            "--verify",
            check,
            "first",
            "child",
            "other",
        ],
        user_repo.root,
    )
    assert done.returncode == 0, done.stderr
    orch_id = json.loads(done.stdout)["orchestration_id"]

    landed = land_cli(user_repo, "--json", "--verify", check if same_command else f"{check}; true")

    assert landed.returncode == 0, landed.stderr
    result = json.loads(landed.stdout)
    assert result["landing"]["landed"] == 3 and result["landing"]["verified"] is True
    logs = sorted((user_repo.root / ".gadugi/logs" / orch_id).glob("land.*.verify.log"))
    # first merges onto the base, and child onto first's landing: each candidate's tree is
    # the one its task's own verification passed. other's merge makes a tree never verified.
    assert len(logs) == (1 if same_command else 3)


def test_optimistic_lands_the_longer_of_a_conflicting_pair_first_and_re_runs_the_shorter(
    user_repo: Repo, tmp_path: Path
) -> None:
    # Predicted to conflict (both declare shared.txt) and run together: the short one is
    # done first, but landing it would make the long one's agent redo its work on top.
    # It waits for its partner instead, and is the one re-run.
    with_reruns(user_repo)
    gate = tmp_path / "gate"
    front = "touches: [shared.txt]"
    user_repo.shell_prompt(
        "long.md",
        f"while [ ! -e {gate} ]; do sleep 0.05; done\n" + writes("shared.txt", "long"),
        front=front,
    )
    short = (
        "if git rev-parse -q --verify MERGE_HEAD >/dev/null; then\n"
        "  printf 'long\\nshort\\n' > shared.txt; git add shared.txt; git commit -q --no-edit\n"
        "else\n" + writes("shared.txt", "short") + "\nfi"
    )
    user_repo.shell_prompt("short.md", short, front=front)
    user_repo.commit()
    with running(user_repo, "--land", "--conflict-policy", "optimistic", "short", "long") as run:

        def short_done() -> bool:
            assert run.poll() is None, run.communicate()
            shown = run_cli(["status", "--json"], user_repo.root)
            if shown.returncode != 0:
                return False  # not registered yet
            status = json.loads(shown.stdout)
            short = {t["task_id"]: t for t in status["tasks"]}.get("short") or {}
            landing = short.get("landing") or {}
            assert landing.get("status") in (None, "pending"), landing  # never landed first
            return bool(landing.get("note"))

        wait_until(short_done)
        status = json.loads(run_cli(["status", "--json"], user_repo.root).stdout)
        held = {t["task_id"]: t for t in status["tasks"]}["short"]
        assert held["status"] == "completed" and held["landing"]["status"] == "pending"
        assert "lands after long" in held["landing"]["note"]  # says what it waits for
        gate.touch()
        result = result_of(run)
    tasks = by_task(result)
    assert tasks["long"]["attempts"] == 1 and tasks["short"]["attempts"] == 2
    branch = result["landing"]["branch"]
    assert [m.split("|")[0] for m in merges(user_repo, branch)] == [
        "Land long: long",
        "Land short: short",
    ]
    assert git(user_repo.root, "show", f"{branch}:shared.txt") == "long\nshort\n"


def test_a_task_that_needs_a_person_at_landing_is_notified(user_repo: Repo, tmp_path: Path) -> None:
    seen = tmp_path / "events.jsonl"
    script = tmp_path / "notify.sh"
    script.write_text(f'#!/bin/sh\n{{ cat; echo; }} >> "{seen}"\n')
    script.chmod(0o755)
    (user_repo.root / "gadugi.toml").write_text(
        f'max_load_per_cpu = 0\nland_retries = 0\n[notify]\ncommand = "{script}"\n'
    )
    conflicting_pair(user_repo)
    user_repo.commit()

    done = run_cli(["run", "--agent", "shell", "--quiet", "--land", "one", "two"], user_repo.root)

    assert done.returncode == 1, done.stderr
    events = [json.loads(line) for line in seen.read_text().splitlines() if line.strip()]
    person = [e for e in events if e["event"] == "needs_person"]
    assert len(person) == 1, events
    assert person[0]["reason"] == "landing" and person[0]["task_id"] in ("one", "two")
    assert "git merge gadugi/land/" in person[0]["message"]  # the commands to finish it


def test_a_tree_verified_with_untracked_files_beside_it_is_verified_again(
    user_repo: Repo,
) -> None:
    # autocommit off: the agent commits one file and leaves another untracked, which its
    # verification (in its worktree) relies on. The branch's tree never held that file, so
    # landing it must be verified on its own, and is red.
    (user_repo.root / "gadugi.toml").write_text(
        "max_load_per_cpu = 0\nland_retries = 0\nautocommit = false\n"
    )
    user_repo.shell_prompt("half.md", writes("kept.txt", "kept") + "\necho left > left.txt")
    user_repo.commit()
    check = "test -s left.txt"
    done = run_cli(
        ["run", "--agent", "shell", "--quiet", "--json", "--verify", check, "half"], user_repo.root
    )
    assert done.returncode == 0, done.stderr
    assert by_task(json.loads(done.stdout))["half"]["verification"]["passed"] is True

    landed = land_cli(user_repo, "--json", "--verify", check)

    assert landed.returncode == 1, landed.stderr
    half = by_task(json.loads(landed.stdout))["half"]
    assert half["landing"]["status"] == "needs_person"
